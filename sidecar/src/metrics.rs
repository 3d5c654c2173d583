//! Prometheus metrics of the sidecar, served on their own listener (`[metrics] listen`):
//! requests per endpoint, sign-ins by outcome and reason, every auth event by kind
//! (tokens issued, refreshed, reuse detected, clients registered, CIMD fetched, …),
//! the latency of calls to Google, the database pool. Same conventions as the
//! gateway's (`promtool check metrics` passes); names start with `mcpauth_`.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::StatusCode;
use mcp_telemetry::prometheus::core::{Collector, Desc};
use mcp_telemetry::prometheus::proto::MetricFamily;
use mcp_telemetry::prometheus::{
    self as prometheus, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};
use tracing::Instrument;

use crate::audit::{AuditSink, AuthEvent, AuthEventKind};
use crate::store::Store;

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    sign_ins: IntCounterVec,
    events: IntCounterVec,
    google: HistogramVec,
}

/// The metrics, registered once in the default registry (`None` if refused).
pub fn get() -> Option<&'static Metrics> {
    static M: OnceLock<Option<Metrics>> = OnceLock::new();
    M.get_or_init(|| {
        let build =
            || -> prometheus::Result<Metrics> {
                let m = Metrics {
                requests: IntCounterVec::new(
                    Opts::new("mcpauth_http_requests_total", "Requests by endpoint and status"),
                    &["route", "status"],
                )?,
                latency: HistogramVec::new(
                    HistogramOpts::new(
                        "mcpauth_http_request_duration_seconds",
                        "Time to answer a request, by endpoint",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["route"],
                )?,
                sign_ins: IntCounterVec::new(
                    Opts::new(
                        "mcpauth_sign_ins_total",
                        "Sign-ins by outcome (ok, refused) and the refusal's reason",
                    ),
                    &["outcome", "reason"],
                )?,
                events: IntCounterVec::new(
                    Opts::new("mcpauth_events_total", "Auth events by kind"),
                    &["kind"],
                )?,
                google: HistogramVec::new(
                    HistogramOpts::new(
                        "mcpauth_google_request_duration_seconds",
                        "Calls to Google by call (discovery, token, jwks, directory) and outcome",
                    )
                    .buckets(BUCKETS.to_vec()),
                    &["call", "outcome"],
                )?,
            };
                prometheus::register(Box::new(m.requests.clone()))?;
                prometheus::register(Box::new(m.latency.clone()))?;
                prometheus::register(Box::new(m.sign_ins.clone()))?;
                prometheus::register(Box::new(m.events.clone()))?;
                prometheus::register(Box::new(m.google.clone()))?;
                mcp_telemetry::prom::register_standard("mcpauth", env!("CARGO_PKG_VERSION"));
                Ok(m)
            };
        build()
            .map_err(|e| tracing::warn!(error = %e, "metrics not registered"))
            .ok()
    })
    .as_ref()
}

/// The route label of a path below the issuer: one of the endpoints, else `other`.
pub fn route_label(local_path: &str) -> &'static str {
    match local_path {
        "/authorize" => "authorize",
        "/consent" => "consent",
        "/callback" => "callback",
        "/token" => "token",
        "/revoke" => "revoke",
        "/register" => "register",
        "/jwks" | "/.well-known/jwks.json" => "jwks",
        "/healthz" | "/readyz" => "health",
        p if p.contains("/.well-known/") => "metadata",
        _ => "other",
    }
}

/// Notes a finished request.
pub fn request(route: &'static str, status: StatusCode, seconds: f64) {
    if let Some(m) = get() {
        let class = match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        m.requests.with_label_values(&[route, class]).inc();
        m.latency.with_label_values(&[route]).observe(seconds);
    }
}

/// Times a call to Google (metric and span).
pub async fn google<T, E>(
    call: &'static str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = mcp_telemetry::span!("google", otel.kind = "client");
    mcp_telemetry::rename(&span, format!("google.{call}"));
    let started = Instant::now();
    let r = fut.instrument(span.clone()).await;
    let outcome = if r.is_ok() { "ok" } else { "error" };
    if r.is_err() {
        mcp_telemetry::fail(&span, "Google call failed");
    }
    if let Some(m) = get() {
        m.google
            .with_label_values(&[call, outcome])
            .observe(started.elapsed().as_secs_f64());
    }
    r
}

/// A bounded reason label: the first word of a refusal's reason when it is a short
/// lowercase word (`domain_not_allowed`, `google`, `invalid_grant`), else `other`.
fn reason_label(reason: Option<&str>) -> &str {
    let Some(r) = reason else { return "" };
    let word = r.split([':', ' ']).next().unwrap_or("");
    let ok = !word.is_empty()
        && word.len() <= 40
        && word
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-');
    if ok {
        word
    } else {
        "other"
    }
}

/// Counts every auth event, then hands it to the sink behind.
pub struct CountingSink(pub Arc<dyn AuditSink>);

impl AuditSink for CountingSink {
    fn record(&self, e: &AuthEvent) {
        if let Some(m) = get() {
            m.events.with_label_values(&[e.kind.as_str()]).inc();
            match e.kind {
                AuthEventKind::LoginOk => m.sign_ins.with_label_values(&["ok", ""]).inc(),
                AuthEventKind::LoginRefused => m
                    .sign_ins
                    .with_label_values(&["refused", reason_label(e.reason.as_deref())])
                    .inc(),
                _ => {}
            }
        }
        self.0.record(e);
    }
}

/// The database pool, read at scrape time.
pub struct PoolCollector {
    store: Store,
    connections: IntGaugeVec,
    max: IntGaugeVec,
    descs: Vec<Desc>,
}

impl PoolCollector {
    pub fn register(store: Store) {
        let build = || -> prometheus::Result<PoolCollector> {
            let connections = IntGaugeVec::new(
                Opts::new(
                    "mcpauth_db_pool_connections",
                    "Database connections by state",
                ),
                &["state"],
            )?;
            let max = IntGaugeVec::new(
                Opts::new("mcpauth_db_pool_max_connections", "Size limit of the pool"),
                &[],
            )?;
            let descs = connections
                .desc()
                .into_iter()
                .chain(max.desc())
                .cloned()
                .collect();
            Ok(PoolCollector {
                store,
                connections,
                max,
                descs,
            })
        };
        match build().and_then(|c| prometheus::register(Box::new(c))) {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "pool metrics not registered"),
        }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = self.store.pool_status();
        let idle = s.available;
        self.connections
            .with_label_values(&["in_use"])
            .set(s.size.saturating_sub(idle) as i64);
        self.connections
            .with_label_values(&["idle"])
            .set(idle as i64);
        self.max
            .with_label_values::<&str>(&[])
            .set(s.max_size as i64);
        let mut out = self.connections.collect();
        out.extend(self.max.collect());
        out
    }
}

/// Serves `/metrics` on `listener` until it fails.
pub async fn serve(listener: tokio::net::TcpListener) {
    use hyper::service::service_fn;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
                let (body, ctype) = mcp_telemetry::prom::encode();
                let resp = hyper::Response::builder()
                    .header(http::header::CONTENT_TYPE, ctype)
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap_or_default();
                Ok::<_, std::convert::Infallible>(resp)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(
            reason_label(Some("domain_not_allowed")),
            "domain_not_allowed"
        );
        assert_eq!(reason_label(Some("google: access_denied")), "google");
        assert_eq!(reason_label(Some("Some free text from somewhere")), "other");
        assert_eq!(reason_label(None), "");
    }

    #[test]
    fn routes_are_bounded() {
        assert_eq!(route_label("/token"), "token");
        assert_eq!(route_label("/x/y/z"), "other");
    }
}
