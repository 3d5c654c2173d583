//! What the gateway and the sidecar share to be seen from outside:
//!
//! - [`logs`]: the one JSON log shape (`timestamp`, `level`, `target`, `message`, the
//!   event's fields, and `trace_id`/`span_id` when tracing is on), and the subscriber
//!   set-up both binaries call once at start.
//! - [`traces`]: OpenTelemetry traces exported over OTLP/HTTP (protobuf), configured by
//!   the binary's config and the standard `OTEL_*` variables; off by default.
//! - [`propagate`]: W3C `traceparent` in and out.
//! - [`prom`]: Prometheus helpers (build info, process metrics, counters mirrored from
//!   atomics, the text encoding).
//!
//! Why spans go through [`span!`]: when tracing is off no span is created at all (an
//! atomic load and `Span::none()`), so the request path pays nothing for it. A request
//! decides first whether it is sampled ([`head::request_span`]); the spans under it are
//! [`child_span!`]s, made only under a span that exists.

pub mod head;
pub mod logs;
pub mod prom;
pub mod propagate;
pub mod traces;

use std::sync::atomic::{AtomicBool, Ordering};

pub use logs::{init, LogFormat, Telemetry};
/// The Prometheus client both binaries register their metrics in.
pub use prometheus;
pub use traces::{TraceSettings, TracesError};

/// The target of every span made for OpenTelemetry: the exporter's layer takes only
/// these, the log layer none of them.
pub const TARGET: &str = "otel";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (set once by [`init`]).
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

pub(crate) fn set_on(v: bool) {
    ON.store(v, Ordering::Relaxed);
}

/// An INFO span for OpenTelemetry (target [`TARGET`]), or `Span::none()` when tracing
/// is off. Same arguments as `tracing::info_span!` after the target.
#[macro_export]
macro_rules! span {
    ($($arg:tt)*) => {
        if $crate::on() {
            ::tracing::info_span!(target: "otel", $($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// A span under the current one (target [`TARGET`]): `Span::none()` when tracing is off
/// or when there is no current span (a request sampled out: [`head::request_span`]).
#[macro_export]
macro_rules! child_span {
    ($($arg:tt)*) => {
        if $crate::on() && !::tracing::Span::current().is_none() {
            ::tracing::info_span!(target: "otel", $($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// Awaits a future inside `span`, instrumented only when the span is real. A span that
/// exports nothing (tracing off, a request sampled out) costs nothing this way:
/// `Instrumented` takes the future by value, and moving a request's or a backend call's
/// future copies kilobytes of state machine on every call. `$fut` is written out twice,
/// once per branch, so that each is built where it is awaited.
#[macro_export]
macro_rules! in_span {
    ($span:expr, $fut:expr) => {{
        let span: &::tracing::Span = &$span;
        if span.is_none() {
            $fut.await
        } else {
            ::tracing::Instrument::instrument($fut, span.clone()).await
        }
    }};
}

/// Sets an attribute on `span` when it is exported (nothing when tracing is off).
pub fn attr(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if on() && !span.is_none() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.set_attribute(key, value);
    }
}

/// Names `span` (`otel.name` is read only before the span's context exists, which
/// propagation creates early).
pub fn rename(span: &tracing::Span, name: String) {
    if on() && !span.is_none() {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.context().span().update_name(name);
    }
}

/// Marks `span` as failed, with a short description.
pub fn fail(span: &tracing::Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    if on() && !span.is_none() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.set_status(opentelemetry::trace::Status::error(description));
    }
}
