//! The span of one exchange with a backend (a child of the request's span), the trace
//! context sent with it (the `traceparent` header and `params._meta.traceparent`), and
//! the exchange's latency metric.
//!
//! Why the body is rewritten here: the context to send is this span's, known only once
//! the span exists; the JSON is read again only when the span is exported.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::{json, Value};
use tracing::Span;

use super::{to_bytes, Transport, UpstreamError};

type Extra = [(::http::HeaderName, String)];

/// The transport's name, as a span attribute.
pub(super) fn transport(t: &Transport) -> &'static str {
    match t {
        Transport::Http { .. } => "http",
        Transport::Sse { .. } => "sse",
        Transport::Stdio(_) => "stdio",
    }
}

/// A client span for one exchange with `backend`; `method` is asked only for a span
/// that is exported (a request sampled out makes none, and reading the method of a
/// serialized body is a parse).
pub(super) fn exchange_span(
    backend: &str,
    transport: &'static str,
    method: impl FnOnce() -> Option<String>,
) -> Span {
    let span = mcp_telemetry::child_span!("mcp.backend_call", otel.kind = "client");
    if !span.is_none() {
        let method = method();
        let method = method.as_deref();
        mcp_telemetry::rename(&span, format!("{} {backend}", method.unwrap_or("exchange")));
        mcp_telemetry::attr(&span, "mcp.backend", backend.to_string());
        mcp_telemetry::attr(&span, "network.transport", transport);
        if let Some(m) = method {
            mcp_telemetry::attr(&span, "mcp.method.name", m.to_string());
        }
    }
    span
}

/// The JSON-RPC method of a serialized message.
pub(super) fn method_of(body: &Bytes) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("method").and_then(Value::as_str).map(str::to_string)
}

/// The body and headers to send, carrying `span`'s context instead of the client's:
/// untouched (borrowed) when the span is not exported.
pub(super) fn propagate<'a>(span: &Span, body: Bytes, extra: &'a Extra) -> (Bytes, Cow<'a, Extra>) {
    let Some(tp) = mcp_telemetry::propagate::traceparent(span) else {
        return (body, Cow::Borrowed(extra));
    };
    let mut headers: Vec<_> = extra
        .iter()
        .filter(|(n, _)| n.as_str() != "traceparent")
        .cloned()
        .collect();
    headers.push((::http::HeaderName::from_static("traceparent"), tp.clone()));
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(mut msg) => {
            set_meta_traceparent(&mut msg, &tp);
            to_bytes(&msg)
        }
        Err(_) => body,
    };
    (body, Cow::Owned(headers))
}

/// Sets `params._meta.traceparent` of a request (the MCP convention for trace context).
pub(super) fn set_meta_traceparent(msg: &mut Value, tp: &str) {
    if msg.get("method").is_none() {
        return;
    }
    let Some(obj) = msg.as_object_mut() else {
        return;
    };
    let params = obj.entry("params").or_insert_with(|| json!({}));
    if let Value::Object(p) = params {
        let meta = p.entry("_meta").or_insert_with(|| json!({}));
        if let Value::Object(m) = meta {
            m.insert("traceparent".into(), json!(tp));
        }
    }
}

/// Notes the exchange's end on its span and in the latency metric.
pub(super) fn finish<T>(
    span: &Span,
    backend: &str,
    started: std::time::Instant,
    r: &Result<T, UpstreamError>,
) {
    crate::metrics::backend_exchange(backend, started.elapsed().as_secs_f64());
    if let Err(e) = r {
        mcp_telemetry::attr(span, "error.type", e.kind());
        if !matches!(e, UpstreamError::Rpc { .. }) {
            mcp_telemetry::fail(span, e.to_string());
        }
    }
}
