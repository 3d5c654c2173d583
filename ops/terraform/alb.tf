# HTTPS load balancer: TLS ends here with the existing ACM certificate; the sidecar's
# OAuth paths go to the sidecar, everything else (/mcp, /healthz, /readyz,
# /.well-known/oauth-protected-resource*, /backends/*) to the gateway.

resource "aws_lb" "main" {
  #checkov:skip=CKV2_AWS_76:The check also demands AWSManagedRulesAnonymousIpList, whose HostingProviderIPList and VPN lists would block Claude's web connectors (they connect from Anthropic's cloud) and people on VPNs; Log4j is covered by AWSManagedRulesKnownBadInputsRuleSet in waf.tf.
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.public_subnet_ids
  idle_timeout               = var.alb_idle_timeout_s
  drop_invalid_header_fields = true
  enable_deletion_protection = var.alb_deletion_protection

  access_logs {
    bucket  = var.alb_access_logs_bucket
    prefix  = var.name
    enabled = true
  }
}

resource "aws_lb_target_group" "gateway" {
  #checkov:skip=CKV_AWS_378:TLS ends at the ALB; ALB to task traffic stays inside the VPC's private subnets, limited by security groups to the ALB. The gateway speaks plain HTTP/1.1.
  name        = "${var.name}-gw"
  port        = local.gateway_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # At least the gateway's server.drain_s (ops/config/production.toml), below the
  # gateway container's stopTimeout (ecs.tf); ops/scripts/check-terraform.sh checks both.
  deregistration_delay = 30

  # /readyz: 503 as soon as a task drains (SIGTERM), before it stops accepting.
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_target_group" "sidecar" {
  #checkov:skip=CKV_AWS_378:TLS ends at the ALB; ALB to task traffic stays inside the VPC's private subnets, limited by security groups to the ALB.
  name        = "${var.name}-as"
  port        = local.sidecar_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  # At least the sidecar's server.drain_s (ops/config/sidecar.production.toml), below the
  # sidecar container's stopTimeout (ecs.tf); ops/scripts/check-terraform.sh checks both.
  deregistration_delay = 30

  # /readyz: 503 as soon as a task drains (SIGTERM), before it stops accepting.
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# An ALB rule matches at most five path patterns: two rules.
resource "aws_lb_listener_rule" "sidecar" {
  for_each     = { for i, chunk in chunklist(local.sidecar_paths, 4) : tostring(i) => chunk }
  listener_arn = aws_lb_listener.https.arn
  priority     = 10 + tonumber(each.key)

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.sidecar.arn
  }

  condition {
    path_pattern {
      values = each.value
    }
  }
}

resource "aws_route53_record" "main" {
  zone_id = var.route53_zone_id
  name    = var.domain_name
  type    = "A"

  alias {
    name                   = aws_lb.main.dns_name
    zone_id                = aws_lb.main.zone_id
    evaluate_target_health = true
  }
}

