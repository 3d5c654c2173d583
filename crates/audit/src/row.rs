//! An audit event as one tuple of PostgreSQL's binary COPY format: what the in-memory
//! queue holds in PostgreSQL mode, encoded by the request's own thread.
//!
//! A tuple is a 16-bit field count, then per field a 32-bit length (-1: NULL) and the
//! value in PostgreSQL's binary form (written and read by `tokio-postgres`' `ToSql` and
//! `FromSql`), in the column order of [`COLUMNS`]. Tuples are self-delimiting, so a
//! buffer of them is walked without an index. Decoding back to an [`AuditEvent`] only
//! happens off the fast path: to spool a batch PostgreSQL did not take, or to insert
//! it row by row.

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use uuid::Uuid;

use super::event::AuditEvent;

/// The columns of a tuple, in order (the column list of the COPY statement).
pub(crate) const COLUMNS: &str = "id, ts, kind, sub, email, groups, client_id, session, \
    request_id, rpc_method, backend, target, args_digest, args, http_status, rpc_error, \
    latency_ms, bytes_in, bytes_out, source_addr, user_agent, detail";

const FIELDS: i16 = 22;

/// The start of a binary COPY stream: signature, flags, header extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary COPY stream.
pub(crate) const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Why a buffer could not be read back (a bug, never client input: every value is
/// written by [`encode`]).
#[derive(Debug, thiserror::Error)]
#[error("malformed audit tuple: {0}")]
pub(crate) struct RowError(String);

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn field<T: ToSql>(out: &mut BytesMut, v: &T, ty: Type) -> Result<(), BoxError> {
    let at = out.len();
    out.put_i32(0);
    let len = match v.to_sql(&ty, out)? {
        IsNull::Yes => -1,
        IsNull::No => i32::try_from(out.len() - at - 4)?,
    };
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// A counter as PostgreSQL's `bigint` (saturating).
pub(crate) fn clamp_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Appends `ev` as one tuple. On error `out` is left as it was.
pub(crate) fn encode(ev: &AuditEvent, out: &mut BytesMut) -> Result<(), BoxError> {
    let start = out.len();
    let res = encode_fields(ev, out);
    if res.is_err() {
        out.truncate(start);
    }
    res
}

fn encode_fields(e: &AuditEvent, out: &mut BytesMut) -> Result<(), BoxError> {
    out.put_i16(FIELDS);
    let status = e.http_status as i32;
    let (bytes_in, bytes_out) = (clamp_i64(e.bytes_in), clamp_i64(e.bytes_out));
    field(out, &e.id, Type::UUID)?;
    field(out, &e.ts, Type::TIMESTAMPTZ)?;
    field(out, &e.kind, Type::TEXT)?;
    field(out, &e.sub, Type::TEXT)?;
    field(out, &e.email, Type::TEXT)?;
    field(out, &e.groups, Type::TEXT_ARRAY)?;
    field(out, &e.client_id, Type::TEXT)?;
    field(out, &e.session, Type::TEXT)?;
    field(out, &e.request_id, Type::TEXT)?;
    field(out, &e.rpc_method, Type::TEXT)?;
    field(out, &e.backend, Type::TEXT)?;
    field(out, &e.target, Type::TEXT)?;
    field(out, &e.args_digest, Type::TEXT)?;
    field(out, &e.args, Type::JSONB)?;
    field(out, &status, Type::INT4)?;
    field(out, &e.rpc_error, Type::INT8)?;
    field(out, &e.latency_ms, Type::FLOAT8)?;
    field(out, &bytes_in, Type::INT8)?;
    field(out, &bytes_out, Type::INT8)?;
    field(out, &e.source_addr, Type::TEXT)?;
    field(out, &e.user_agent, Type::TEXT)?;
    field(out, &e.detail, Type::TEXT)?;
    Ok(())
}

/// Walks the first tuple of `buf`, handing each field (`None`: NULL) to `each`;
/// returns the tuple's length.
fn walk<'a>(buf: &'a [u8], mut each: impl FnMut(Option<&'a [u8]>)) -> Result<usize, RowError> {
    let bad = |m: &str| RowError(m.to_string());
    let n = buf
        .get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| bad("truncated field count"))?;
    if n != FIELDS {
        return Err(RowError(format!("{n} fields, expected {FIELDS}")));
    }
    let mut at = 2;
    for _ in 0..FIELDS {
        let len = buf
            .get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| bad("truncated field length"))?;
        at += 4;
        if len < 0 {
            each(None);
            continue;
        }
        let end = at + len as usize;
        each(Some(
            buf.get(at..end).ok_or_else(|| bad("truncated field"))?,
        ));
        at = end;
    }
    Ok(at)
}

/// The tuples of a buffer, one slice each.
pub(crate) fn tuples(mut buf: &[u8]) -> impl Iterator<Item = Result<&[u8], RowError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        match walk(buf, |_| {}) {
            Ok(len) => {
                let (one, rest) = buf.split_at(len);
                buf = rest;
                Some(Ok(one))
            }
            Err(e) => {
                buf = &[];
                Some(Err(e))
            }
        }
    })
}

/// The `ts` of a tuple (its second field), read without decoding the rest.
pub(crate) fn ts_of(tuple: &[u8]) -> Result<DateTime<Utc>, RowError> {
    // Field count (2), the id's length (4) and value (16), the ts's length (4).
    let raw = tuple
        .get(26..34)
        .filter(|_| tuple.get(22..26) == Some(&8i32.to_be_bytes()[..]))
        .ok_or_else(|| RowError("no timestamp".into()))?;
    DateTime::<Utc>::from_sql(&Type::TIMESTAMPTZ, raw).map_err(|e| RowError(e.to_string()))
}

fn get<'a, T: FromSql<'a>>(raw: Option<&'a [u8]>, ty: &Type, name: &str) -> Result<T, RowError> {
    T::from_sql_nullable(ty, raw).map_err(|e| RowError(format!("{name}: {e}")))
}

/// Reads one tuple back.
pub(crate) fn decode(tuple: &[u8]) -> Result<AuditEvent, RowError> {
    let mut f = Vec::with_capacity(FIELDS as usize);
    if walk(tuple, |v| f.push(v))? != tuple.len() {
        return Err(RowError("bytes after the tuple".into()));
    }
    let text = |i: usize, name: &str| get::<Option<String>>(f[i], &Type::TEXT, name);
    let status: i32 = get(f[14], &Type::INT4, "http_status")?;
    let bytes_in: i64 = get(f[17], &Type::INT8, "bytes_in")?;
    let bytes_out: i64 = get(f[18], &Type::INT8, "bytes_out")?;
    Ok(AuditEvent {
        id: get::<Uuid>(f[0], &Type::UUID, "id")?,
        ts: get::<DateTime<Utc>>(f[1], &Type::TIMESTAMPTZ, "ts")?,
        kind: get::<String>(f[2], &Type::TEXT, "kind")?,
        sub: text(3, "sub")?,
        email: text(4, "email")?,
        groups: get::<Vec<String>>(f[5], &Type::TEXT_ARRAY, "groups")?,
        client_id: text(6, "client_id")?,
        session: text(7, "session")?,
        request_id: text(8, "request_id")?,
        rpc_method: text(9, "rpc_method")?,
        backend: text(10, "backend")?,
        target: text(11, "target")?,
        args_digest: text(12, "args_digest")?,
        args: get::<Option<Value>>(f[13], &Type::JSONB, "args")?,
        http_status: u16::try_from(status).map_err(|e| RowError(format!("http_status: {e}")))?,
        rpc_error: get::<Option<i64>>(f[15], &Type::INT8, "rpc_error")?,
        latency_ms: get::<f64>(f[16], &Type::FLOAT8, "latency_ms")?,
        bytes_in: bytes_in.max(0) as u64,
        bytes_out: bytes_out.max(0) as u64,
        source_addr: text(19, "source_addr")?,
        user_agent: text(20, "user_agent")?,
        detail: text(21, "detail")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> AuditEvent {
        let mut e = AuditEvent::request();
        e.sub = Some("1234".into());
        e.email = Some("alice@example.com".into());
        e.groups = vec!["eng".into(), "é, \"quoted\"".into(), String::new()];
        e.client_id = Some("client".into());
        e.session = Some("sess".into());
        e.request_id = Some("req".into());
        e.rpc_method = Some("tools/call".into());
        e.backend = Some("grafana".into());
        e.target = Some("search".into());
        e.args_digest = Some("ab".repeat(32));
        e.args = Some(json!({"q": "x", "n": [1, 2.5, null, {"deep": true}]}));
        e.http_status = 200;
        e.rpc_error = Some(-32602);
        e.latency_ms = 1.25;
        e.bytes_in = 10;
        e.bytes_out = 20;
        e.source_addr = Some("10.0.0.1".into());
        e.user_agent = Some("ua".into());
        e.detail = Some("why".into());
        e
    }

    /// What PostgreSQL keeps of a timestamp: microseconds.
    fn micros(mut e: AuditEvent) -> AuditEvent {
        e.ts = DateTime::from_timestamp_micros(e.ts.timestamp_micros()).unwrap();
        e
    }

    #[test]
    fn tuples_round_trip_and_walk() {
        let (a, b) = (full(), AuditEvent::new("login_ok"));
        let mut buf = BytesMut::new();
        encode(&a, &mut buf).unwrap();
        encode(&b, &mut buf).unwrap();
        let rows: Vec<&[u8]> = tuples(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(decode(rows[0]).unwrap(), micros(a.clone()));
        assert_eq!(decode(rows[1]).unwrap(), micros(b));
        assert_eq!(ts_of(rows[0]).unwrap(), micros(a).ts);
    }

    #[test]
    fn a_torn_buffer_is_an_error_not_a_panic() {
        let mut buf = BytesMut::new();
        encode(&full(), &mut buf).unwrap();
        for cut in [0, 1, 2, 7, 30, buf.len() - 1] {
            let r: Result<Vec<&[u8]>, _> = tuples(&buf[..cut]).collect();
            assert!(cut == 0 || r.is_err(), "cut at {cut}");
        }
        assert!(decode(&buf[..buf.len() - 1]).is_err());
        assert!(ts_of(&buf[..20]).is_err());
    }
}
