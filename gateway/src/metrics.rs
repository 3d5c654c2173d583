//! Prometheus metrics, served on a separate admin listener (`[metrics] listen`).
//!
//! Request metrics are updated as requests finish, backend call latency as each call
//! returns; the state of backends, of the token cache and of the audit log is read
//! when Prometheus scrapes, by a collector. Names follow Prometheus' conventions:
//! counters end in `_total`, units are base units in the name (`_seconds`), one
//! metric per meaning, labels bounded (backend and method names come from the config
//! and a closed enum; `tool` only for tools the config names).
//! The names before these were renamed: see docs/operations.md ("Metrics").

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use pingora_prometheus::prometheus::core::{Collector, Desc};
use pingora_prometheus::prometheus::proto::MetricFamily;
use pingora_prometheus::prometheus::{
    self, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
};

use crate::auth::bearer::Authenticator;
use crate::mcp::handler::Gateway;
use crate::upstream::Health;

/// Latency buckets, seconds: 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct RequestMetrics {
    /// `mcpgw_requests_total{route,method,backend,tool,outcome}`
    pub requests: IntCounterVec,
    /// `mcpgw_request_duration_seconds{route,method,backend,tool}`
    pub latency: HistogramVec,
    /// `mcpgw_backend_request_duration_seconds{backend}`: one exchange with a backend.
    pub backend_latency: HistogramVec,
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
                    "Requests by route, JSON-RPC method, backend, configured tool and outcome",
                ),
                &["route", "method", "backend", "tool", "outcome"],
            )?;
            let latency = HistogramVec::new(
                HistogramOpts::new(
                    "mcpgw_request_duration_seconds",
                    "Time to answer a request, from its head to its last byte written",
                )
                .buckets(BUCKETS.to_vec()),
                &["route", "method", "backend", "tool"],
            )?;
            let backend_latency = HistogramVec::new(
                HistogramOpts::new(
                    "mcpgw_backend_request_duration_seconds",
                    "Time a backend took to answer one exchange (to its first event for a stream)",
                )
                .buckets(BUCKETS.to_vec()),
                &["backend"],
            )?;
            prometheus::register(Box::new(requests.clone()))?;
            prometheus::register(Box::new(latency.clone()))?;
            prometheus::register(Box::new(backend_latency.clone()))?;
            mcp_telemetry::prom::register_standard("mcpgw", env!("CARGO_PKG_VERSION"));
            Ok(RequestMetrics {
                requests,
                latency,
                backend_latency,
            })
        };
        build()
            .map_err(|e| tracing::warn!(error = %e, "request metrics not registered"))
            .ok()
    })
    .as_ref()
}

/// Notes one exchange with `backend` (when metrics are on).
pub fn backend_exchange(backend: &str, seconds: f64) {
    if let Some(m) = requests() {
        m.backend_latency
            .with_label_values(&[backend])
            .observe(seconds);
    }
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

/// Per-backend metrics read from the backends at scrape time.
struct BackendFamilies {
    up: GaugeVec,
    requests: IntCounterVec,
    failures: IntCounterVec,
    omitted: IntCounterVec,
    restarts: IntCounterVec,
    connections: IntGaugeVec,
    processes: IntGaugeVec,
    started: IntCounterVec,
}

/// The audit log's metrics, read at scrape time.
struct AuditFamilies {
    queue: IntGaugeVec,
    capacity: IntGaugeVec,
    spool: IntGaugeVec,
    spooled: IntCounterVec,
    written: IntCounterVec,
    duplicates: IntCounterVec,
    failures: IntCounterVec,
    rejected: IntCounterVec,
    dropped: IntCounterVec,
    last_write: GaugeVec,
    postgres_up: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn int_gauge(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

impl BackendFamilies {
    fn new() -> prometheus::Result<BackendFamilies> {
        let b = &["backend"];
        Ok(BackendFamilies {
            up: GaugeVec::new(
                Opts::new(
                    "mcpgw_backend_up",
                    "1 when the backend answered its last exchange",
                ),
                b,
            )?,
            requests: counter(
                "mcpgw_backend_requests_total",
                "Exchanges sent to the backend",
                b,
            )?,
            failures: counter(
                "mcpgw_backend_failures_total",
                "Exchanges with the backend that failed (no answer, bad answer, timeout)",
                b,
            )?,
            omitted: counter(
                "mcpgw_backend_list_omissions_total",
                "Times the backend was left out of a merged list",
                b,
            )?,
            restarts: counter(
                "mcpgw_backend_restarts_total",
                "Restarts of a shared STDIO process or SSE connection",
                b,
            )?,
            connections: int_gauge(
                "mcpgw_backend_connections",
                "Live connections (shared STDIO processes or SSE streams)",
                b,
            )?,
            processes: int_gauge(
                "mcpgw_backend_processes",
                "Running per-session STDIO processes",
                b,
            )?,
            started: counter(
                "mcpgw_backend_processes_started_total",
                "Per-session STDIO processes started",
                b,
            )?,
        })
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.up,
            &self.requests,
            &self.failures,
            &self.omitted,
            &self.restarts,
            &self.connections,
            &self.processes,
            &self.started,
        ]
    }
}

impl AuditFamilies {
    fn new() -> prometheus::Result<AuditFamilies> {
        let none: &[&str] = &[];
        Ok(AuditFamilies {
            queue: int_gauge(
                "mcpgw_audit_queue_events",
                "Events in the in-memory queue",
                none,
            )?,
            capacity: int_gauge(
                "mcpgw_audit_queue_capacity_events",
                "Size of the in-memory queue",
                none,
            )?,
            spool: int_gauge(
                "mcpgw_audit_spool_events",
                "Events in the local spool, waiting to be replayed into PostgreSQL",
                none,
            )?,
            spooled: counter(
                "mcpgw_audit_events_spooled_total",
                "Events written to the local spool",
                none,
            )?,
            written: counter(
                "mcpgw_audit_events_written_total",
                "Events acknowledged by the audit sink",
                none,
            )?,
            duplicates: counter(
                "mcpgw_audit_events_duplicate_total",
                "Of the events written, rows already present (a replay)",
                none,
            )?,
            failures: counter(
                "mcpgw_audit_write_failures_total",
                "Failed batch writes (each is retried; a failure loses nothing)",
                none,
            )?,
            rejected: counter(
                "mcpgw_audit_events_rejected_total",
                "Events the database refused as data (kept in rejected.jsonl)",
                none,
            )?,
            dropped: counter(
                "mcpgw_audit_events_dropped_total",
                "Events neither queued nor spooled (disk full): lost",
                none,
            )?,
            last_write: GaugeVec::new(
                Opts::new(
                    "mcpgw_audit_last_write_duration_seconds",
                    "Duration of the last successful batch write",
                ),
                none,
            )?,
            postgres_up: int_gauge(
                "mcpgw_audit_postgres_up",
                "1 when the last write to PostgreSQL succeeded",
                none,
            )?,
        })
    }

    fn collectors(&self) -> Vec<&dyn Collector> {
        vec![
            &self.queue,
            &self.capacity,
            &self.spool,
            &self.spooled,
            &self.written,
            &self.duplicates,
            &self.failures,
            &self.rejected,
            &self.dropped,
            &self.last_write,
            &self.postgres_up,
        ]
    }

    fn update(&self, a: &crate::audit::Auditor) {
        use mcp_telemetry::prom::mirror;
        let m = a.metrics();
        let none: &[&str] = &[];
        self.queue.with_label_values(none).set(m.queue_depth as i64);
        self.capacity
            .with_label_values(none)
            .set(m.queue_capacity as i64);
        self.spool
            .with_label_values(none)
            .set(m.spooled_events as i64);
        mirror(&self.spooled.with_label_values(none), m.spooled_total);
        mirror(&self.written.with_label_values(none), m.written_total);
        mirror(&self.duplicates.with_label_values(none), m.duplicates_total);
        mirror(&self.failures.with_label_values(none), m.failures_total);
        mirror(&self.rejected.with_label_values(none), m.rejected_total);
        mirror(&self.dropped.with_label_values(none), m.dropped_total);
        self.last_write
            .with_label_values(none)
            .set(m.last_write_latency_ms / 1000.0);
        self.postgres_up
            .with_label_values(none)
            .set(i64::from(m.postgres_up));
    }
}

/// Reads gateway state at scrape time.
pub struct StateCollector {
    gateway: Arc<Gateway>,
    auth: Option<Arc<Authenticator>>,
    audit: Option<Arc<crate::audit::Auditor>>,
    backends: BackendFamilies,
    token_cache: IntCounterVec,
    audit_families: AuditFamilies,
    descs: Vec<Desc>,
}

impl StateCollector {
    pub fn register(
        gateway: Arc<Gateway>,
        auth: Option<Arc<Authenticator>>,
        audit: Option<Arc<crate::audit::Auditor>>,
    ) {
        let build = || -> prometheus::Result<StateCollector> {
            let backends = BackendFamilies::new()?;
            let token_cache = counter(
                "mcpgw_auth_token_cache_lookups_total",
                "Access token cache lookups by result (hit, miss)",
                &["result"],
            )?;
            let audit_families = AuditFamilies::new()?;
            let mut c = StateCollector {
                gateway,
                auth,
                audit,
                backends,
                token_cache,
                audit_families,
                descs: Vec::new(),
            };
            c.descs = c
                .collectors()
                .iter()
                .flat_map(|x| x.desc())
                .cloned()
                .collect();
            Ok(c)
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

    fn collectors(&self) -> Vec<&dyn Collector> {
        let mut all = self.backends.collectors();
        all.push(&self.token_cache);
        if self.audit.is_some() {
            all.extend(self.audit_families.collectors());
        }
        all
    }

    fn update_backends(&self) {
        use mcp_telemetry::prom::mirror;
        let f = &self.backends;
        for b in &self.gateway.backends {
            let l = &[b.name()];
            f.up.with_label_values(l)
                .set(if b.health() == Health::Up { 1.0 } else { 0.0 });
            mirror(
                &f.requests.with_label_values(l),
                b.requests.load(Ordering::Relaxed),
            );
            mirror(
                &f.failures.with_label_values(l),
                b.failures.load(Ordering::Relaxed),
            );
            mirror(
                &f.omitted.with_label_values(l),
                b.omitted.load(Ordering::Relaxed),
            );
            let t = b.transport_status();
            let get = |k: &str| t.get(k).and_then(|v| v.as_u64());
            if let Some(v) = get("restarts") {
                mirror(&f.restarts.with_label_values(l), v);
            }
            if let Some(v) = get("live_connections") {
                f.connections.with_label_values(l).set(v as i64);
            }
            if let Some(v) = get("processes") {
                f.processes.with_label_values(l).set(v as i64);
            }
            if let Some(v) = get("started_total") {
                mirror(&f.started.with_label_values(l), v);
            }
        }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.update_backends();
        if let Some(a) = &self.auth {
            use mcp_telemetry::prom::mirror;
            let c = &self.token_cache;
            mirror(
                &c.with_label_values(&["hit"]),
                a.hits.load(Ordering::Relaxed),
            );
            mirror(
                &c.with_label_values(&["miss"]),
                a.misses.load(Ordering::Relaxed),
            );
        }
        if let Some(a) = &self.audit {
            self.audit_families.update(a);
        }
        self.collectors()
            .into_iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}
