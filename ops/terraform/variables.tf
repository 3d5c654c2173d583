# --- identity ---------------------------------------------------------------------------

variable "name" {
  description = "Name of this stack; prefixes every resource (e.g. mcp-gateway-prod). The ECS task role is \"<name>-task\": the Google Workload Identity provider trusts it by that name."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,27}$", var.name))
    error_message = "name: 3-28 of a-z 0-9 -, starting with a letter."
  }
}

variable "environment" {
  description = "development or production (tags, defaults of the tfvars files)."
  type        = string
  validation {
    condition     = contains(["development", "production"], var.environment)
    error_message = "environment must be development or production."
  }
}

variable "aws_region" {
  description = "AWS region of the stack (and of its Secrets Manager secrets)."
  type        = string
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# --- existing network, DNS, certificate ----------------------------------------------------

variable "vpc_id" {
  description = "Existing VPC."
  type        = string
}

variable "public_subnet_ids" {
  description = "Existing public subnets (two or more AZs) for the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Existing private subnets (two or more AZs, with NAT egress) for the tasks and the database."
  type        = list(string)
}

variable "domain_name" {
  description = "Public host name of the gateway, e.g. mcp.example.com. Clients use https://<domain_name>/mcp."
  type        = string
}

variable "route53_zone_id" {
  description = "Existing Route 53 hosted zone that holds domain_name."
  type        = string
}

variable "certificate_arn" {
  description = "Existing ACM certificate (same region) covering domain_name."
  type        = string
}

variable "alb_access_logs_bucket" {
  description = "Existing S3 bucket for the load balancer's access logs (bucket policy must allow ELB log delivery)."
  type        = string
}

variable "allowed_cidrs" {
  description = "Who may reach the load balancer on 443. Claude (web/desktop connectors) connects from Anthropic's cloud: keep 0.0.0.0/0 or add its published ranges."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "metrics_allowed_cidrs" {
  description = "Who may scrape the gateway's Prometheus listener (:9090) directly, e.g. the VPC CIDR of your Prometheus. Empty: nobody."
  type        = list(string)
  default     = []
}

variable "egress_rules" {
  description = "Outbound TCP from the tasks besides PostgreSQL: Google, AWS APIs, backends."
  type = list(object({
    port        = number
    cidr_blocks = list(string)
    description = string
  }))
  default = [
    { port = 443, cidr_blocks = ["0.0.0.0/0"], description = "HTTPS: Google sign-in and Directory API, AWS APIs, hosted MCP backends" },
  ]
}

# --- images and sizing ----------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of both images in ECR (ops/scripts/build-and-push.sh prints it)."
  type        = string
}

variable "gateway_repository_name" {
  description = "ECR repository of the gateway image (build-and-push.sh --gateway-repo)."
  type        = string
  default     = "mcp-gateway"
}

variable "sidecar_repository_name" {
  description = "ECR repository of the sidecar image (build-and-push.sh --sidecar-repo)."
  type        = string
  default     = "mcp-oauth-sidecar"
}

variable "config_env" {
  description = "CONFIG_ENV of both containers: which ops/config/*.toml they read."
  type        = string
  default     = "production"
}

variable "task_cpu" {
  description = "Fargate task CPU units (gateway + sidecar)."
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Fargate task memory (MiB)."
  type        = number
  default     = 2048
}

variable "sidecar_cpu" {
  description = "CPU units reserved for the sidecar inside the task."
  type        = number
  default     = 256
}

variable "sidecar_memory" {
  description = "Memory (MiB) reserved for the sidecar inside the task."
  type        = number
  default     = 512
}

variable "desired_count" {
  description = "Tasks at creation; autoscaling moves it between min_capacity and max_capacity."
  type        = number
  default     = 2
}

variable "min_capacity" {
  description = "Fewest tasks."
  type        = number
  default     = 2
}

variable "max_capacity" {
  description = "Most tasks."
  type        = number
  default     = 10
}

variable "cpu_target_percent" {
  description = "Autoscaling: target average CPU of the service."
  type        = number
  default     = 60
}

variable "requests_per_target" {
  description = "Autoscaling: target ALB requests per task per minute (gateway target group)."
  type        = number
  default     = 6000
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 365
}

variable "alb_idle_timeout_s" {
  description = "ALB idle timeout; above the gateway's stream_idle_timeout_ms (300 s) so that long SSE replies are not cut."
  type        = number
  default     = 900
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = true
}

variable "enable_waf" {
  description = "Put an AWS WAF web ACL (AWS managed common + known-bad-inputs rules, per-IP rate limit) in front of the ALB."
  type        = bool
  default     = true
}

variable "waf_rate_limit" {
  description = "WAF: most requests per source IP per 5 minutes."
  type        = number
  default     = 20000
}

# --- database -------------------------------------------------------------------------------

variable "create_database" {
  description = "Create an RDS PostgreSQL instance. false: use database_url."
  type        = bool
  default     = true
}

variable "database_url" {
  description = "With create_database = false: the existing PostgreSQL URL (postgres://user:pass@host:5432/db?sslmode=require). Add its port to egress_rules."
  type        = string
  default     = null
  sensitive   = true
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.small"
}

variable "db_engine_version" {
  description = "RDS PostgreSQL major version."
  type        = string
  default     = "16"
}

variable "db_allocated_storage_gb" {
  description = "RDS storage (GiB); grows automatically up to 4x."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
  default     = true
}

variable "db_deletion_protection" {
  description = "Protect the RDS instance from deletion."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "RDS automated backup retention."
  type        = number
  default     = 14
}

# --- secrets ---------------------------------------------------------------------------------

variable "backend_secret_names" {
  description = "Secrets Manager names of backend credentials the gateway may read (created beforehand), e.g. [\"mcp-gateway/grafana\"]."
  type        = list(string)
  default     = []
}

variable "collector_image" {
  description = "The AWS Distro for OpenTelemetry collector image run in every task (scrapes both binaries' metrics into CloudWatch, relays traces to X-Ray). Pin a version."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "trace_sample_ratio" {
  description = "Share of new traces the gateway and the sidecar export to X-Ray through the collector (0 turns tracing off)."
  type        = number
  default     = 0.01
  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio is between 0 and 1."
  }
}

variable "alarm_sns_topic_arn" {
  description = "SNS topic notified when an alarm fires or clears (empty: alarms only show in CloudWatch)."
  type        = string
  default     = ""
}
