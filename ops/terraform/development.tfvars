# Development stack: its own AWS account (or region), small and cheap, easy to delete.
#   terraform init -backend-config=… && terraform apply -var-file=development.tfvars -var image_tag=TAG
name        = "mcp-gateway-dev"
environment = "development"
aws_region  = "eu-west-1"

vpc_id             = "vpc-0123456789abcdef0"
public_subnet_ids  = ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]
private_subnet_ids = ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"]

domain_name            = "mcp.dev.example.com"
route53_zone_id        = "Z0123456789DEVZONE"
certificate_arn        = "arn:aws:acm:eu-west-1:111111111111:certificate/00000000-0000-0000-0000-000000000000"
alb_access_logs_bucket = "example-dev-alb-logs"

task_cpu      = 512
task_memory   = 1024
sidecar_cpu   = 128
desired_count = 1
min_capacity  = 1
max_capacity  = 2

log_retention_days      = 365
alb_deletion_protection = false

db_instance_class        = "db.t4g.micro"
db_allocated_storage_gb  = 20
db_multi_az              = false
db_deletion_protection   = false
db_backup_retention_days = 7

backend_secret_names = []
