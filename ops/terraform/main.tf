# MCP gateway on AWS: one ECS Fargate service whose tasks run two containers, the
# gateway (Pingora, /mcp) and the OAuth sidecar (/authorize, /token, …), behind an
# HTTPS load balancer that routes by path; PostgreSQL for audit and OAuth state;
# Secrets Manager for every credential. Replicas share nothing but the database.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  public_url = "https://${var.domain_name}"
  mcp_url    = "${local.public_url}/mcp"

  # Secret names are fixed (ops/config/production.toml and sidecar.production.toml
  # reference them): keep one environment per AWS account or region.
  secret_prefix = "mcp-gateway"
  # Created by the operator before `terraform apply` (values never pass through
  # Terraform); see docs/deploy-aws.md.
  operator_secrets = {
    session_key              = "${local.secret_prefix}/session-key"
    signing_key              = "${local.secret_prefix}/signing-key"
    google_oauth             = "${local.secret_prefix}/google-oauth"
    google_workload_identity = "${local.secret_prefix}/google-workload-identity"
  }
  database_secret_name = "${local.secret_prefix}/database"

  gateway_port = 8080
  metrics_port = 9090
  sidecar_port = 8090

  # Paths the ALB sends to the sidecar; everything else goes to the gateway (including
  # the gateway's own /.well-known/oauth-protected-resource*).
  sidecar_paths = [
    "/.well-known/oauth-authorization-server*",
    "/.well-known/openid-configuration",
    "/register",
    "/authorize",
    "/consent",
    "/callback",
    "/token",
    "/jwks",
    "/revoke",
  ]
}

# One customer-managed key for the stack: logs, the database secret, ECR, RDS.
resource "aws_kms_key" "main" {
  description             = "${var.name}: logs, secrets, images, database"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:This is the key policy of aws_kms_key.main, not an identity policy: its Resource "*" means this key only, and the account-root statement is AWS's default delegation to IAM.
  #checkov:skip=CKV_AWS_356:Key policy: Resource "*" refers to the key the policy is attached to, nothing else.
  #checkov:skip=CKV_AWS_109:Key policy: the account-root statement is AWS's default key policy that lets IAM policies govern the key; without it the key becomes unmanageable.
  # Key administration and IAM-delegated use stay with the account.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  # CloudWatch Logs encrypts this stack's log groups with it.
  statement {
    sid = "CloudWatchLogs"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.aws_region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.aws_region}:${local.account_id}:log-group:*"]
    }
  }
}
