//! Versioned migrations of the audit schema, applied once each, in order, under an
//! advisory lock, in one transaction.
//!
//! Why apart: the migration list only grows (never edit a released one) and is read by
//! people checking what the table looks like. This module does not create partitions
//! or write rows.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Object;

use super::{sql, PgSink, WriteError};

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

pub(super) const TUNE_INDEXES: &str = tune_indexes!();

impl PgSink {
    pub(super) async fn migrate(&self, client: &mut Object) -> Result<(), WriteError> {
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
}
