# Security groups: internet → ALB (443) → tasks (8080 gateway, 8090 sidecar) → database
# (5432). The metrics listener (9090) is open only to var.metrics_allowed_cidrs.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "${var.name}: load balancer"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from MCP clients"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "alb_to_gateway" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateway containers"
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_security_group_egress_rule" "alb_to_sidecar" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the sidecar containers"
  ip_protocol                  = "tcp"
  from_port                    = local.sidecar_port
  to_port                      = local.sidecar_port
  referenced_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "${var.name}: gateway and sidecar tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "tasks_gateway" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Gateway from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.gateway_port
  to_port                      = local.gateway_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "tasks_sidecar" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "Sidecar from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = local.sidecar_port
  to_port                      = local.sidecar_port
  referenced_security_group_id = aws_security_group.alb.id
}

resource "aws_vpc_security_group_ingress_rule" "tasks_metrics" {
  for_each          = toset(var.metrics_allowed_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "Prometheus scrape of the gateway's admin listener"
  ip_protocol       = "tcp"
  from_port         = local.metrics_port
  to_port           = local.metrics_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "tasks_out" {
  for_each          = { for i, r in flatten([for r in var.egress_rules : [for c in r.cidr_blocks : merge(r, { cidr = c })]]) : "${r.port}-${r.cidr}" => r }
  security_group_id = aws_security_group.tasks.id
  description       = each.value.description
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_egress_rule" "tasks_db" {
  count                        = local.create_db ? 1 : 0
  security_group_id            = aws_security_group.tasks.id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.db[0].id
}

resource "aws_security_group" "db" {
  count       = local.create_db ? 1 : 0
  name        = "${var.name}-db"
  description = "${var.name}: PostgreSQL"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  count                        = local.create_db ? 1 : 0
  security_group_id            = aws_security_group.db[0].id
  description                  = "PostgreSQL from the tasks"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.tasks.id
}
