//! Audit log: one record per request at the gateway (and per auth event at the
//! sidecar), written to PostgreSQL in batches, or to a JSON Lines file when no
//! database is configured.
//!
//! [`Auditor::record`] never waits for the database: the event is encoded on the
//! caller's thread and appended to a bounded in-memory queue ([`queue`]); when the
//! queue is full, or while PostgreSQL is down or slow, events go to an append-only spool
//! on local disk ([`spool`]) and are replayed in order when it is back. Every event
//! carries a UUID v7; fresh batches go in with a binary COPY, replayed ones with
//! `ON CONFLICT DO NOTHING` against the unique `(email, ts, id)`, so a replay never
//! duplicates. The writer runs on a thread of its own (with its own small tokio
//! runtime), so it does not depend on the runtime that started it and never competes
//! with request handling for a worker.

pub mod cli;
mod config;
mod event;
mod file;
mod postgres;
mod queue;
mod row;
mod spool;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{oneshot, watch, Notify};

pub use cli::AuditCliArgs;
pub use config::{
    redact_url, AuditConfig, FsyncPolicy, SpannedTable, TableProblem, DEFAULT_REDACT_KEYS,
};
pub use event::{digest, AuditEvent, KIND_REQUEST, REDACTED};
pub use postgres::MIGRATIONS;

use event::Redactor;
use file::FileSink;
use queue::{Encoding, Queue};
use spool::Spool;

/// Why the auditor could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A configuration value is wrong; `key` is the full key (`audit.batch_size`).
    #[error("`{key}`: {message}")]
    Config { key: String, message: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("audit writer: {0}")]
    Writer(String),
}

/// A snapshot of the auditor's counters (for `/readyz` or a metrics endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditMetrics {
    /// `"postgres"`, `"file"` or `"off"`.
    pub sink: &'static str,
    /// Events in the in-memory queue.
    pub queue_depth: usize,
    pub queue_capacity: usize,
    /// Events in the local spool waiting to be replayed into PostgreSQL.
    pub spooled_events: u64,
    /// Events ever written to the spool by this process.
    pub spooled_total: u64,
    /// Events acknowledged by the sink (rows inserted or already present; lines written).
    pub written_total: u64,
    /// Of those, rows that were already present (a replay of written events).
    pub duplicates_total: u64,
    /// Failed write attempts (each is retried; a failure loses nothing).
    pub failures_total: u64,
    /// Events the database refused as data (kept in `spool_dir/rejected.jsonl`) or
    /// unreadable spool lines (kept there too).
    pub rejected_total: u64,
    /// Events that could be neither queued nor written to disk (disk full): lost.
    pub dropped_total: u64,
    /// Duration of the last successful batch write.
    pub last_write_latency_ms: f64,
    /// The last write to PostgreSQL succeeded.
    pub postgres_up: bool,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    last_latency_us: AtomicU64,
    postgres_up: AtomicBool,
}

/// Where `record` writes when the queue cannot take an event.
enum Direct {
    Off,
    Spool(Arc<Spool>),
    File(Arc<FileSink>),
}

struct Shared {
    cfg: AuditConfig,
    /// The in-memory queue (none with `write_ahead`, or when auditing is off).
    queue: Option<Queue>,
    direct: Direct,
    redactor: Redactor,
    counters: Counters,
    /// Pokes the writer after `record` wrote to the spool itself.
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn append_direct(&self, ev: AuditEvent) {
        let res = match &self.direct {
            Direct::Off => return,
            Direct::Spool(s) => s.append(std::slice::from_ref(&ev)),
            Direct::File(f) => f.append(std::slice::from_ref(&ev)),
        };
        match res {
            Ok(()) => {
                if matches!(self.direct, Direct::File(_)) {
                    self.counters.written.fetch_add(1, Ordering::Relaxed);
                }
                self.wake.notify_one()
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        dropped_total = n,
                        "audit: an event could be neither queued nor written to disk; it is lost"
                    );
                }
            }
        }
    }
}

/// The audit log of one gateway process. Start it once with [`Auditor::start`] and
/// share the `Arc`.
pub struct Auditor {
    shared: Arc<Shared>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Auditor {
    /// Validates the config; with `postgres_url`, prepares the spool, runs migrations and
    /// the partition/retention pass (if PostgreSQL is unreachable, starts anyway,
    /// spooling, and migrates when it is back), adopts a spool left by an earlier
    /// process for replay; without, opens the JSON Lines file. Then starts the writer.
    /// Fails only on configuration or local file-system errors.
    pub async fn start(cfg: AuditConfig) -> Result<Arc<Auditor>, AuditError> {
        cfg.validate()?;
        let (stop, _) = watch::channel(false);
        let redactor = Redactor::new(&cfg.redact_keys);
        if !cfg.enabled {
            let shared = Arc::new(Shared {
                cfg,
                queue: None,
                direct: Direct::Off,
                redactor,
                counters: Counters::default(),
                wake: Notify::new(),
                stop,
            });
            return Ok(Arc::new(Auditor {
                shared,
                done: Mutex::new(None),
            }));
        }
        let (sink, direct, encoding) = match &cfg.postgres_url {
            Some(url) => {
                let pg = postgres::PgSink::new(&cfg, url)?;
                let spool =
                    Spool::open(&cfg.spool_dir, cfg.fsync).map_err(|source| AuditError::Io {
                        what: "cannot use the spool directory",
                        path: cfg.spool_dir.clone(),
                        source,
                    })?;
                (
                    writer::Sink::Postgres(Box::new(pg), spool.clone()),
                    Direct::Spool(spool),
                    Encoding::CopyTuple,
                )
            }
            None => {
                let file = Arc::new(FileSink::open(&cfg.file, cfg.fsync).map_err(|source| {
                    AuditError::Io {
                        what: "cannot open the audit file",
                        path: cfg.file.clone(),
                        source,
                    }
                })?);
                (
                    writer::Sink::File(file.clone()),
                    Direct::File(file),
                    Encoding::JsonLine,
                )
            }
        };
        let queue =
            (!cfg.write_ahead).then(|| Queue::new(encoding, cfg.queue_capacity, cfg.batch_size));
        let stop_rx = stop.subscribe();
        let shared = Arc::new(Shared {
            cfg,
            queue,
            direct,
            redactor,
            counters: Counters::default(),
            wake: Notify::new(),
            stop,
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        writer::spawn(shared.clone(), sink, stop_rx, ready_tx, done_tx)
            .map_err(|e| AuditError::Writer(format!("cannot start the writer thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| AuditError::Writer("the writer thread died while starting".into()))?;
        Ok(Arc::new(Auditor {
            shared,
            done: Mutex::new(Some(done_rx)),
        }))
    }

    /// Records an event. Never waits on the database and never fails the caller: the
    /// event goes to the in-memory queue, or, when that is full (or with
    /// `write_ahead`), is appended to the spool (or the file) before this returns.
    pub fn record(&self, mut ev: AuditEvent) {
        let s = &self.shared;
        if matches!(s.direct, Direct::Off) {
            return;
        }
        ev.sanitize();
        if s.queue.as_ref().is_some_and(|q| q.push(&ev)) {
            // Queued as bytes; the event's strings are freed here, where they were made.
            return;
        }
        s.append_direct(ev);
    }

    /// A copy of `args` with the value of every configured key replaced by
    /// `"[REDACTED]"`, at any depth (objects inside arrays included).
    pub fn redact(&self, args: &Value) -> Value {
        self.shared.redactor.redact(args)
    }

    /// `[audit] log_arguments`.
    pub fn log_arguments(&self) -> bool {
        self.shared.cfg.log_arguments
    }

    /// What to store for a call's arguments: the digest (SHA-256 of the canonical JSON
    /// of the redacted arguments) and, with `log_arguments`, the redacted arguments
    /// (replaced by `{"_truncated": true, "bytes": N}` beyond `max_args_bytes`).
    pub fn arguments(&self, args: &Value) -> (String, Option<Value>) {
        if !self.log_arguments() {
            // The usual case: the digest only, with no redacted copy built.
            return (event::digest_redacted(args, &self.shared.redactor), None);
        }
        let redacted = self.redact(args);
        let d = digest(&redacted);
        let size = serde_json::to_vec(&redacted).map(|v| v.len()).unwrap_or(0);
        if size > self.shared.cfg.max_args_bytes {
            return (
                d,
                Some(serde_json::json!({"_truncated": true, "bytes": size})),
            );
        }
        (d, Some(redacted))
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuditConfig {
        &self.shared.cfg
    }

    pub fn metrics(&self) -> AuditMetrics {
        let s = &self.shared;
        let c = &s.counters;
        let (sink, spooled_events, spooled_total, spool_rejected) = match &s.direct {
            Direct::Off => ("off", 0, 0, 0),
            Direct::File(_) => ("file", 0, 0, 0),
            Direct::Spool(sp) => (
                "postgres",
                sp.pending(),
                sp.spooled_total(),
                sp.rejected_total(),
            ),
        };
        let (queue_depth, queue_capacity) = match &s.queue {
            Some(q) => (q.len(), q.capacity()),
            None => (0, 0),
        };
        AuditMetrics {
            sink,
            queue_depth,
            queue_capacity,
            spooled_events,
            spooled_total,
            written_total: c.written.load(Ordering::Relaxed),
            duplicates_total: c.duplicates.load(Ordering::Relaxed),
            failures_total: c.failures.load(Ordering::Relaxed),
            rejected_total: spool_rejected,
            dropped_total: c.dropped.load(Ordering::Relaxed),
            last_write_latency_ms: c.last_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
            postgres_up: c.postgres_up.load(Ordering::Relaxed),
        }
    }

    /// Stops the writer: writes what is queued (waiting at most `shutdown_timeout_ms`
    /// for PostgreSQL), leaves the rest in the spool, flushes the spool to disk. Events
    /// recorded afterwards go straight to the spool (or the file). Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        self.shared.wake.notify_one();
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(done) = done {
            let bound =
                Duration::from_millis(self.shared.cfg.shutdown_timeout_ms) + Duration::from_secs(5);
            if tokio::time::timeout(bound, done).await.is_err() {
                tracing::error!("audit: the writer did not stop in time");
            }
        }
    }
}

impl Drop for Auditor {
    /// Without `shutdown`, the writer still flushes and stops in the background.
    fn drop(&mut self) {
        let _ = self.shared.stop.send(true);
        self.shared.wake.notify_one();
    }
}
