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
        // Every span for OpenTelemetry is made at INFO ([`crate::span!`]): the hint keeps
        // the process-wide level at the log filter's, so `debug!`/`trace!` callsites in
        // the libraries stay off at a glance instead of asking each layer.
        .with_filter(
            filter_fn(|m| m.is_span() && m.target() == crate::TARGET)
                .with_max_level_hint(tracing::Level::INFO),
        );
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

/// Writes an event as one JSON object on one line, written as it is read (no map of
/// values in between: a request's access line is written on every call).
pub struct JsonLine;

/// The line's own keys; an event field of the same name takes its place.
const OWN: [&str; 6] = [
    "timestamp",
    "level",
    "target",
    "message",
    "trace_id",
    "span_id",
];

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
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = Line(Vec::with_capacity(192 + fields.text.len()));
        if !fields.has("timestamp") {
            let mut time = String::with_capacity(32);
            SystemTime.format_time(&mut Writer::new(&mut time))?;
            line.key("timestamp");
            line.string(&time)?;
        }
        if !fields.has("level") {
            line.key("level");
            line.string(meta.level().as_str())?;
        }
        if !fields.has("target") {
            line.key("target");
            line.string(meta.target())?;
        }
        line.key("message");
        match &fields.message {
            Some(m) => line.0.extend_from_slice(m),
            None => line.0.extend_from_slice(b"\"\""),
        }
        line.0.extend_from_slice(&fields.text);
        if !fields.has("trace_id") {
            if let Some((trace, span)) = crate::propagate::current_ids() {
                line.key("trace_id");
                line.string(&trace)?;
                line.key("span_id");
                line.string(&span)?;
            }
        }
        line.0.extend_from_slice(b"}\n");
        writer.write_str(std::str::from_utf8(&line.0).map_err(|_| fmt::Error)?)
    }
}

/// A line being written: `{` and keys with their values.
struct Line(Vec<u8>);

impl Line {
    fn key(&mut self, name: &str) {
        self.0.push(if self.0.is_empty() { b'{' } else { b',' });
        self.0.push(b'"');
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }
    fn string(&mut self, v: &str) -> fmt::Result {
        serde_json::to_writer(&mut self.0, v).map_err(|_| fmt::Error)
    }
}

/// An event's fields as `,"name":value` text; its `message` apart (it goes first).
#[derive(Default)]
struct Fields {
    text: Vec<u8>,
    message: Option<Vec<u8>>,
    /// Which of [`OWN`] the event names itself (bit i: `OWN[i]`).
    own: u8,
}

impl Fields {
    fn has(&self, name: &str) -> bool {
        OWN.iter()
            .position(|o| *o == name)
            .is_some_and(|i| self.own & (1 << i) != 0)
    }

    /// Writes `field` with the value `write` writes.
    fn put(&mut self, field: &Field, write: impl Fn(&mut Vec<u8>) -> serde_json::Result<()>) {
        let name = field.name();
        // `r#type` and the like arrive with their raw-identifier prefix.
        let name = name.strip_prefix("r#").unwrap_or(name);
        if name == "message" {
            let mut m = Vec::new();
            self.message = write(&mut m).is_ok().then_some(m);
            return;
        }
        if let Some(i) = OWN.iter().position(|o| *o == name) {
            self.own |= 1 << i;
        }
        self.text.push(b',');
        // A value that cannot be written (none can) leaves `null`, never half a line.
        let _ = serde_json::to_writer(&mut self.text, name);
        self.text.push(b':');
        let at = self.text.len();
        if write(&mut self.text).is_err() {
            self.text.truncate(at);
            self.text.extend_from_slice(b"null");
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| serde_json::to_writer(w, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| serde_json::to_writer(w, &value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| serde_json::to_writer(w, &value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| serde_json::to_writer(w, &value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // Not a number or infinite: null, as JSON has no such number.
        self.put(field, |w| serde_json::to_writer(w, &value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        self.put(field, |w| serde_json::to_writer(w, &text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.put(field, |w| serde_json::to_writer(w, &text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
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

    /// What `events` log as JSON lines.
    fn json_lines(events: impl FnOnce()) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .event_format(JsonLine)
            .finish();
        tracing::subscriber::with_default(sub, events);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn one_line_with_the_common_fields() {
        let text = json_lines(|| {
            tracing::info!(request_id = "r1", status = 200u16, ms = 1.5, "request");
        });
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["message"], "request");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["request_id"], "r1");
        assert_eq!(v["status"], 200);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["target"].as_str().unwrap().contains("logs"), "{v}");
        assert!(v.get("trace_id").is_none());
    }

    /// The line's own keys come first, in their order; a field of the same name takes
    /// the place of one; text is escaped; a number JSON cannot hold is null.
    #[test]
    fn own_keys_first_fields_escaped_and_shadowing() {
        let err = std::io::Error::other("broken \"pipe\"");
        let text = json_lines(|| {
            tracing::warn!(
                target = "tools/call",
                r#type = "x",
                ratio = f64::NAN,
                quoted = "a\"b\\c\n",
                ok = true,
                error = &err as &(dyn std::error::Error + 'static),
                "done {}",
                1
            );
            tracing::info!(n = -3i64);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("{\"timestamp\":\""), "{text}");
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["target"], "tools/call", "the event's field: {v}");
        assert_eq!(v["message"], "done 1");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["type"], "x");
        assert_eq!(v["ratio"], Value::Null);
        assert_eq!(v["quoted"], "a\"b\\c\n");
        assert_eq!(v["ok"], true);
        assert_eq!(v["error"], "broken \"pipe\"");
        let order: Vec<usize> = ["\"timestamp\"", "\"level\"", "\"message\"", "\"quoted\""]
            .iter()
            .map(|k| lines[0].find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{text}");
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["message"], "");
        assert_eq!(v["n"], -3);
        assert!(v["target"].as_str().unwrap().contains("logs"), "{v}");
    }
}
