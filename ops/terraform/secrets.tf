# Secrets. The operator creates these before `terraform apply` (their values never
# pass through Terraform or its state); Terraform only looks them up, so a missing one
# fails the plan with its name.
data "aws_secretsmanager_secret" "operator" {
  for_each = local.operator_secrets
  name     = each.value
}

data "aws_secretsmanager_secret" "backend" {
  for_each = toset(var.backend_secret_names)
  name     = each.value
}

# The database URL is Terraform's to write: it knows the RDS endpoint and generated
# password (or was given an existing URL).
resource "aws_secretsmanager_secret" "database" {
  #checkov:skip=CKV2_AWS_57:The URL embeds the RDS master password that Terraform generates; rotating it means re-applying (random_password keepers), not a rotation Lambda that would desynchronise the URL.
  name                    = local.database_secret_name
  description             = "${var.name}: PostgreSQL URL for gateway audit and sidecar state, JSON {\"url\": …}"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database" {
  secret_id = aws_secretsmanager_secret.database.id
  secret_string = jsonencode({
    url = local.database_url
  })

  lifecycle {
    precondition {
      condition     = var.create_database || var.database_url != null
      error_message = "create_database = false needs database_url."
    }
  }
}

locals {
  # Every secret a task may read: exactly these ARNs.
  readable_secret_arns = concat(
    [for s in data.aws_secretsmanager_secret.operator : s.arn],
    [for s in data.aws_secretsmanager_secret.backend : s.arn],
    [aws_secretsmanager_secret.database.arn],
  )
  # KMS keys those secrets are encrypted with: this stack's key, plus any customer key
  # the operator chose for theirs (an empty kms_key_id means the AWS-managed
  # aws/secretsmanager key, which needs no grant).
  operator_kms_ids = compact(concat(
    [for s in data.aws_secretsmanager_secret.operator : s.kms_key_id],
    [for s in data.aws_secretsmanager_secret.backend : s.kms_key_id],
  ))
  secret_kms_key_arns = distinct(concat(
    [aws_kms_key.main.arn],
    [for k in local.operator_kms_ids :
      startswith(k, "arn:") ? k : "arn:${local.partition}:kms:${var.aws_region}:${local.account_id}:key/${k}"
    ],
  ))
}
