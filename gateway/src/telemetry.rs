//! Logs and traces, set up once at start: the log shape shared with the sidecar and
//! OpenTelemetry export (`[tracing]` and the `OTEL_*` variables), both from
//! `mcp_telemetry`. Spans are made where the work is: the request in
//! [`crate::proxy`] (facts from [`crate::record`]), backend exchanges in
//! `crate::upstream`, token checks in `crate::auth`.

use crate::config::{Config, LogFormat};

/// Installs the global subscriber; keep the returned value for the process' life.
pub fn init(config: &Config) -> anyhow::Result<mcp_telemetry::Telemetry> {
    let env = |k: &str| std::env::var(k).ok();
    let traces = config.tracing.resolve("mcp-gateway", &env)?;
    let format = match config.server.log_format {
        LogFormat::Json => mcp_telemetry::LogFormat::Json,
        LogFormat::Pretty => mcp_telemetry::LogFormat::Pretty,
    };
    let t = mcp_telemetry::init(format, "info", traces.as_ref())?;
    if let Some(r) = &traces {
        tracing::info!(
            service = %r.service_name,
            endpoint = r.traces_url.as_deref().unwrap_or("from OTEL_EXPORTER_OTLP_*"),
            "exporting traces (OTLP/HTTP)"
        );
    }
    Ok(t)
}
