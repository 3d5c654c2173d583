//! Prometheus metrics, served on a separate admin listener (`[metrics] listen`).
//!
//! Request metrics are updated as requests finish; the state of backends, of the
//! token cache and of the audit log is read when Prometheus scrapes, by a collector.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::proto::MetricFamily;
use pingora_prometheus::prometheus::{
    self, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts,
};

use crate::auth::bearer::Authenticator;
use crate::mcp::handler::Gateway;
use crate::upstream::Health;

pub struct RequestMetrics {
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
}

/// Request counters and latency histograms, registered once in the default registry.
/// `None` only if the definitions were refused (then requests are simply not counted).
pub fn requests() -> Option<&'static RequestMetrics> {
    static M: OnceLock<Option<RequestMetrics>> = OnceLock::new();
    M.get_or_init(|| {
        let build = || -> prometheus::Result<RequestMetrics> {
            let requests = IntCounterVec::new(
                Opts::new(
                    "mcpgw_requests_total",
                    "Requests by route, JSON-RPC method, backend and outcome",
                ),
                &["route", "method", "backend", "outcome"],
            )?;
            let latency = HistogramVec::new(
                HistogramOpts::new("mcpgw_request_duration_seconds", "Request latency").buckets(
                    vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0,
                    ],
                ),
                &["route", "method"],
            )?;
            prometheus::register(Box::new(requests.clone()))?;
            prometheus::register(Box::new(latency.clone()))?;
            Ok(RequestMetrics { requests, latency })
        };
        build()
            .map_err(|e| tracing::warn!(error = %e, "request metrics not registered"))
            .ok()
    })
    .as_ref()
}

/// The outcome label of a finished request.
pub fn outcome(status: u16, rpc_error: Option<i64>, auth_failed: bool) -> &'static str {
    match (status, rpc_error) {
        _ if auth_failed => "unauthorized",
        (_, Some(crate::mcp::jsonrpc::FORBIDDEN)) => "forbidden",
        (200..=299, None) => "ok",
        (200..=299, Some(_)) => "rpc_error",
        (400..=499, _) => "client_error",
        _ => "server_error",
    }
}

/// Reads gateway state at scrape time.
pub struct StateCollector {
    gateway: Arc<Gateway>,
    auth: Option<Arc<Authenticator>>,
    audit: Option<Arc<crate::audit::Auditor>>,
    up: GaugeVec,
    counters: GaugeVec,
    auth_cache: GaugeVec,
    audit_gauges: GaugeVec,
    descs: Vec<Desc>,
}

impl StateCollector {
    pub fn register(
        gateway: Arc<Gateway>,
        auth: Option<Arc<Authenticator>>,
        audit: Option<Arc<crate::audit::Auditor>>,
    ) {
        let build = || -> prometheus::Result<StateCollector> {
            let up = GaugeVec::new(
                Opts::new(
                    "mcpgw_backend_up",
                    "1 when the backend answered its last exchange",
                ),
                &["backend"],
            )?;
            let counters = GaugeVec::new(
                Opts::new(
                    "mcpgw_backend_counter",
                    "Per-backend counters: requests, failures, omitted_from_lists, restarts, processes, live_connections",
                ),
                &["backend", "counter"],
            )?;
            let auth_cache = GaugeVec::new(
                Opts::new(
                    "mcpgw_auth_token_cache",
                    "Token cache lookups by result (hit, miss)",
                ),
                &["result"],
            )?;
            let audit_gauges = GaugeVec::new(
                Opts::new(
                    "mcpgw_audit",
                    "Audit log: queue_depth, spooled_events, written_total, failures_total, dropped_total, last_write_latency_ms, postgres_up",
                ),
                &["measure"],
            )?;
            let descs = up
                .desc()
                .into_iter()
                .chain(counters.desc())
                .chain(auth_cache.desc())
                .chain(audit_gauges.desc())
                .cloned()
                .collect();
            Ok(StateCollector {
                gateway,
                auth,
                audit,
                up,
                counters,
                auth_cache,
                audit_gauges,
                descs,
            })
        };
        match build() {
            Ok(c) => {
                if let Err(e) = prometheus::register(Box::new(c)) {
                    tracing::warn!(error = %e, "state metrics not registered");
                }
            }
            Err(e) => tracing::warn!(error = %e, "state metrics not built"),
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for b in &self.gateway.backends {
            let name = b.name();
            self.up
                .with_label_values(&[name])
                .set(if b.health() == Health::Up { 1.0 } else { 0.0 });
            let set = |counter: &str, v: u64| {
                self.counters
                    .with_label_values(&[name, counter])
                    .set(v as f64);
            };
            set("requests", b.requests.load(Ordering::Relaxed));
            set("failures", b.failures.load(Ordering::Relaxed));
            set("omitted_from_lists", b.omitted.load(Ordering::Relaxed));
            let t = b.transport_status();
            for key in ["restarts", "processes", "live_connections", "started_total"] {
                if let Some(v) = t.get(key).and_then(|v| v.as_u64()) {
                    set(key, v);
                }
            }
        }
        if let Some(a) = &self.auth {
            self.auth_cache
                .with_label_values(&["hit"])
                .set(a.hits.load(Ordering::Relaxed) as f64);
            self.auth_cache
                .with_label_values(&["miss"])
                .set(a.misses.load(Ordering::Relaxed) as f64);
        }
        if let Some(a) = &self.audit {
            let m = a.metrics();
            for (k, v) in [
                ("queue_depth", m.queue_depth as f64),
                ("spooled_events", m.spooled_events as f64),
                ("written_total", m.written_total as f64),
                ("failures_total", m.failures_total as f64),
                ("dropped_total", m.dropped_total as f64),
                ("last_write_latency_ms", m.last_write_latency_ms),
                ("postgres_up", if m.postgres_up { 1.0 } else { 0.0 }),
            ] {
                self.audit_gauges.with_label_values(&[k]).set(v);
            }
        }
        let mut out = self.up.collect();
        out.extend(self.counters.collect());
        out.extend(self.auth_cache.collect());
        if self.audit.is_some() {
            out.extend(self.audit_gauges.collect());
        }
        out
    }
}
