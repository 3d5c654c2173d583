# ECS Fargate: one service, tasks of two containers sharing a network namespace, the
# gateway (:8080, metrics :9090) and the OAuth sidecar (:8090). Any task serves any
# request: sessions are sealed tokens, OAuth state and audit are in PostgreSQL.

resource "aws_ecs_cluster" "main" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/ecs/${var.name}/gateway"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "sidecar" {
  name              = "/ecs/${var.name}/sidecar"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  common_environment = concat([
    { name = "CONFIG_ENV", value = var.config_env },
    { name = "MCP_PUBLIC_URL", value = local.public_url },
    { name = "AWS_REGION", value = var.aws_region },
    { name = "RUST_LOG", value = "info" },
  ], local.tracing_environment)

  # The images' own HEALTHCHECK, which ECS does not read: GET /healthz over bash's
  # /dev/tcp (no curl in the images).
  health_command = "exec 3<>/dev/tcp/127.0.0.1/$HEALTH_PORT && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 4 _ code _ <&3 && [ \"$code\" = 200 ]"

  containers = [
    {
      name                   = "gateway"
      image                  = "${aws_ecr_repository.gateway.repository_url}:${var.image_tag}"
      essential              = true
      cpu                    = var.task_cpu - var.sidecar_cpu
      memoryReservation      = var.task_memory - var.sidecar_memory
      readonlyRootFilesystem = true
      privileged             = false
      # SIGKILL after this: above the target group's deregistration_delay and the
      # gateway's stop_delay_s + grace_period_seconds (checked by check-terraform.sh).
      stopTimeout = 45
      portMappings = [
        { containerPort = local.gateway_port, protocol = "tcp", name = "mcp" },
        { containerPort = local.metrics_port, protocol = "tcp", name = "metrics" },
      ]
      environment = concat(local.common_environment, [{ name = "HEALTH_PORT", value = tostring(local.gateway_port) }])
      mountPoints = [
        { sourceVolume = "gateway-data", containerPath = "/var/lib/mcp-gateway", readOnly = false },
        { sourceVolume = "gateway-tmp", containerPath = "/tmp", readOnly = false },
      ]
      healthCheck = {
        command     = ["CMD", "/bin/bash", "-c", local.health_command]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.gateway.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "gateway"
        }
      }
    },
    {
      name                   = "sidecar"
      image                  = "${aws_ecr_repository.sidecar.repository_url}:${var.image_tag}"
      essential              = true
      cpu                    = var.sidecar_cpu
      memoryReservation      = var.sidecar_memory
      readonlyRootFilesystem = true
      privileged             = false
      # Above the sidecar target group's deregistration_delay and its stop_delay_s +
      # drain_s (ops/config/sidecar.production.toml); ops/scripts/check-terraform.sh.
      stopTimeout = 45
      portMappings = [
        { containerPort = local.sidecar_port, protocol = "tcp", name = "oauth" },
      ]
      environment = concat(local.common_environment, [{ name = "HEALTH_PORT", value = tostring(local.sidecar_port) }])
      mountPoints = [
        { sourceVolume = "sidecar-tmp", containerPath = "/tmp", readOnly = false },
      ]
      healthCheck = {
        command     = ["CMD", "/bin/bash", "-c", local.health_command]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.sidecar.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "sidecar"
        }
      }
    },
  ]
}

resource "aws_ecs_task_definition" "main" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.task_cpu
  memory                   = var.task_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(concat(local.containers, local.observability_containers))

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # Writable scratch on the task's ephemeral storage; the root filesystems are
  # read-only. gateway-data: $HOME of the gateway (audit spool, npm/uv caches of STDIO
  # backends).
  volume {
    name = "gateway-data"
  }
  volume {
    name = "gateway-tmp"
  }
  volume {
    name = "sidecar-tmp"
  }
}

resource "aws_ecs_service" "main" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.main.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  health_check_grace_period_seconds  = 60
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = local.gateway_port
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.sidecar.arn
    container_name   = "sidecar"
    container_port   = local.sidecar_port
  }

  # Autoscaling owns the count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https, aws_iam_role_policy.task]
}

# --- autoscaling: CPU and request count ----------------------------------------------------------

resource "aws_appautoscaling_target" "service" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.main.name}"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  resource_id        = aws_appautoscaling_target.service.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "requests" {
  name               = "${var.name}-requests"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension
  resource_id        = aws_appautoscaling_target.service.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.requests_per_target
    scale_in_cooldown  = 300
    scale_out_cooldown = 60
    predefined_metric_specification {
      predefined_metric_type = "ALBRequestCountPerTarget"
      resource_label         = "${aws_lb.main.arn_suffix}/${aws_lb_target_group.gateway.arn_suffix}"
    }
  }
}
