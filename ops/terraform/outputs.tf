output "mcp_url" {
  description = "The URL to paste into MCP clients (Claude Code, VS Code, Claude Desktop/Web, mcp-remote)."
  value       = local.mcp_url
}

output "issuer_url" {
  description = "The OAuth authorization server (the sidecar), same origin."
  value       = local.public_url
}

output "google_oauth_redirect_uri" {
  description = "Authorized redirect URI to register on the Google OAuth client."
  value       = "${local.public_url}/callback"
}

output "task_role_arn" {
  description = "Role the tasks run as: the identity Google's Workload Identity provider must trust."
  value       = aws_iam_role.task.arn
}

output "gateway_repository_url" {
  description = "ECR repository of the gateway image."
  value       = aws_ecr_repository.gateway.repository_url
}

output "sidecar_repository_url" {
  description = "ECR repository of the sidecar image."
  value       = aws_ecr_repository.sidecar.repository_url
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer (the Route 53 alias target)."
  value       = aws_lb.main.dns_name
}

output "cluster_name" {
  description = "ECS cluster."
  value       = aws_ecs_cluster.main.name
}

output "service_name" {
  description = "ECS service."
  value       = aws_ecs_service.main.name
}

output "log_groups" {
  description = "CloudWatch log groups of the two containers."
  value       = [aws_cloudwatch_log_group.gateway.name, aws_cloudwatch_log_group.sidecar.name]
}

output "database_secret_name" {
  description = "Secrets Manager secret holding the PostgreSQL URL."
  value       = aws_secretsmanager_secret.database.name
}
