//! What `tail` and `stats` share: the filter (`--since`, `--user`, …) as a predicate
//! and as SQL, and the two readers (PostgreSQL, the JSON Lines file).
//!
//! Why apart: both commands must select the same events from either source. This
//! module does not format anything for people.

use std::io::BufRead;
use std::path::Path;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};

use super::super::config::{redact_url, AuditConfig};
use super::super::event::AuditEvent;
use super::super::postgres::connect_once;

#[derive(Default, Clone)]
pub(super) struct Filter {
    pub(super) since: Option<DateTime<Utc>>,
    pub(super) user: Option<String>,
    pub(super) backend: Option<String>,
    pub(super) target: Option<String>,
    pub(super) errors: bool,
}

impl Filter {
    pub(super) fn matches(&self, e: &AuditEvent) -> bool {
        self.since.is_none_or(|s| e.ts >= s)
            && self.user.as_ref().is_none_or(|u| {
                e.sub.as_deref() == Some(u.as_str()) || e.email.as_deref() == Some(u.as_str())
            })
            && self
                .backend
                .as_ref()
                .is_none_or(|b| e.backend.as_deref() == Some(b.as_str()))
            && self
                .target
                .as_ref()
                .is_none_or(|t| e.target.as_deref() == Some(t.as_str()))
            && (!self.errors || e.is_error())
    }

    /// `WHERE …` with positional parameters from `$first`.
    pub(super) fn sql(
        &self,
    ) -> (
        String,
        Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>,
    ) {
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
        if let Some(s) = self.since {
            params.push(Box::new(s));
            clauses.push(format!("ts >= ${}", params.len()));
        }
        if let Some(u) = &self.user {
            params.push(Box::new(u.clone()));
            // An email (what people type) is read from the `(email, ts, id)` index; a
            // sub is looked up in both columns.
            if u.contains('@') {
                clauses.push(format!("email = ${}", params.len()));
            } else {
                clauses.push(format!("(sub = ${0} OR email = ${0})", params.len()));
            }
        }
        if let Some(b) = &self.backend {
            params.push(Box::new(b.clone()));
            clauses.push(format!("backend = ${}", params.len()));
        }
        if let Some(t) = &self.target {
            params.push(Box::new(t.clone()));
            clauses.push(format!("target = ${}", params.len()));
        }
        if self.errors {
            clauses.push("(http_status >= 400 OR rpc_error IS NOT NULL)".into());
        }
        let w = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        (w, params)
    }
}

const COLUMNS: &str = "id, ts, kind, sub, email, groups, client_id, session, request_id, \
    rpc_method, backend, target, args_digest, args, http_status, rpc_error, latency_ms, \
    bytes_in, bytes_out, source_addr, user_agent, detail";

fn event_of(r: &tokio_postgres::Row) -> AuditEvent {
    AuditEvent {
        id: r.get(0),
        ts: r.get(1),
        kind: r.get(2),
        sub: r.get(3),
        email: r.get(4),
        groups: r.get(5),
        client_id: r.get(6),
        session: r.get(7),
        request_id: r.get(8),
        rpc_method: r.get(9),
        backend: r.get(10),
        target: r.get(11),
        args_digest: r.get(12),
        args: r.get(13),
        http_status: r.get::<_, i32>(14).clamp(0, u16::MAX as i32) as u16,
        rpc_error: r.get(15),
        latency_ms: r.get(16),
        bytes_in: r.get::<_, i64>(17).max(0) as u64,
        bytes_out: r.get::<_, i64>(18).max(0) as u64,
        source_addr: r.get(19),
        user_agent: r.get(20),
        detail: r.get(21),
    }
}

pub(super) async fn pg_client(
    cfg: &AuditConfig,
    url: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    connect_once(cfg, url)
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {e}", redact_url(url)))
}

/// How far back [`pg_events`] looks first, in seconds; each next look goes ten times
/// further, and after the last, without a bound.
const LOOK_BACK_SECS: [i64; 7] = [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// Events matching `f`, newest first, at most `limit`.
///
/// No b-tree orders the table by time alone (a BRIN index on `ts` finds time ranges), so
/// "the newest N" is asked of the last 10 s, then 100 s, … until N rows are found or
/// `f.since` (or the start of the table) is reached. The answer is the same as one
/// query over everything: when a window holds N rows, the newest N are all in it.
pub(super) async fn pg_events(
    client: &tokio_postgres::Client,
    schema: &str,
    f: &Filter,
    limit: usize,
) -> anyhow::Result<Vec<AuditEvent>> {
    let limit = limit.min(1_000_000);
    let now = Utc::now();
    let mut cuts = LOOK_BACK_SECS
        .iter()
        .map(|s| now - chrono::Duration::seconds(*s));
    loop {
        let mut g = f.clone();
        // The window's start, never before `--since`; after the last cut, `--since`.
        g.since = match cuts.next() {
            Some(c) => Some(f.since.map_or(c, |s| c.max(s))),
            None => f.since,
        };
        let (w, params) = g.sql();
        let q = format!(
            "SELECT {COLUMNS} FROM \"{schema}\".audit_events {w} \
             ORDER BY ts DESC, id DESC LIMIT {limit}"
        );
        let rows = pg_query(client, &q, &params).await?;
        if rows.len() >= limit || g.since == f.since {
            return Ok(rows.iter().map(event_of).collect());
        }
    }
}

/// Runs `q` with `params`; a PostgreSQL error is put in words for people.
pub(super) async fn pg_query(
    client: &tokio_postgres::Client,
    q: &str,
    params: &[Box<dyn tokio_postgres::types::ToSql + Sync + Send>],
) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as _).collect();
    client
        .query(q, &refs)
        .await
        .map_err(|e| anyhow!("{}", describe_pg_error(&e)))
}

fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) if db.code().code() == "42P01" => {
            "no audit table here: the gateway creates it at its first start with this \
             postgres_url and schema"
                .into()
        }
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// Reads the JSON Lines file, calling `each` for every event that parses.
pub(super) fn scan_file(path: &Path, mut each: impl FnMut(AuditEvent)) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot read the audit file {} (no postgres_url is configured; pass \
             --postgres-url or --config)",
            path.display()
        )
    })?;
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(e) = serde_json::from_str::<AuditEvent>(&line) {
            each(e);
        }
    }
    Ok(())
}
