//! Audit log against a real PostgreSQL: the shared one on 127.0.0.1:5432 (database
//! `test`, user `postgres`, trust auth; every test in a schema of its own), and, for
//! the chaos test, a private instance on another port that is stopped and started.
//!
//! No sleep stands in for a condition: waits poll with deadlines.
//!
//! One module per concern: `rows` what lands in the table (every field, the layout, no
//! duplicates, redaction, retention, the writer's rate), `spool` what happens while
//! PostgreSQL is away (spool, crash, chaos), `command` `mcp-gateway audit`, `tls` the
//! connection's certificate check. Shared here: schemas, spools, waits, samples.

mod command;
mod rows;
mod spool;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use mcp_gateway::audit::cli::{self, AuditCliArgs, AuditCommand, StatsArgs, TailArgs};
use mcp_gateway::audit::{AuditConfig, AuditEvent, AuditMetrics, Auditor, FsyncPolicy, REDACTED};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::common::pg::OwnPostgres;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand_suffix()
    )
}

fn rand_suffix() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 6..].to_string()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(unique("audit-test"));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A schema of its own in the shared database, dropped on drop.
struct Schema {
    name: String,
}

impl Schema {
    fn new() -> Schema {
        Schema {
            name: unique("audit_t"),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = connect(PG).await {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// (rows, distinct ids) in `schema.audit_events`; (0, 0) before the table exists.
async fn counts(url: &str, schema: &str) -> (i64, i64) {
    let c = connect(url).await.expect("connect to PostgreSQL");
    match c
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id) FROM \"{schema}\".audit_events"),
            &[],
        )
        .await
    {
        Ok(r) => (r.get(0), r.get(1)),
        Err(e)
            if e.as_db_error()
                .is_some_and(|d| d.code().code() == "42P01" || d.code().code() == "3F000") =>
        {
            (0, 0)
        }
        Err(e) => panic!("counting rows: {e}"),
    }
}

/// Polls `cond` until it holds or `within` passes (then panics with `what`).
async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls the auditor's metrics until `cond` holds or `within` passes (then panics with
/// `what`).
async fn metrics_until(
    auditor: &Auditor,
    within: Duration,
    what: &str,
    cond: impl Fn(&AuditMetrics) -> bool,
) {
    eventually(within, what, || {
        std::future::ready(cond(&auditor.metrics()))
    })
    .await
}

async fn rows_become(url: &str, schema: &str, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    let last = loop {
        let last = counts(url, schema).await;
        if last.0 >= n {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {} rows of {n}",
            last.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last, (n, n), "(rows, distinct ids) after the writes");
}

fn pg_config(url: &str, schema: &Schema, spool: &Path) -> AuditConfig {
    pg_config_in(url, &schema.name, spool)
}

fn pg_config_in(url: &str, schema: &str, spool: &Path) -> AuditConfig {
    AuditConfig {
        postgres_url: Some(url.to_string()),
        schema: schema.to_string(),
        spool_dir: spool.to_path_buf(),
        flush_interval_ms: 20,
        connect_timeout_ms: 2_000,
        write_timeout_ms: 3_000,
        ..AuditConfig::default()
    }
}

/// An auditor writing to a schema of its own (dropped with it), spooling under a
/// temporary directory.
async fn pg_auditor() -> (Schema, TempDir, Arc<Auditor>) {
    let schema = Schema::new();
    let spool = TempDir::new();
    let auditor = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    (schema, spool, auditor)
}

fn sample(i: usize) -> AuditEvent {
    let mut e = AuditEvent::request();
    e.sub = Some(format!("user-{}", i % 7));
    e.email = Some(format!("user-{}@example.com", i % 7));
    e.groups = vec!["eng".into(), "oncall".into()];
    e.client_id = Some("claude-code".into());
    e.session = Some("sess-1".into());
    e.request_id = Some(format!("req-{i}"));
    e.rpc_method = Some("tools/call".into());
    e.backend = Some(if i.is_multiple_of(2) { "alpha" } else { "beta" }.into());
    e.target = Some("echo".into());
    e.http_status = 200;
    e.rpc_error = i.is_multiple_of(10).then_some(-32001);
    e.latency_ms = (i % 100) as f64 / 10.0;
    e.bytes_in = 120;
    e.bytes_out = 480;
    e.source_addr = Some("127.0.0.1:50000".into());
    e.user_agent = Some("test/1".into());
    e
}

/// Instance directories left in a spool (the rejected file aside).
fn spool_dirs(spool: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(spool)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// The indexes of `audit_events` the current migrations leave: "name method (columns)…",
/// and no primary key.
const LAYOUT: [&str; 3] = [
    "audit_events_backend_target btree (backend, target, ts)",
    "audit_events_ts brin (ts) WITH (autosummarize='on')",
    "audit_events_user btree (email, ts, id) NULLS NOT DISTINCT",
];

/// The partitions' user and `(backend, target, ts)` indexes that still have b-tree
/// deduplication on (migration 3 and partition creation turn it off); fails if there
/// are none at all.
async fn deduplicating(c: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    let rows = c
        .query(
            "SELECT c.relname::text, coalesce(c.reloptions @> ARRAY['deduplicate_items=off'], false)
               FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid
               JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE n.nspname = $1
                AND p.relname IN ('audit_events_user', 'audit_events_backend_target')
              ORDER BY 1",
            &[&schema],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "the partitions have secondary indexes");
    rows.iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect()
}

/// "name method (columns)…" of each index of `schema.audit_events`, by name.
async fn index_layout(c: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    c.query(
        "SELECT indexname || ' ' || substring(indexdef from 'USING (.*)$') FROM pg_indexes
          WHERE schemaname = $1 AND tablename = 'audit_events' ORDER BY indexname",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}
