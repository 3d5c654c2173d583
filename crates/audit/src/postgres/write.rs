//! Writing batches: fresh rows with one binary `COPY`, rows that may be present
//! already (the spool's replay) with one `INSERT … ON CONFLICT DO NOTHING`.
//!
//! Why apart: this is the hot path, tuned for PostgreSQL's CPU per row. This module
//! does not decide when to retry or spool (the writer does) and does not migrate.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use deadpool_postgres::Object;

use super::partitions::month_of;
use super::{classify, PgSink, WriteError, GROUP_SEP};
use crate::event::AuditEvent;
use crate::row;

pub(super) const INSERT: &str = r#"
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
pub(super) const COPY: &str = "COPY {s}.audit_events ({columns}) FROM STDIN (FORMAT binary)";

/// Whether a batch may already be in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Taken from the queue, never sent before: written with COPY.
    Fresh,
    /// From the spool: a write that timed out may have committed, so rows already
    /// present (same id and ts) are skipped.
    MaybeWritten,
}

fn is_missing_partition(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "23514")
}

impl PgSink {
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
