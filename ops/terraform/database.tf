# PostgreSQL: the gateway's audit log and the sidecar's clients, consents, refresh
# tokens and signing keys. Created here unless create_database = false, in which case
# var.database_url names an existing one.

locals {
  create_db = var.create_database
  db_name   = "mcp"
  db_user   = "mcp"
  database_url = local.create_db ? format(
    "postgres://%s:%s@%s:%d/%s?sslmode=require",
    local.db_user,
    random_password.db[0].result,
    aws_db_instance.main[0].address,
    aws_db_instance.main[0].port,
    local.db_name,
  ) : var.database_url
}

resource "random_password" "db" {
  count   = local.create_db ? 1 : 0
  length  = 40
  special = true
  # URL-safe: the password sits inside postgres://user:PASSWORD@host.
  override_special = "-_"
}

resource "aws_db_subnet_group" "main" {
  count       = local.create_db ? 1 : 0
  name        = "${var.name}-db"
  description = "${var.name}: private subnets of the database"
  subnet_ids  = var.private_subnet_ids
}

resource "aws_db_parameter_group" "main" {
  count       = local.create_db ? 1 : 0
  name        = "${var.name}-pg${var.db_engine_version}"
  family      = "postgres${var.db_engine_version}"
  description = "${var.name}: TLS only, slow and DDL statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  count = local.create_db ? 1 : 0

  identifier     = "${var.name}-db"
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  db_name        = local.db_name
  username       = local.db_user
  password       = random_password.db[0].result
  port           = 5432

  allocated_storage     = var.db_allocated_storage_gb
  max_allocated_storage = var.db_allocated_storage_gb * 4
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.main.arn

  db_subnet_group_name   = aws_db_subnet_group.main[0].name
  vpc_security_group_ids = [aws_security_group.db[0].id]
  parameter_group_name   = aws_db_parameter_group.main[0].name
  publicly_accessible    = false
  multi_az               = var.db_multi_az

  # Login stays password-based (the URL in Secrets Manager); IAM authentication is on
  # so that people can be given psql access by IAM role without that password.
  iam_database_authentication_enabled = true

  backup_retention_period    = var.db_backup_retention_days
  copy_tags_to_snapshot      = true
  deletion_protection        = var.db_deletion_protection
  skip_final_snapshot        = false
  final_snapshot_identifier  = "${var.name}-db-final"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.main.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring[0].arn
}

resource "aws_iam_role" "rds_monitoring" {
  count              = local.create_db ? 1 : 0
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  count      = local.create_db ? 1 : 0
  role       = aws_iam_role.rds_monitoring[0].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
