//! The PostgreSQL sink: connection pool, versioned migrations, monthly partitions,
//! batched idempotent inserts, retention.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime, Timeouts};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

use super::config::AuditConfig;
use super::event::AuditEvent;
use super::row;
use super::AuditError;

/// Sets `deduplicate_items = off` on each partition's `audit_events_user` and
/// `audit_events_backend_target` index that does not have it yet (a partitioned index
/// cannot carry the option itself). Run by migrations 3 and 4 and after creating
/// partitions. (A unique index skips deduplication for keys it has not seen anyway; the
/// option keeps every partition alike.) A macro, for `concat!`.
macro_rules! tune_indexes {
    () => {
        r#"
DO $tune$
DECLARE idx regclass;
BEGIN
    FOR idx IN
        SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent IN ('{s}.audit_events_user'::regclass,
                               '{s}.audit_events_backend_target'::regclass)
           AND NOT coalesce(c.reloptions @> ARRAY['deduplicate_items=off'], false)
    LOOP
        EXECUTE format('ALTER INDEX %s SET (deduplicate_items = off)', idx);
    END LOOP;
END
$tune$;
"#
    };
}

/// Versioned migrations, applied in order, each once, recorded in
/// `{schema}.audit_schema_migrations`. `{s}` is the schema. Never edit a released one:
/// add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "audit_events, partitioned by month",
        r#"
CREATE TABLE IF NOT EXISTS {s}.audit_events (
    id          uuid             NOT NULL,
    ts          timestamptz      NOT NULL,
    kind        text             NOT NULL,
    sub         text,
    email       text,
    groups      text[]           NOT NULL DEFAULT '{}',
    client_id   text,
    session     text,
    request_id  text,
    rpc_method  text,
    backend     text,
    target      text,
    args_digest text,
    args        jsonb,
    http_status integer          NOT NULL,
    rpc_error   bigint,
    latency_ms  double precision NOT NULL,
    bytes_in    bigint           NOT NULL,
    bytes_out   bigint           NOT NULL,
    source_addr text,
    user_agent  text,
    detail      text,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX IF NOT EXISTS audit_events_ts ON {s}.audit_events (ts DESC);
CREATE INDEX IF NOT EXISTS audit_events_user ON {s}.audit_events (sub, ts DESC);
CREATE INDEX IF NOT EXISTS audit_events_backend_target ON {s}.audit_events (backend, target, ts DESC);
"#,
    ),
    // Three b-trees instead of four, all ascending: every row costs PostgreSQL one index
    // insertion less (about a fifth of its CPU per row), and new rows land at the right
    // edge of each key's range instead of the left. The primary key leads with `ts`, so
    // it also serves "newest first" (a backward scan), which the `ts DESC` index did;
    // the two others are read backwards for "by user / by backend and tool, newest
    // first". Rebuilds the indexes of existing partitions once, at start.
    (
        2,
        "audit_events: primary key (ts, id), ascending indexes",
        r#"
ALTER TABLE {s}.audit_events DROP CONSTRAINT IF EXISTS audit_events_pkey;
ALTER TABLE {s}.audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (ts, id);
DROP INDEX IF EXISTS {s}.audit_events_ts;
DROP INDEX IF EXISTS {s}.audit_events_user;
CREATE INDEX audit_events_user ON {s}.audit_events (sub, ts);
DROP INDEX IF EXISTS {s}.audit_events_backend_target;
CREATE INDEX audit_events_backend_target ON {s}.audit_events (backend, target, ts);
"#,
    ),
    // B-tree deduplication off on the two secondary indexes of every partition. Their
    // keys end with `ts`, so two entries are all but never equal, and deduplication only
    // adds a pass over a full page before each split: ~0.7–0.9 µs of PostgreSQL CPU per
    // row (of ~6–8) on this project's benchmark. Storage options only: no rebuild, a
    // moment's lock per index; partitions made later get the same (`TUNE_INDEXES`).
    (
        3,
        "audit_events: no b-tree deduplication on (sub, ts) and (backend, target, ts)",
        tune_indexes!(),
    ),
    // Two b-trees per row instead of three. The rows come in time order and are read
    // by time ranges, so a BRIN index on `ts` (a few bytes per 128 pages, next to no
    // cost per row) replaces the `(ts, id)` primary key for "since …" and "the last
    // minutes"; idempotency moves to a unique `(email, ts, id)`, which is also the "by
    // user, newest first" index for the form people type (`--user alice@example.com`:
    // the `(sub, ts)` index could not serve `sub = $1 OR email = $1`). PostgreSQL's CPU
    // per row fell by ~1 µs of ~8 on this project's benchmark (+2–3 % throughput with
    // the audit log on). Needs PostgreSQL 15 (`NULLS NOT DISTINCT`: anonymous events
    // have no email). Builds the unique index on every partition, once, at start.
    (
        4,
        "audit_events: BRIN on ts, unique (email, ts, id) instead of primary key (ts, id)",
        concat!(
            r#"
ALTER TABLE {s}.audit_events DROP CONSTRAINT IF EXISTS audit_events_pkey;
DROP INDEX IF EXISTS {s}.audit_events_user;
CREATE UNIQUE INDEX audit_events_user ON {s}.audit_events (email, ts, id) NULLS NOT DISTINCT;
CREATE INDEX audit_events_ts ON {s}.audit_events USING brin (ts) WITH (autosummarize = on);
"#,
            // The new index's partitions, like those made from now on.
            tune_indexes!()
        ),
    ),
];

/// The oldest PostgreSQL the migrations run on (`server_version_num`).
const MIN_SERVER_VERSION: i32 = 150_000;

const TUNE_INDEXES: &str = tune_indexes!();

/// Separator of `groups` on the wire to the INSERT (removed from group names).
pub(crate) const GROUP_SEP: char = '\u{1f}';

const INSERT: &str = r#"
INSERT INTO {s}.audit_events (id, ts, kind, sub, email, groups, client_id, session,
    request_id, rpc_method, backend, target, args_digest, args, http_status, rpc_error,
    latency_ms, bytes_in, bytes_out, source_addr, user_agent, detail)
SELECT id, ts, kind, sub, email,
    CASE WHEN g = '' THEN '{}'::text[] ELSE string_to_array(g, E'\x1f') END,
    client_id, session, request_id, rpc_method, backend, target, args_digest, args,
    http_status, rpc_error, latency_ms, bytes_in, bytes_out, source_addr, user_agent, detail
FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::jsonb[], $15::int4[], $16::int8[], $17::float8[], $18::int8[], $19::int8[],
    $20::text[], $21::text[], $22::text[])
  AS u(id, ts, kind, sub, email, g, client_id, session, request_id, rpc_method, backend,
    target, args_digest, args, http_status, rpc_error, latency_ms, bytes_in, bytes_out,
    source_addr, user_agent, detail)
ON CONFLICT DO NOTHING
"#;

/// Fresh batches (events never sent to PostgreSQL before) go in with `COPY … BINARY`:
/// the cheapest way for the server to take rows, which matters when it shares the
/// gateway's cores. COPY cannot skip duplicates, so anything that may have been written
/// already (the spool's replay) goes through `INSERT` above.
const COPY: &str = "COPY {s}.audit_events ({columns}) FROM STDIN (FORMAT binary)";

/// Whether a batch may already be in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Taken from the queue, never sent before: written with COPY.
    Fresh,
    /// From the spool: a write that timed out may have committed, so rows already
    /// present (same id and ts) are skipped.
    MaybeWritten,
}

/// The partitions of `{schema}.audit_events` (`$1`: the schema).
const LIST_PARTITIONS: &str = "SELECT c.relname::text FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = $1 AND p.relname = 'audit_events'";

/// Why a write did not happen.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The database is down, slow, or not ready: try again later (spool meanwhile).
    Unavailable(String),
    /// The database refused the data itself (a data or integrity error): retrying the
    /// same rows will fail the same way.
    Rejected(String),
    /// A fresh batch met a row already present (handled inside `write`).
    Duplicate,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Unavailable(m) => write!(f, "PostgreSQL unavailable: {m}"),
            WriteError::Rejected(m) => write!(f, "PostgreSQL rejected the rows: {m}"),
            WriteError::Duplicate => write!(f, "a fresh batch holds a row already written"),
        }
    }
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
}

/// Months since year 0 (`year * 12 + month0`): a partition's key.
fn month_of(ts: &DateTime<Utc>) -> i32 {
    ts.year() * 12 + ts.month0() as i32
}

fn month_start(m: i32) -> DateTime<Utc> {
    let (y, mo) = (m.div_euclid(12), m.rem_euclid(12) as u32 + 1);
    Utc.with_ymd_and_hms(y, mo, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn partition_name(m: i32) -> String {
    format!(
        "audit_events_y{:04}m{:02}",
        m.div_euclid(12),
        m.rem_euclid(12) + 1
    )
}

fn parse_partition_name(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("audit_events_y")?;
    let (y, mo) = rest.split_once('m')?;
    let (y, mo) = (y.parse::<i32>().ok()?, mo.parse::<i32>().ok()?);
    (1..=12).contains(&mo).then_some(y * 12 + mo - 1)
}

fn sql(template: &str, schema: &str) -> String {
    template.replace("{s}", &format!("\"{schema}\""))
}

fn classify(e: &tokio_postgres::Error) -> WriteError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        if code.starts_with("22") || (code.starts_with("23") && code != "23514") {
            return WriteError::Rejected(format!("{}: {}", code, db.message()));
        }
        return WriteError::Unavailable(format!("{}: {}", code, db.message()));
    }
    WriteError::Unavailable(e.to_string())
}

fn is_missing_partition(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23514")
}

/// TLS for PostgreSQL: none unless the URL says `sslmode=require` or a CA file is
/// given; then rustls, verifying the server certificate against the Mozilla roots plus
/// `tls_ca_file`.
pub(crate) fn tls_config(
    cfg: &AuditConfig,
    pg: &tokio_postgres::Config,
) -> Result<Option<rustls::ClientConfig>, AuditError> {
    let wanted = pg.get_ssl_mode() == SslMode::Require
        || (cfg.tls_ca_file.is_some() && pg.get_ssl_mode() != SslMode::Disable);
    if !wanted {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &cfg.tls_ca_file {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let err = |m: String| AuditError::Config {
            key: "audit.tls_ca_file".into(),
            message: m,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        for c in certs {
            let c = c.map_err(|e| err(format!("{}: {e}", path.display())))?;
            roots
                .add(c)
                .map_err(|e| err(format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AuditError::Postgres(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(tls))
}

/// Opens one connection (the CLI), spawning its driver on the current runtime.
pub(crate) async fn connect_once(
    cfg: &AuditConfig,
    url: &str,
) -> Result<tokio_postgres::Client, AuditError> {
    let mut pg = cfg.pg_config_of(url)?;
    pg.connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    pg.application_name("mcp-gateway-audit-cli");
    let e = |e: tokio_postgres::Error| AuditError::Postgres(e.to_string());
    let client = match tls_config(cfg, &pg)? {
        None => {
            let (client, conn) = pg.connect(NoTls).await.map_err(e)?;
            tokio::spawn(conn);
            client
        }
        Some(tls) => {
            let (client, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await
                .map_err(e)?;
            tokio::spawn(conn);
            client
        }
    };
    Ok(client)
}

pub(crate) struct PgSink {
    pool: Pool,
    schema: String,
    insert_sql: String,
    copy_sql: String,
    lock_key: String,
    partitions: HashSet<i32>,
    migrated: bool,
    partitions_ahead: u32,
    retention_days: u32,
    connect_timeout: Duration,
    write_timeout: Duration,
}

impl PgSink {
    /// Builds the pool; connects lazily.
    pub(crate) fn new(cfg: &AuditConfig, url: &str) -> Result<PgSink, AuditError> {
        let mut pg = cfg.pg_config_of(url)?;
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        pg.connect_timeout(connect_timeout);
        pg.application_name("mcp-gateway-audit");
        let mc = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match tls_config(cfg, &pg)? {
            None => Manager::from_config(pg, NoTls, mc),
            Some(tls) => {
                Manager::from_config(pg, tokio_postgres_rustls::MakeRustlsConnect::new(tls), mc)
            }
        };
        let pool = Pool::builder(mgr)
            .max_size(cfg.pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(connect_timeout),
                create: Some(connect_timeout),
                recycle: Some(connect_timeout),
            })
            .build()
            .map_err(|e| AuditError::Postgres(format!("connection pool: {e}")))?;
        Ok(PgSink {
            pool,
            schema: cfg.schema.clone(),
            insert_sql: sql(INSERT, &cfg.schema),
            copy_sql: sql(COPY, &cfg.schema).replace("{columns}", row::COLUMNS),
            lock_key: format!("mcp-gateway-audit:{}", cfg.schema),
            partitions: HashSet::new(),
            migrated: false,
            partitions_ahead: cfg.partitions_ahead,
            retention_days: cfg.retention_days,
            connect_timeout,
            write_timeout: Duration::from_millis(cfg.write_timeout_ms),
        })
    }

    async fn client(&self) -> Result<Object, WriteError> {
        self.pool
            .get()
            .await
            .map_err(|e| WriteError::Unavailable(format!("connecting: {e}")))
    }

    async fn timed<T, F>(&self, d: Duration, what: &str, f: F) -> Result<T, WriteError>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match tokio::time::timeout(d, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(WriteError::Unavailable(format!(
                "{what} took longer than {} ms",
                d.as_millis()
            ))),
        }
    }

    /// Runs pending migrations (under an advisory lock, in one transaction), learns the
    /// existing partitions and runs a maintenance pass.
    pub(crate) async fn prepare(&mut self) -> Result<Maintenance, WriteError> {
        let mut client = self.client().await?;
        let res = self.migrate(&mut client).await;
        if res.is_err() {
            let _ = Object::take(client);
            return res.map(|_| Maintenance::default());
        }
        drop(client);
        self.migrated = true;
        self.partitions.clear();
        self.maintain().await
    }

    async fn migrate(&self, client: &mut Object) -> Result<(), WriteError> {
        let t = self.connect_timeout.max(Duration::from_secs(30));
        let tx = self.timed(t, "BEGIN", client.transaction()).await?;
        self.timed(
            t,
            "the migration lock",
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&self.lock_key],
            ),
        )
        .await?;
        // CREATE SCHEMA needs CREATE on the database even when the schema exists: only
        // ask for it when it is missing, so a role that owns just its schema works.
        let has_schema = self
            .timed(
                t,
                "looking up the schema",
                tx.query_opt(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                    &[&self.schema],
                ),
            )
            .await?
            .is_some();
        if !has_schema {
            self.timed(
                t,
                "creating the schema",
                tx.batch_execute(&sql("CREATE SCHEMA IF NOT EXISTS {s}", &self.schema)),
            )
            .await?;
        }
        let setup = sql(
            "CREATE TABLE IF NOT EXISTS {s}.audit_schema_migrations (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());",
            &self.schema,
        );
        self.timed(t, "creating the migrations table", tx.batch_execute(&setup))
            .await?;
        let rows = self
            .timed(
                t,
                "reading migrations",
                tx.query(
                    &sql(
                        "SELECT version FROM {s}.audit_schema_migrations",
                        &self.schema,
                    ),
                    &[],
                ),
            )
            .await?;
        let done: HashSet<i32> = rows.iter().map(|r| r.get::<_, i32>(0)).collect();
        if MIGRATIONS.iter().any(|(v, _, _)| !done.contains(v)) {
            let server = self
                .timed(
                    t,
                    "reading the server version",
                    tx.query_one("SELECT current_setting('server_version_num')::int", &[]),
                )
                .await?
                .try_get::<_, i32>(0)
                .unwrap_or(0);
            if server < MIN_SERVER_VERSION {
                return Err(WriteError::Unavailable(format!(
                    "the audit table needs PostgreSQL 15 or newer (a unique index with NULLS \
                     NOT DISTINCT); this server reports server_version_num {server}"
                )));
            }
        }
        for (version, name, body) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            self.timed(t, "a migration", tx.batch_execute(&sql(body, &self.schema)))
                .await?;
            self.timed(
                t,
                "recording a migration",
                tx.execute(
                    &sql(
                        "INSERT INTO {s}.audit_schema_migrations (version, name) VALUES ($1, $2)",
                        &self.schema,
                    ),
                    &[version, name],
                ),
            )
            .await?;
            tracing::info!(schema = %self.schema, version, name, "audit: migration applied");
        }
        self.timed(t, "COMMIT", tx.commit()).await
    }

    async fn list_partitions(&self, client: &Object) -> Result<Vec<(String, i32)>, WriteError> {
        let rows = self
            .timed(
                self.write_timeout,
                "listing partitions",
                client.query(LIST_PARTITIONS, &[&self.schema]),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                parse_partition_name(&name).map(|m| (name, m))
            })
            .collect())
    }

    async fn create_partitions(
        &mut self,
        client: &mut Object,
        months: &[i32],
    ) -> Result<Vec<String>, WriteError> {
        let mut created = Vec::new();
        let missing: Vec<i32> = months
            .iter()
            .copied()
            .filter(|m| !self.partitions.contains(m))
            .collect();
        if missing.is_empty() {
            return Ok(created);
        }
        let t = self.write_timeout;
        let tx = self.timed(t, "BEGIN", client.transaction()).await?;
        self.timed(
            t,
            "the partition lock",
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&self.lock_key],
            ),
        )
        .await?;
        let existing: HashSet<i32> = {
            let rows = self
                .timed(
                    t,
                    "listing partitions",
                    tx.query(LIST_PARTITIONS, &[&self.schema]),
                )
                .await?;
            rows.iter()
                .filter_map(|r| parse_partition_name(&r.get::<_, String>(0)))
                .collect()
        };
        for m in &missing {
            if existing.contains(m) {
                continue;
            }
            let name = partition_name(*m);
            let stmt = format!(
                "CREATE TABLE IF NOT EXISTS \"{s}\".\"{name}\" PARTITION OF \"{s}\".audit_events \
                 FOR VALUES FROM ('{from}') TO ('{to}')",
                s = self.schema,
                from = month_start(*m).format("%Y-%m-%d %H:%M:%S+00"),
                to = month_start(*m + 1).format("%Y-%m-%d %H:%M:%S+00"),
            );
            self.timed(t, "creating a partition", tx.batch_execute(&stmt))
                .await?;
            created.push(name);
        }
        if !created.is_empty() {
            self.timed(
                t,
                "tuning the new partitions' indexes",
                tx.batch_execute(&sql(TUNE_INDEXES, &self.schema)),
            )
            .await?;
        }
        self.timed(t, "COMMIT", tx.commit()).await?;
        self.partitions.extend(existing);
        self.partitions.extend(missing);
        for name in &created {
            tracing::info!(schema = %self.schema, partition = %name, "audit: partition created");
        }
        Ok(created)
    }

    /// Creates the partitions of this month and the next `partitions_ahead`, and drops
    /// those wholly older than `retention_days`.
    pub(crate) async fn maintain(&mut self) -> Result<Maintenance, WriteError> {
        let mut client = self.client().await?;
        let res = self.maintain_with(&mut client).await;
        if res.is_err() {
            let _ = Object::take(client);
        }
        res
    }

    async fn maintain_with(&mut self, client: &mut Object) -> Result<Maintenance, WriteError> {
        let mut report = Maintenance::default();
        let existing = self.list_partitions(client).await?;
        self.partitions = existing.iter().map(|(_, m)| *m).collect();
        let now = month_of(&Utc::now());
        let months: Vec<i32> = (0..=self.partitions_ahead as i32)
            .map(|k| now + k)
            .collect();
        report.created = self.create_partitions(client, &months).await?;
        if self.retention_days > 0 {
            let cutoff = Utc::now() - chrono::Duration::days(self.retention_days as i64);
            let t = self.write_timeout;
            for (name, m) in existing {
                // Every row of the partition is before its end.
                if month_start(m + 1) > cutoff {
                    continue;
                }
                let tx = self.timed(t, "BEGIN", client.transaction()).await?;
                self.timed(
                    t,
                    "the partition lock",
                    tx.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))",
                        &[&self.lock_key],
                    ),
                )
                .await?;
                let stmt = format!("DROP TABLE IF EXISTS \"{}\".\"{name}\"", self.schema);
                self.timed(t, "dropping a partition", tx.batch_execute(&stmt))
                    .await?;
                self.timed(t, "COMMIT", tx.commit()).await?;
                self.partitions.remove(&m);
                tracing::info!(
                    schema = %self.schema,
                    partition = %name,
                    retention_days = self.retention_days,
                    "audit: partition dropped (retention)"
                );
                report.dropped.push(name);
            }
        }
        Ok(report)
    }

    /// Writes a batch. `Batch::MaybeWritten` skips rows already present (same id and
    /// ts); a `Batch::Fresh` one that meets a duplicate anyway is written again that
    /// way. Returns the number of rows actually inserted.
    pub(crate) async fn write(
        &mut self,
        events: &[AuditEvent],
        batch: Batch,
    ) -> Result<u64, WriteError> {
        match batch {
            Batch::Fresh => {
                let mut tuples = BytesMut::with_capacity(events.len() * 384);
                for e in events {
                    row::encode(e, &mut tuples)
                        .map_err(|e| WriteError::Rejected(format!("encoding a row: {e}")))?;
                }
                self.write_tuples(&tuples).await
            }
            Batch::MaybeWritten => self.write_rows(Rows::Insert(events)).await,
        }
    }

    /// Writes fresh rows already encoded as COPY tuples (the queue's buffer) with one
    /// COPY; if one of them is already present, writes them again skipping those.
    pub(crate) async fn write_tuples(&mut self, tuples: &[u8]) -> Result<u64, WriteError> {
        match self.write_rows(Rows::Copy(tuples)).await {
            Err(WriteError::Duplicate) => {
                let events = row::tuples(tuples)
                    .map(|t| t.and_then(row::decode))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| WriteError::Rejected(e.to_string()))?;
                self.write_rows(Rows::Insert(&events)).await
            }
            res => res,
        }
    }

    async fn write_rows(&mut self, rows: Rows<'_>) -> Result<u64, WriteError> {
        if rows.is_empty() {
            return Ok(0);
        }
        if !self.migrated {
            self.prepare().await?;
        }
        let mut client = self.client().await?;
        let res = self.write_with(&mut client, rows).await;
        match res {
            Err(WriteError::Unavailable(_)) => {
                // The connection may be in any state: do not reuse it.
                let _ = Object::take(client);
            }
            _ => drop(client),
        }
        res
    }

    async fn write_with(&mut self, client: &mut Object, rows: Rows<'_>) -> Result<u64, WriteError> {
        let mut months = rows.months()?;
        months.sort_unstable();
        months.dedup();
        self.create_partitions(client, &months).await?;
        let text = match rows {
            Rows::Copy(_) => &self.copy_sql,
            Rows::Insert(_) => &self.insert_sql,
        };
        let stmt = match tokio::time::timeout(self.write_timeout, client.prepare_cached(text)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if e.as_db_error()
                    .is_some_and(|d| d.code().code().starts_with("42"))
                {
                    // The table is gone or changed: migrate again before the next try.
                    self.migrated = false;
                }
                return Err(WriteError::Unavailable(e.to_string()));
            }
            Err(_) => {
                return Err(WriteError::Unavailable(format!(
                    "preparing the {} timed out",
                    rows.verb()
                )))
            }
        };
        let started = Instant::now();
        let res = match rows {
            Rows::Copy(tuples) => {
                tokio::time::timeout(self.write_timeout, copy_tuples(client, &stmt, tuples)).await
            }
            Rows::Insert(events) => {
                tokio::time::timeout(self.write_timeout, insert_rows(client, &stmt, events)).await
            }
        };
        match res {
            Ok(Ok(inserted)) => {
                tracing::trace!(
                    inserted,
                    ms = started.elapsed().as_millis() as u64,
                    "audit: batch written"
                );
                Ok(inserted)
            }
            Ok(Err(e)) => {
                if is_missing_partition(&e) {
                    // Someone dropped a partition we knew: relearn before the next try.
                    self.partitions.clear();
                }
                if matches!(rows, Rows::Copy(_)) && is_unique_violation(&e) {
                    return Err(WriteError::Duplicate);
                }
                Err(classify(&e))
            }
            Err(_) => Err(WriteError::Unavailable(format!(
                "the {} took longer than {} ms",
                rows.verb(),
                self.write_timeout.as_millis()
            ))),
        }
    }
}

/// Rows to write, and how.
#[derive(Clone, Copy)]
enum Rows<'a> {
    /// Fresh rows, encoded: one COPY.
    Copy(&'a [u8]),
    /// Rows that may be present already: one INSERT that skips those.
    Insert(&'a [AuditEvent]),
}

impl Rows<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Rows::Copy(t) => t.is_empty(),
            Rows::Insert(e) => e.is_empty(),
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Rows::Copy(_) => "COPY",
            Rows::Insert(_) => "INSERT",
        }
    }

    /// The months (partitions) the rows fall in, with repeats.
    fn months(&self) -> Result<Vec<i32>, WriteError> {
        match self {
            Rows::Insert(events) => Ok(events.iter().map(|e| month_of(&e.ts)).collect()),
            Rows::Copy(tuples) => row::tuples(tuples)
                .map(|t| t.and_then(row::ts_of).map(|ts| month_of(&ts)))
                .collect::<Result<_, _>>()
                .map_err(|e| WriteError::Rejected(e.to_string())),
        }
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23505")
}

/// Encoded tuples as one `COPY … FROM STDIN (FORMAT binary)`.
async fn copy_tuples(
    client: &Object,
    stmt: &tokio_postgres::Statement,
    tuples: &[u8],
) -> Result<u64, tokio_postgres::Error> {
    use futures::SinkExt;
    let sink = client.copy_in::<_, Bytes>(stmt).await?;
    let mut sink = std::pin::pin!(sink);
    let mut data = BytesMut::with_capacity(row::HEADER.len() + tuples.len() + 2);
    data.extend_from_slice(row::HEADER);
    data.extend_from_slice(tuples);
    data.extend_from_slice(row::TRAILER);
    sink.send(data.freeze()).await?;
    sink.finish().await
}

/// The batch as one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`.
async fn insert_rows(
    client: &Object,
    stmt: &tokio_postgres::Statement,
    events: &[AuditEvent],
) -> Result<u64, tokio_postgres::Error> {
    let n = events.len();
    let mut id = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut sub = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut groups = Vec::with_capacity(n);
    let mut client_id = Vec::with_capacity(n);
    let mut session = Vec::with_capacity(n);
    let mut request_id = Vec::with_capacity(n);
    let mut rpc_method = Vec::with_capacity(n);
    let mut backend = Vec::with_capacity(n);
    let mut target = Vec::with_capacity(n);
    let mut args_digest = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut http_status = Vec::with_capacity(n);
    let mut rpc_error = Vec::with_capacity(n);
    let mut latency = Vec::with_capacity(n);
    let mut bytes_in = Vec::with_capacity(n);
    let mut bytes_out = Vec::with_capacity(n);
    let mut source_addr = Vec::with_capacity(n);
    let mut user_agent = Vec::with_capacity(n);
    let mut detail = Vec::with_capacity(n);
    let sep = GROUP_SEP.to_string();
    for e in events {
        id.push(e.id);
        ts.push(e.ts);
        kind.push(e.kind.as_str());
        sub.push(e.sub.as_deref());
        email.push(e.email.as_deref());
        groups.push(e.groups.join(&sep));
        client_id.push(e.client_id.as_deref());
        session.push(e.session.as_deref());
        request_id.push(e.request_id.as_deref());
        rpc_method.push(e.rpc_method.as_deref());
        backend.push(e.backend.as_deref());
        target.push(e.target.as_deref());
        args_digest.push(e.args_digest.as_deref());
        args.push(e.args.as_ref());
        http_status.push(e.http_status as i32);
        rpc_error.push(e.rpc_error);
        latency.push(e.latency_ms);
        bytes_in.push(row::clamp_i64(e.bytes_in));
        bytes_out.push(row::clamp_i64(e.bytes_out));
        source_addr.push(e.source_addr.as_deref());
        user_agent.push(e.user_agent.as_deref());
        detail.push(e.detail.as_deref());
    }
    client
        .execute(
            stmt,
            &[
                &id,
                &ts,
                &kind,
                &sub,
                &email,
                &groups,
                &client_id,
                &session,
                &request_id,
                &rpc_method,
                &backend,
                &target,
                &args_digest,
                &args,
                &http_status,
                &rpc_error,
                &latency,
                &bytes_in,
                &bytes_out,
                &source_addr,
                &user_agent,
                &detail,
            ],
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let ts = Utc.with_ymd_and_hms(2025, 12, 31, 23, 59, 59).unwrap();
        let m = month_of(&ts);
        assert_eq!(partition_name(m), "audit_events_y2025m12");
        assert_eq!(parse_partition_name("audit_events_y2025m12"), Some(m));
        assert_eq!(
            month_start(m + 1),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(parse_partition_name("audit_events_y2025m13"), None);
        assert_eq!(parse_partition_name("other"), None);
    }
}
