//! The PostgreSQL sink: [`PgSink`] holds the pool and the schema's state and runs the
//! other modules' steps in order (migrate, keep partitions, write).
//!
//! Why a directory: the sink has four concerns that change for different reasons
//! (connecting and TLS in [`connect`], versioned migrations in [`migrations`], monthly
//! partitions and retention in [`partitions`], COPY/INSERT writes in [`write`]). This
//! module keeps only what they share: the struct, the error type, timeouts and SQL
//! templating. It does not queue, spool or retry: that is the writer's job.

mod connect;
mod migrations;
mod partitions;
mod write;

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use super::config::AuditConfig;
use super::row;
use super::AuditError;

pub(crate) use connect::connect_once;
pub use migrations::MIGRATIONS;
pub(crate) use partitions::Maintenance;
pub(crate) use write::Batch;

/// Separator of `groups` on the wire to the INSERT (removed from group names).
pub(crate) const GROUP_SEP: char = '\u{1f}';

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
        let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
        let pool = connect::pool(cfg, url)?;
        Ok(PgSink {
            pool,
            schema: cfg.schema.clone(),
            insert_sql: sql(write::INSERT, &cfg.schema),
            copy_sql: sql(write::COPY, &cfg.schema).replace("{columns}", row::COLUMNS),
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
}
