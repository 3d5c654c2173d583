//! The one log shape of both binaries, and the subscriber set-up.
//!
//! JSON lines carry, in this order: `timestamp` (RFC 3339, UTC), `level`, `target`,
//! `message`, the event's own fields (`request_id` on request lines, …), and
//! `trace_id`/`span_id` when tracing is on and the line is written inside a span.
//! `pretty` is for people at a terminal and has no fixed shape (coloured only when stderr
//! is a terminal and `NO_COLOR` is unset).

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::traces::{Resolved, TracesError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what is queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (waits at most the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown() {
                eprintln!("traces not all exported: {e}");
            }
        }
    }
}

/// Installs the global subscriber: logs to stderr in `format`, filtered by `RUST_LOG`
/// (else `default_filter`), and spans exported as `traces` says (none when `None`).
pub fn init(
    format: LogFormat,
    default_filter: &str,
    traces: Option<&Resolved>,
) -> Result<Telemetry, TracesError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter))
        .add_directive(
            format!("{}=off", crate::TARGET)
                .parse()
                .map_err(|e| TracesError::Exporter(format!("{e}")))?,
        );
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.event_format(JsonLine).boxed(),
        // Colours only for a person at a terminal: a file, a pipe or a log collector
        // would get the escape codes as text (and they cost more than the rest of a
        // line to write).
        LogFormat::Pretty => fmt.compact().with_ansi(colours()).boxed(),
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    let Some(traces) = traces else {
        registry.init();
        return Ok(Telemetry { provider: None });
    };
    let provider = traces.provider()?;
    let tracer = provider.tracer("mcp-telemetry");
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_filter(filter_fn(|m| m.is_span() && m.target() == crate::TARGET));
    registry.with(otel).init();
    crate::set_on(true);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Whether pretty lines are coloured: stderr is a terminal and `NO_COLOR` is not set.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes an event as one JSON object on one line.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut time = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut time))?;
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), Value::String(time));
        line.insert("level".into(), Value::String(meta.level().to_string()));
        line.insert("target".into(), Value::String(meta.target().to_string()));
        line.insert("message".into(), Value::String(String::new()));
        event.record(&mut Fields(&mut line));
        if let Some((trace, span)) = crate::propagate::current_ids() {
            line.insert("trace_id".into(), Value::String(trace));
            line.insert("span_id".into(), Value::String(span));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields into the line (`message` included).
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, v: Value) {
        let name = field.name();
        // `r#type` and the like arrive with their raw-identifier prefix.
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.0.insert(name.to_string(), v);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_line_with_the_common_fields() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(request_id = "r1", status = 200u16, ms = 1.5, "request");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "request");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 200);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["target"].as_str().unwrap().contains("logs"), "{v}");
        assert!(v.get("trace_id").is_none());
    }
}
