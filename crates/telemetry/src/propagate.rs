//! W3C trace context in and out: the client's `traceparent` becomes the parent of the
//! request span; a span's own context becomes the `traceparent` sent to a backend.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes the trace named by `traceparent` (and `tracestate`) the parent of `span`, so
/// that the client's trace continues through it. Nothing when tracing is off, when
/// there is no header, or when it does not parse.
pub fn continue_from(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !crate::on() || span.is_none() {
        return;
    }
    if let Some(cx) = extract(traceparent, tracestate) {
        let _ = span.set_parent(cx);
    }
}

/// The trace context a `traceparent` (and `tracestate`) names, when it is a valid one.
pub fn extract(
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<opentelemetry::Context> {
    let tp = traceparent?;
    let mut carrier = HashMap::with_capacity(2);
    carrier.insert("traceparent".to_string(), tp.to_string());
    if let Some(ts) = tracestate {
        carrier.insert("tracestate".to_string(), ts.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` naming `span` as the parent of what is sent on its behalf;
/// `None` when tracing is off or the span is not exported.
pub fn traceparent(span: &Span) -> Option<String> {
    if !crate::on() || span.is_none() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace and span ids of the current span, in hex, for the log line.
pub fn current_ids() -> Option<(String, String)> {
    if !crate::on() {
        return None;
    }
    let span = Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}
