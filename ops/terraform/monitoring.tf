# Seeing inside the service: an ADOT collector container in every task scrapes the
# gateway (:9090) and the sidecar (127.0.0.1:9091) over the task's shared network
# namespace and writes their metrics to CloudWatch (embedded metric format, namespace
# var.name); it also receives the two binaries' traces over OTLP (127.0.0.1:4318) and
# sends them to X-Ray. CloudWatch alarms cover what an operator is paged for: 5xx
# rate, unhealthy targets, the audit spool growing, RDS CPU and storage. The Grafana
# dashboard and Prometheus rules for a Prometheus-based stack are under ops/grafana and
# ops/prometheus (docs/operations.md).

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/ecs/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_cloudwatch_log_group" "collector" {
  name              = "/ecs/${var.name}/collector"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

locals {
  sidecar_metrics_port = 9091
  metrics_namespace    = var.name

  # The ADOT collector's configuration, passed inline (AOT_CONFIG_CONTENT).
  collector_config = yamlencode({
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [
            {
              job_name        = "mcp-gateway"
              scrape_interval = "30s"
              static_configs  = [{ targets = ["127.0.0.1:${local.metrics_port}"] }]
            },
            {
              job_name        = "mcp-oauth-sidecar"
              scrape_interval = "30s"
              static_configs  = [{ targets = ["127.0.0.1:${local.sidecar_metrics_port}"] }]
            },
          ]
        }
      }
      otlp = { protocols = { http = { endpoint = "127.0.0.1:4318" } } }
    }
    processors = {
      batch = {}
      # Only what the alarms and the dashboard need becomes a CloudWatch metric.
      "filter/cloudwatch" = {
        metrics = {
          include = {
            match_type   = "regexp"
            metric_names = ["mcpgw_requests_total", "mcpgw_backend_up", "mcpgw_backend_failures_total", "mcpgw_audit_.*", "mcpauth_sign_ins_total", "mcpauth_events_total", "mcpauth_db_pool_.*"]
          }
        }
      }
    }
    exporters = {
      awsemf = {
        namespace                        = local.metrics_namespace
        log_group_name                   = aws_cloudwatch_log_group.metrics.name
        region                           = var.aws_region
        dimension_rollup_option          = "NoDimensionRollup"
        resource_to_telemetry_conversion = { enabled = false }
        metric_declarations = [
          { dimensions = [["backend"]], metric_name_selectors = ["^mcpgw_backend_up$", "^mcpgw_backend_failures_total$"] },
          { dimensions = [["outcome"]], metric_name_selectors = ["^mcpgw_requests_total$", "^mcpauth_sign_ins_total$"] },
          { dimensions = [[]], metric_name_selectors = ["^mcpgw_audit_.*", "^mcpauth_db_pool_max_connections$"] },
          { dimensions = [["kind"]], metric_name_selectors = ["^mcpauth_events_total$"] },
        ]
      }
      awsxray = { region = var.aws_region }
    }
    service = {
      pipelines = {
        metrics = { receivers = ["prometheus"], processors = ["filter/cloudwatch", "batch"], exporters = ["awsemf"] }
        traces  = { receivers = ["otlp"], processors = ["batch"], exporters = ["awsxray"] }
      }
    }
  })

  # Appended to the task's containers (ecs.tf).
  observability_containers = [
    {
      name                   = "collector"
      image                  = var.collector_image
      essential              = false
      cpu                    = 0
      memoryReservation      = 64
      readonlyRootFilesystem = true
      privileged             = false
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.collector_config }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.collector.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "collector"
        }
      }
    },
  ]

  # Both binaries export traces to the collector when var.trace_sample_ratio > 0.
  tracing_environment = var.trace_sample_ratio > 0 ? [
    { name = "OTEL_EXPORTER_OTLP_ENDPOINT", value = "http://127.0.0.1:4318" },
    { name = "OTEL_TRACES_SAMPLER", value = "parentbased_traceidratio" },
    { name = "OTEL_TRACES_SAMPLER_ARG", value = tostring(var.trace_sample_ratio) },
  ] : []

  alarm_actions = compact([var.alarm_sns_topic_arn])
}

# The collector writes EMF log events and X-Ray segments with the task role.
data "aws_iam_policy_document" "collector" {
  statement {
    sid       = "WriteMetricLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
  statement {
    sid = "WriteTraces"
    #checkov:skip=CKV_AWS_111:X-Ray's PutTraceSegments and PutTelemetryRecords take no resource ARN; "*" is the only value AWS accepts
    #checkov:skip=CKV_AWS_356:X-Ray's PutTraceSegments and PutTelemetryRecords take no resource ARN; "*" is the only value AWS accepts
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "collector" {
  name   = "collector"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.collector.json
}

# --- alarms ------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "gateway_5xx_rate" {
  alarm_name          = "${var.name}-5xx-rate"
  alarm_description   = "More than 5 % of the gateway's responses are 5xx (targets and the load balancer together)."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 5
  evaluation_periods  = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "rate"
    expression  = "100 * (target5xx + elb5xx) / MAX([requests, 1])"
    label       = "5xx %"
    return_data = true
  }
  metric_query {
    id = "target5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      period      = 300
      stat        = "Sum"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
    }
  }
  metric_query {
    id = "elb5xx"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      period      = 300
      stat        = "Sum"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix }
    }
  }
  metric_query {
    id = "requests"
    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "RequestCount"
      period      = 300
      stat        = "Sum"
      dimensions  = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = aws_lb_target_group.gateway.arn_suffix }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_targets" {
  for_each = {
    gateway = aws_lb_target_group.gateway.arn_suffix
    sidecar = aws_lb_target_group.sidecar.arn_suffix
  }
  alarm_name          = "${var.name}-${each.key}-unhealthy-targets"
  alarm_description   = "A ${each.key} task fails the load balancer's health check."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.main.arn_suffix, TargetGroup = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "audit_spool_growing" {
  alarm_name          = "${var.name}-audit-spool-growing"
  alarm_description   = "Audit events pile up in a task's spool: PostgreSQL does not take the audit log's writes (mcpgw_audit_spool_events, from the collector)."
  namespace           = local.metrics_namespace
  metric_name         = "mcpgw_audit_spool_events"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 3
  threshold           = 1000
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "audit_events_dropped" {
  alarm_name          = "${var.name}-audit-events-dropped"
  alarm_description   = "Audit events were lost (neither queued nor spooled: the spool's disk is full)."
  namespace           = local.metrics_namespace
  metric_name         = "mcpgw_audit_events_dropped_total"
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  count               = local.create_db ? 1 : 0
  alarm_name          = "${var.name}-db-cpu"
  alarm_description   = "The database's CPU stays above 80 %."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.main[0].identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = 80
  comparison_operator = "GreaterThanThreshold"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "rds_storage" {
  count               = local.create_db ? 1 : 0
  alarm_name          = "${var.name}-db-free-storage"
  alarm_description   = "The database has less than 10 % of its allocated storage free."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.main[0].identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.db_allocated_storage_gb * 1000000000 * 0.1
  comparison_operator = "LessThanThreshold"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
