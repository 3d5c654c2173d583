//! Audit log against a real PostgreSQL: the shared one on 127.0.0.1:5432 (database
//! `test`, user `postgres`, trust auth; every test in a schema of its own), and, for
//! the chaos test, a private instance on another port that is stopped and started.
//!
//! No sleep stands in for a condition: waits poll with deadlines.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn n_events_make_exactly_n_rows_with_every_field() {
    let (schema, spool, auditor) = pg_auditor().await;
    let mut full = sample(1);
    full.args_digest = Some("ab".repeat(32));
    full.args = Some(json!({"text": "hi", "n": [1, 2]}));
    full.detail = Some("refused by policy".into());
    full.groups = vec!["a b".into(), "c,d".into(), "{e}".into()];
    let full_id = full.id;
    auditor.record(full.clone());
    let mut tasks = Vec::new();
    for t in 0..8 {
        let a = auditor.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                a.record(sample(t * 1000 + i));
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    rows_become(PG, &schema.name, 5001, Duration::from_secs(30)).await;
    let m = auditor.metrics();
    assert_eq!(m.sink, "postgres");
    assert_eq!(m.written_total, 5001);
    assert_eq!(m.dropped_total, 0);
    assert!(m.postgres_up);
    assert!(m.last_write_latency_ms > 0.0);

    // Every field round-trips.
    let c = connect(PG).await.unwrap();
    let r = c
        .query_one(
            &format!(
                "SELECT ts, kind, sub, email, groups, client_id, session, request_id, rpc_method,
                        backend, target, args_digest, args, http_status, rpc_error, latency_ms,
                        bytes_in, bytes_out, source_addr, user_agent, detail
                   FROM \"{}\".audit_events WHERE id = $1",
                schema.name
            ),
            &[&full_id],
        )
        .await
        .unwrap();
    let ts: chrono::DateTime<Utc> = r.get(0);
    assert_eq!(ts.timestamp_micros(), full.ts.timestamp_micros());
    assert_eq!(r.get::<_, String>(1), "request");
    assert_eq!(r.get::<_, Option<String>>(2), full.sub);
    assert_eq!(r.get::<_, Option<String>>(3), full.email);
    assert_eq!(r.get::<_, Vec<String>>(4), full.groups);
    assert_eq!(r.get::<_, Option<String>>(5), full.client_id);
    assert_eq!(r.get::<_, Option<String>>(6), full.session);
    assert_eq!(r.get::<_, Option<String>>(7), full.request_id);
    assert_eq!(r.get::<_, Option<String>>(8), full.rpc_method);
    assert_eq!(r.get::<_, Option<String>>(9), full.backend);
    assert_eq!(r.get::<_, Option<String>>(10), full.target);
    assert_eq!(r.get::<_, Option<String>>(11), full.args_digest);
    assert_eq!(r.get::<_, Option<Value>>(12), full.args);
    assert_eq!(r.get::<_, i32>(13), 200);
    assert_eq!(r.get::<_, Option<i64>>(14), None);
    assert_eq!(r.get::<_, f64>(15), full.latency_ms);
    assert_eq!(r.get::<_, i64>(16), 120);
    assert_eq!(r.get::<_, i64>(17), 480);
    assert_eq!(r.get::<_, Option<String>>(18), full.source_addr);
    assert_eq!(r.get::<_, Option<String>>(19), full.user_agent);
    assert_eq!(r.get::<_, Option<String>>(20), full.detail);

    // Migrations are versioned and ran once; the partition of this month and the
    // next two exist; the indexes exist.
    let v: Vec<i32> = c
        .query(
            &format!(
                "SELECT version FROM \"{}\".audit_schema_migrations",
                schema.name
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(v, vec![1, 2, 3, 4]);
    let parts: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
              WHERE n.nspname = $1 AND p.relname = 'audit_events'",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parts, 3);
    assert_eq!(index_layout(&c, &schema.name).await, LAYOUT);
    assert_eq!(
        deduplicating(&c, &schema.name).await,
        Vec::<String>::new(),
        "the partitions made at start do not deduplicate their secondary indexes"
    );

    auditor.shutdown().await;
    assert!(
        spool_dirs(spool.path()).is_empty(),
        "nothing left in the spool"
    );

    // A second start on the same schema migrates nothing and writes on.
    let again = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    again.record(sample(9));
    rows_become(PG, &schema.name, 5002, Duration::from_secs(30)).await;
    again.shutdown().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_made_by_the_first_migration_is_moved_to_the_current_layout() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let c = connect(PG).await.unwrap();
    // The database as the first release left it: migration 1 only, with rows in it.
    let (version, name, body) = mcp_gateway::audit::MIGRATIONS[0];
    let quoted = format!("\"{}\"", schema.name);
    c.batch_execute(&format!(
        "CREATE SCHEMA {quoted};
         CREATE TABLE {quoted}.audit_schema_migrations (version integer PRIMARY KEY,
             name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
         {}
         CREATE TABLE {quoted}.audit_events_old PARTITION OF {quoted}.audit_events
             FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');",
        body.replace("{s}", &quoted)
    ))
    .await
    .unwrap();
    c.execute(
        &format!("INSERT INTO {quoted}.audit_schema_migrations (version, name) VALUES ($1, $2)"),
        &[&version, &name],
    )
    .await
    .unwrap();
    let old_id = uuid::Uuid::now_v7();
    c.execute(
        &format!(
            "INSERT INTO {quoted}.audit_events (id, ts, kind, http_status, latency_ms, bytes_in, bytes_out)
             VALUES ($1, '2020-01-15T12:00:00Z', 'request', 200, 1.5, 10, 20)"
        ),
        &[&old_id],
    )
    .await
    .unwrap();

    // The current gateway migrates it at start and writes on; the old row stays, and the
    // new key still makes a replayed event a no-op.
    let auditor = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    let e = sample(1);
    auditor.record(e.clone());
    rows_become(PG, &schema.name, 2, Duration::from_secs(30)).await;
    auditor.record(e);
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the replayed event handled",
        |m| m.duplicates_total == 1,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await, (2, 2));
    let kept: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM {quoted}.audit_events WHERE id = $1"),
            &[&old_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, 1,
        "the row written before the migration is still there"
    );
    assert_eq!(index_layout(&c, &schema.name).await, LAYOUT);
    // The partition made under migration 1 carries the new indexes too.
    let on_old: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'audit_events_old'",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(on_old, 3);
    assert_eq!(
        deduplicating(&c, &schema.name).await,
        Vec::<String>::new(),
        "migration 3 turned deduplication off on the existing partitions too"
    );
    auditor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_same_events_never_duplicates() {
    let (schema, _spool, auditor) = pg_auditor().await;
    // One in ten anonymous (no email, no sub): those must not be written twice either.
    let events: Vec<AuditEvent> = (0..1000)
        .map(|i| {
            let mut e = sample(i);
            if i % 10 == 0 {
                (e.sub, e.email) = (None, None);
            }
            e
        })
        .collect();
    for e in &events {
        auditor.record(e.clone());
    }
    rows_become(PG, &schema.name, 1000, Duration::from_secs(30)).await;
    for e in &events {
        auditor.record(e.clone());
    }
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the second 1000 written",
        |m| m.written_total == 2000,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await, (1000, 1000));
    assert_eq!(auditor.metrics().duplicates_total, 1000);
    auditor.shutdown().await;
}

/// A row PostgreSQL refuses as data (here a trigger raising SQLSTATE 22023 for one
/// target) is set aside in `rejected.jsonl`; the rest of its batch is written.
#[tokio::test]
async fn a_row_postgresql_refuses_is_set_aside_and_its_batch_written() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let mut cfg = pg_config(PG, &schema, spool.path());
    // The whole batch in one COPY: the refusal must be isolated inside it.
    cfg.flush_interval_ms = 60_000;
    cfg.batch_size = 100;
    let auditor = Auditor::start(cfg).await.unwrap();
    let c = connect(PG).await.unwrap();
    c.batch_execute(&format!(
        r#"CREATE FUNCTION "{s}".poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF NEW.target = 'poison' THEN
               RAISE EXCEPTION 'poisoned row' USING ERRCODE = '22023';
             END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER poison BEFORE INSERT ON "{s}".audit_events
             FOR EACH ROW EXECUTE FUNCTION "{s}".poison();"#,
        s = schema.name
    ))
    .await
    .unwrap();
    let mut events: Vec<AuditEvent> = (0..100).map(sample).collect();
    events[37].target = Some("poison".into());
    let poisoned = events[37].id;
    for e in events {
        auditor.record(e);
    }
    rows_become(PG, &schema.name, 99, Duration::from_secs(30)).await;
    metrics_until(
        &auditor,
        Duration::from_secs(10),
        "the refused row set aside",
        |m| m.rejected_total == 1,
    )
    .await;
    let rejected = std::fs::read_to_string(spool.path().join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains(&poisoned.to_string()), "{rejected}");
    let m = auditor.metrics();
    assert_eq!((m.written_total, m.dropped_total), (99, 0), "{m:?}");
    auditor.shutdown().await;
}

/// A TCP forwarder to PostgreSQL that can be cut: connections refused (accepted and
/// closed at once) and live ones severed.
struct Switch {
    addr: SocketAddr,
    on: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Switch {
    async fn start(target: &'static str, on: bool) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let on = Arc::new(AtomicBool::new(on));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (on2, conns2) = (on.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !on2.load(Ordering::SeqCst) {
                    drop(down);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Switch { addr, on, conns }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/test", self.addr)
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            for c in self.conns.lock().unwrap().drain(..) {
                c.abort();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_postgres_spools_then_replays_everything() {
    let schema = Schema::new();
    let spool = TempDir::new();
    let switch = Switch::start("127.0.0.1:5432", false).await;
    let mut cfg = pg_config(&switch.url(), &schema, spool.path());
    cfg.queue_capacity = 64; // most events overflow to the spool from `record` itself
    let t0 = Instant::now();
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "start does not wait for PostgreSQL"
    );
    assert!(!auditor.metrics().postgres_up);

    let mut worst = Duration::ZERO;
    for i in 0..3000 {
        let t = Instant::now();
        auditor.record(sample(i));
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_millis(100),
        "record() took {worst:?}"
    );
    metrics_until(
        &auditor,
        Duration::from_secs(20),
        "3000 events in the spool",
        |m| m.spooled_events == 3000,
    )
    .await;
    assert_eq!(counts(PG, &schema.name).await.0, 0);
    let m = auditor.metrics();
    assert!(m.failures_total > 0 && m.dropped_total == 0, "{m:?}");

    // Cut while writing, too: up, then down again mid-replay, then up for good.
    switch.set(true);
    metrics_until(
        &auditor,
        Duration::from_secs(30),
        "the replay to start",
        |m| m.written_total > 0,
    )
    .await;
    switch.set(false);
    for i in 3000..4000 {
        auditor.record(sample(i));
    }
    switch.set(true);
    rows_become(PG, &schema.name, 4000, Duration::from_secs(60)).await;
    metrics_until(&auditor, Duration::from_secs(10), "an empty spool", |m| {
        m.spooled_events == 0
    })
    .await;
    assert!(auditor.metrics().postgres_up);
    auditor.shutdown().await;
    assert!(spool_dirs(spool.path()).is_empty());
}

/// Run as a child process by the crash tests: records events against an unreachable
/// database, says when they are on disk, then waits to be killed.
#[test]
fn crash_child_helper() {
    let Ok(spool) = std::env::var("AUDIT_CRASH_CHILD_SPOOL") else {
        return; // not a child: nothing to do
    };
    let n: usize = std::env::var("AUDIT_CRASH_CHILD_N")
        .unwrap()
        .parse()
        .unwrap();
    let write_ahead = std::env::var("AUDIT_CRASH_CHILD_WAL").is_ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = AuditConfig {
            postgres_url: Some("postgres://postgres@127.0.0.1:1/test".into()),
            spool_dir: spool.into(),
            connect_timeout_ms: 500,
            write_ahead,
            fsync: FsyncPolicy::Never,
            ..AuditConfig::default()
        };
        let a = Auditor::start(cfg).await.unwrap();
        for i in 0..n {
            a.record(sample(i));
        }
        if !write_ahead {
            // Acknowledged to disk = in the spool.
            while a.metrics().spooled_events < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        println!("ACKED {n}");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

async fn crash_and_recover(write_ahead: bool) {
    let schema = Schema::new();
    let spool = TempDir::new();
    let n = 3000;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            // The test's libtest name inside the one `it` binary.
            "audit::crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUDIT_CRASH_CHILD_SPOOL", spool.path())
        .env("AUDIT_CRASH_CHILD_N", n.to_string())
        .envs(write_ahead.then_some(("AUDIT_CRASH_CHILD_WAL", "1")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            // libtest prints "test crash_child_helper ... " on the same line.
            if r.read_line(&mut line).unwrap() == 0 {
                return line;
            }
            if let Some(at) = line.find("ACKED ") {
                return line[at..].to_string();
            }
        }
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("the child acknowledges its events")
        .unwrap();
    assert_eq!(line.trim(), format!("ACKED {n}"));
    // kill -9: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();

    // A write torn by the crash: half a line at the end of the last segment.
    let dirs = spool_dirs(spool.path());
    assert_eq!(dirs.len(), 1, "the dead process's spool directory");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dirs[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segs.sort();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(segs.last().unwrap())
            .unwrap();
        f.write_all(b"{\"id\":\"0190").unwrap();
    }

    let auditor = Auditor::start(pg_config(PG, &schema, spool.path()))
        .await
        .unwrap();
    rows_become(PG, &schema.name, n as i64, Duration::from_secs(60)).await;
    metrics_until(
        &auditor,
        Duration::from_secs(10),
        "the adopted spool removed",
        |m| m.spooled_events == 0 && !dirs[0].exists(),
    )
    .await;
    assert_eq!(
        auditor.metrics().rejected_total,
        1,
        "the torn line is kept aside"
    );
    let rejected = std::fs::read_to_string(spool.path().join("rejected.jsonl")).unwrap();
    assert!(rejected.starts_with("{\"id\":\"0190"));
    auditor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_a_killed_process_is_replayed_at_the_next_start() {
    crash_and_recover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_ahead_loses_nothing_recorded_before_kill_9() {
    crash_and_recover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_events_go_to_a_json_lines_file() {
    let dir = TempDir::new();
    let file = dir.path().join("logs/audit.jsonl");
    let cfg = AuditConfig {
        file: file.clone(),
        fsync: FsyncPolicy::Always,
        ..AuditConfig::default()
    };
    let auditor = Auditor::start(cfg).await.unwrap();
    let events: Vec<AuditEvent> = (0..500).map(sample).collect();
    for e in &events {
        auditor.record(e.clone());
    }
    auditor.shutdown().await;
    assert_eq!(auditor.metrics().sink, "file");
    assert_eq!(auditor.metrics().written_total, 500);
    let text = std::fs::read_to_string(&file).unwrap();
    let got: Vec<AuditEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let key = |e: &AuditEvent| (e.id, e.ts, e.request_id.clone(), e.backend.clone());
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        events.iter().map(key).collect::<Vec<_>>()
    );
    // After shutdown, record still lands in the file.
    auditor.record(sample(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 501);
    assert_eq!(auditor.metrics().written_total, 501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_are_redacted_recursively_and_only_logged_on_request() {
    let dir = TempDir::new();
    let file = dir.path().join("audit.jsonl");
    let args = json!({
        "query": "select 1",
        "password": "hunter2",
        "Authorization": "Bearer abc",
        "nested": {"apiKey": "k", "items": [{"access_token": "t", "keep": 1}], "x-api-key": "z"},
        "github_token": {"deep": "object"},
        "author": "kept"
    });
    let cfg = AuditConfig {
        file: file.clone(),
        log_arguments: true,
        ..AuditConfig::default()
    };
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.log_arguments());
    let r = auditor.redact(&args);
    assert_eq!(
        r,
        json!({
            "query": "select 1",
            "password": REDACTED,
            "Authorization": REDACTED,
            "nested": {"apiKey": REDACTED, "items": [{"access_token": REDACTED, "keep": 1}], "x-api-key": REDACTED},
            "github_token": REDACTED,
            "author": "kept"
        })
    );
    let (digest, logged) = auditor.arguments(&args);
    assert_eq!(logged.as_ref(), Some(&r));
    assert_eq!(digest.len(), 64);
    // The digest is of the redacted arguments: secrets do not change it.
    let mut other = args.clone();
    other["password"] = json!("different");
    assert_eq!(auditor.arguments(&other).0, digest);
    let mut e = sample(0);
    e.args_digest = Some(digest);
    e.args = logged;
    auditor.record(e);
    auditor.shutdown().await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("Bearer"));

    // Default: no arguments stored; custom keys.
    let cfg = AuditConfig {
        file: dir.path().join("b.jsonl"),
        redact_keys: vec!["query".into()],
        max_args_bytes: 64,
        ..AuditConfig::default()
    };
    let plain = Auditor::start(cfg.clone()).await.unwrap();
    assert!(!plain.log_arguments());
    assert_eq!(plain.arguments(&args).1, None);
    assert_eq!(plain.redact(&args)["query"], json!(REDACTED));
    assert_eq!(plain.redact(&args)["password"], json!("hunter2"));
    plain.shutdown().await;
    let big = Auditor::start(AuditConfig {
        log_arguments: true,
        ..cfg
    })
    .await
    .unwrap();
    assert_eq!(
        big.arguments(&json!({"text": "x".repeat(100)})).1.unwrap()["_truncated"],
        json!(true)
    );
    big.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_partitions() {
    let (schema, spool, auditor) = pg_auditor().await;
    let mut old = sample(1);
    old.ts = Utc::now() - chrono::Duration::days(400);
    let old_part = format!("audit_events_y{}", old.ts.format("%Ym%m"));
    auditor.record(old);
    auditor.record(sample(2));
    rows_become(PG, &schema.name, 2, Duration::from_secs(30)).await;
    auditor.shutdown().await;
    let c = connect(PG).await.unwrap();
    async fn table_exists(c: &tokio_postgres::Client, schema: &str, name: &str) -> bool {
        c.query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
            &[&schema, &name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    }
    assert!(
        table_exists(&c, &schema.name, &old_part).await,
        "an old event gets its partition"
    );
    assert_eq!(
        deduplicating(&c, &schema.name).await,
        Vec::<String>::new(),
        "a partition made on demand does not deduplicate its secondary indexes"
    );

    let mut cfg = pg_config(PG, &schema, spool.path());
    cfg.retention_days = 90;
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(
        !table_exists(&c, &schema.name, &old_part).await,
        "dropped at start by retention"
    );
    assert_eq!(counts(PG, &schema.name).await, (1, 1));
    let current = format!("audit_events_y{}", Utc::now().format("%Ym%m"));
    assert!(
        table_exists(&c, &schema.name, &current).await,
        "the current month is kept"
    );
    auditor.shutdown().await;
}

/// `mcp-gateway audit` against PostgreSQL schema `schema`, on a thread of its own (the
/// CLI starts its own runtime): what it printed, or its error.
fn run_cli(schema: &str, command: AuditCommand) -> anyhow::Result<String> {
    let schema = schema.to_string();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        cli::run_to(
            AuditCliArgs {
                postgres_url: Some(PG.into()),
                config: None,
                schema: Some(schema),
                command,
            },
            &cli::expand_env,
            &mut out,
        )
        .map(|()| String::from_utf8(out).unwrap())
    })
    .join()
    .unwrap()
}

/// `tail` asks for the newest rows over growing time windows (no b-tree orders the
/// table by time alone): the answer must be the newest N wherever they lie, across
/// windows and partitions, and `--user` finds people by email or by sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tail_finds_the_newest_events_however_old() {
    let (schema, _spool, auditor) = pg_auditor().await;
    let now = Utc::now();
    // Newest first: 5 now, 3 two hours ago, 2 three days ago, 1 forty days ago.
    let ages = [
        0, 0, 0, 0, 0, 7_200, 7_200, 7_200, 259_200, 259_201, 3_456_000,
    ];
    let events: Vec<AuditEvent> = ages
        .iter()
        .enumerate()
        .map(|(i, age)| {
            let mut e = sample(i);
            e.ts = now - chrono::Duration::seconds(*age) - chrono::Duration::milliseconds(i as i64);
            e.id = AuditEvent::at("request", e.ts).id;
            e
        })
        .collect();
    for e in &events {
        auditor.record(e.clone());
    }
    rows_become(
        PG,
        &schema.name,
        events.len() as i64,
        Duration::from_secs(30),
    )
    .await;
    auditor.shutdown().await;

    let tail = |n: usize, since: Option<&str>, user: Option<&str>| {
        let out = run_cli(
            &schema.name,
            AuditCommand::Tail(TailArgs {
                user: user.map(Into::into),
                backend: None,
                target: None,
                since: since.map(Into::into),
                errors: false,
                limit: n,
                json: true,
                follow: false,
            }),
        )
        .unwrap();
        out.lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).unwrap().id)
            .collect::<Vec<_>>()
    };
    // Oldest first, like tail(1): the given events of `events` (newest first) reversed.
    let newest = |idx: &[usize]| idx.iter().rev().map(|i| events[*i].id).collect::<Vec<_>>();
    assert_eq!(
        tail(5, None, None),
        newest(&[0, 1, 2, 3, 4]),
        "all in the first window"
    );
    assert_eq!(
        tail(9, None, None),
        newest(&[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        "across windows, the newer of two three-day-old events"
    );
    assert_eq!(
        tail(50, None, None),
        newest(&(0..11).collect::<Vec<_>>()),
        "everything"
    );
    assert_eq!(
        tail(50, Some("1d"), None),
        newest(&(0..8).collect::<Vec<_>>()),
        "not before --since"
    );
    // sample(i) belongs to user-{i % 7}: events 3 and 10.
    assert_eq!(
        tail(50, None, Some("user-3@example.com")),
        newest(&[3, 10]),
        "by email"
    );
    assert_eq!(tail(1, None, Some("user-3")), newest(&[3]), "by sub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tail_and_stats_read_postgres_and_the_file() {
    let (schema, _spool, auditor) = pg_auditor().await;
    let mut refused = sample(3);
    refused.http_status = 200;
    refused.rpc_error = Some(-32003);
    refused.detail = Some("refused by policy".into());
    refused.email = Some("carol@example.com".into());
    refused.backend = Some("gamma".into());
    for i in 1..=20 {
        let mut e = sample(i);
        e.rpc_error = None;
        auditor.record(e);
    }
    auditor.record(refused);
    rows_become(PG, &schema.name, 21, Duration::from_secs(30)).await;
    auditor.shutdown().await;

    let run = |command: AuditCommand| run_cli(&schema.name, command);
    let tail = |user: Option<&str>, backend: Option<&str>, json: bool| TailArgs {
        user: user.map(Into::into),
        backend: backend.map(Into::into),
        target: None,
        since: Some("1h".into()),
        errors: false,
        limit: 50,
        json,
        follow: false,
    };
    let out = run(AuditCommand::Tail(tail(
        Some("carol@example.com"),
        None,
        false,
    )))
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("TIME"));
    assert!(
        lines[1].contains("gamma")
            && lines[1].contains("200 -32003")
            && lines[1].contains("refused by policy"),
        "{out}"
    );
    let out = run(AuditCommand::Tail(tail(None, Some("alpha"), true))).unwrap();
    let evs: Vec<AuditEvent> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evs.len(), 10);
    assert!(evs.windows(2).all(|w| w[0].ts <= w[1].ts), "oldest first");
    assert!(evs.iter().all(|e| e.backend.as_deref() == Some("alpha")));

    let stats = StatsArgs {
        since: "1h".into(),
        user: None,
        backend: None,
        top: 20,
        json: true,
    };
    let out = run(AuditCommand::Stats(stats.clone())).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["calls"], 21);
    assert_eq!(v["total"]["errors"], 1);
    let by: &Vec<Value> = v["by_backend_target"].as_array().unwrap();
    assert_eq!(by[0]["key"], json!(["alpha", "echo"]));
    assert_eq!(by[0]["calls"], 10);
    assert!(by
        .iter()
        .any(|r| r["key"] == json!(["gamma", "echo"]) && r["error_rate"] == 1.0));
    assert!(v["by_user"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["key"] == json!(["carol@example.com"])));
    let text = run(AuditCommand::Stats(StatsArgs {
        json: false,
        ..stats.clone()
    }))
    .unwrap();
    assert!(text.contains("21 requests, 1 errors"), "{text}");
    assert!(
        text.contains("BACKEND") && text.contains("P99_MS"),
        "{text}"
    );

    // The same questions of the JSON Lines file, through a config file.
    let dir = TempDir::new();
    let file = dir.path().join("audit.jsonl");
    let fa = Auditor::start(AuditConfig {
        file: file.clone(),
        ..AuditConfig::default()
    })
    .await
    .unwrap();
    for e in &evs {
        fa.record(e.clone());
    }
    fa.shutdown().await;
    let conf = dir.path().join("gateway.toml");
    std::fs::write(
        &conf,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[audit]\nfile = {:?}\n",
            file.display().to_string()
        ),
    )
    .unwrap();
    let out = std::thread::spawn(move || {
        let mut out = Vec::new();
        cli::run_to(
            AuditCliArgs {
                postgres_url: None,
                config: Some(conf),
                schema: None,
                command: AuditCommand::Stats(stats),
            },
            &cli::expand_env,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    })
    .join()
    .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["calls"], 10);
}

/// 20,000 events from 20 tasks over ~10 s; the database is killed after 2.5 s and
/// started again 5 s later. Afterwards: exactly 20,000 rows, no duplicate ids, and no
/// `record` call took long.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_postgres_stopped_and_started_under_load() {
    let pg = Arc::new(
        tokio::task::spawn_blocking(OwnPostgres::start)
            .await
            .unwrap(),
    );
    let url = pg.url();
    let spool = TempDir::new();
    // The private cluster is ours alone: the default schema will do.
    let mut cfg = pg_config_in(&url, "public", spool.path());
    cfg.connect_timeout_ms = 1_000;
    cfg.write_timeout_ms = 2_000;
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.metrics().postgres_up);

    let recorded = Arc::new(AtomicU64::new(0));
    let worst_us = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..20 {
        let (a, recorded, worst_us) = (auditor.clone(), recorded.clone(), worst_us.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0..1000 {
                if i % 10 == 0 {
                    tick.tick().await; // 100 events/s per task: the load spans the outage
                }
                let e = sample(t * 1000 + i);
                let t0 = Instant::now();
                a.record(e);
                worst_us.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                recorded.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The outage, on the recorders' clock.
    tokio::time::sleep_until((started + Duration::from_millis(2500)).into()).await;
    let before = recorded.load(Ordering::Relaxed);
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.down()).await.unwrap();
    let down_at = Instant::now();
    tokio::time::sleep_until((down_at + Duration::from_secs(5)).into()).await;
    let during = recorded.load(Ordering::Relaxed) - before;
    let spooled_while_down = auditor.metrics().spooled_total;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.up()).await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(recorded.load(Ordering::Relaxed), 20_000);
    assert!(
        before > 0 && during > 5_000,
        "events recorded before ({before}) and during ({during}) the outage"
    );
    assert!(spooled_while_down > 0, "the outage made the writer spool");

    rows_become(&url, "public", 20_000, Duration::from_secs(90)).await;
    metrics_until(&auditor, Duration::from_secs(10), "an empty spool", |m| {
        m.spooled_events == 0
    })
    .await;
    let m = auditor.metrics();
    let worst = Duration::from_micros(worst_us.load(Ordering::Relaxed));
    println!(
        "chaos: 20000 rows, outage 5 s with {during} events recorded while down; spooled {} \
         events; worst record() {worst:?}; metrics {m:?}",
        m.spooled_total
    );
    assert!(m.failures_total > 0 && m.dropped_total == 0, "{m:?}");
    assert!(
        worst < Duration::from_millis(100),
        "record() blocked {worst:?}"
    );
    auditor.shutdown().await;
    assert!(spool_dirs(spool.path()).is_empty());
}

/// `ops/scripts/bench-audit.sh`: sustained insert rate of the writer into the shared
/// PostgreSQL. Ignored by default; prints a Markdown table row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_insert_rate() {
    let n: usize = std::env::var("AUDIT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let schema = Schema::new();
    let spool = TempDir::new();
    let mut cfg = pg_config(PG, &schema, spool.path());
    cfg.flush_interval_ms = 100;
    cfg.queue_capacity = 10_000;
    cfg.batch_size = 5_000;
    cfg.write_ahead = std::env::var("AUDIT_BENCH_WRITE_AHEAD").is_ok();
    let auditor = Auditor::start(cfg.clone()).await.unwrap();
    let events: Vec<AuditEvent> = (0..n).map(sample).collect();
    let offered_rate: f64 = std::env::var("AUDIT_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25_000.0);
    let rate = Duration::from_secs_f64(1.0 / offered_rate);
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    for (i, e) in events.into_iter().enumerate() {
        let due = t0 + rate * i as u32;
        if i % 250 == 0 && due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let t = Instant::now();
        auditor.record(e);
        worst = worst.max(t.elapsed());
    }
    let offered = t0.elapsed();
    let a = auditor.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while a.metrics().written_total < n as u64 {
        assert!(
            Instant::now() < deadline,
            "bench timed out: {:?}",
            a.metrics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let total = t0.elapsed();
    let m = auditor.metrics();
    auditor.shutdown().await;
    assert_eq!(counts(PG, &schema.name).await, (n as i64, n as i64));
    println!(
        "| audit writer → PostgreSQL (batch {}, {}) | {n} events | {:.0} events/s sustained | offered {:.0}/s | spooled {} | worst record() {:.2} ms |",
        cfg.batch_size,
        if cfg.write_ahead {
            "write-ahead".to_string()
        } else {
            format!("queue {}", cfg.queue_capacity)
        },
        n as f64 / total.as_secs_f64(),
        n as f64 / offered.as_secs_f64(),
        m.spooled_total,
        worst.as_secs_f64() * 1000.0
    );
}

/// `sslmode=require` verifies the server certificate: the local server's self-signed
/// certificate (CN=localhost) is refused, and trusted once given as `tls_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_server_certificate() {
    let ca = PathBuf::from("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    let c = connect(PG).await.unwrap();
    let ssl: String = c.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let cert: String = c.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    if ssl != "on" || Path::new(&cert) != ca {
        println!(
            "skipped: the local PostgreSQL does not serve {}",
            ca.display()
        );
        return;
    }
    let url = "postgres://postgres@localhost:5432/test?sslmode=require";
    let schema = Schema::new();
    let spool = TempDir::new();
    let untrusted = Auditor::start(pg_config(url, &schema, spool.path()))
        .await
        .unwrap();
    assert!(!untrusted.metrics().postgres_up, "an unknown CA is refused");
    untrusted.shutdown().await;

    let mut cfg = pg_config(url, &schema, spool.path());
    cfg.tls_ca_file = Some(ca);
    let auditor = Auditor::start(cfg).await.unwrap();
    assert!(auditor.metrics().postgres_up);
    auditor.record(sample(1));
    rows_become(PG, &schema.name, 1, Duration::from_secs(30)).await;
    let on_tls: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
              WHERE s.ssl AND a.application_name = 'mcp-gateway-audit'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(on_tls >= 1, "the writer's connection is encrypted");
    auditor.shutdown().await;
}
