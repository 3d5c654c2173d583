# Production stack: its own AWS account (or region).
#   terraform init -backend-config=… && terraform apply -var-file=production.tfvars -var image_tag=TAG
name        = "mcp-gateway-prod"
environment = "production"
aws_region  = "eu-west-1"

vpc_id             = "vpc-0fedcba9876543210"
public_subnet_ids  = ["subnet-0ccccccccccccccc1", "subnet-0ccccccccccccccc2", "subnet-0ccccccccccccccc3"]
private_subnet_ids = ["subnet-0ddddddddddddddd1", "subnet-0ddddddddddddddd2", "subnet-0ddddddddddddddd3"]

domain_name            = "mcp.example.com"
route53_zone_id        = "Z0123456789PRODZN"
certificate_arn        = "arn:aws:acm:eu-west-1:222222222222:certificate/00000000-0000-0000-0000-000000000000"
alb_access_logs_bucket = "example-prod-alb-logs"

task_cpu            = 1024
task_memory         = 2048
desired_count       = 2
min_capacity        = 2
max_capacity        = 10
cpu_target_percent  = 60
requests_per_target = 6000

log_retention_days      = 365
alb_deletion_protection = true

db_instance_class        = "db.m7g.large"
db_allocated_storage_gb  = 100
db_multi_az              = true
db_deletion_protection   = true
db_backup_retention_days = 30

# Add a name here when you enable a catalog backend in ops/config/production.toml.
backend_secret_names = [
  # "mcp-gateway/grafana",
  # "mcp-gateway/posthog",
  # "mcp-gateway/openmetadata",
]
