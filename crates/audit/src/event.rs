//! One audit record, and the helpers that shape its fields (digest, redaction, limits).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::config::normalize_key;

/// `kind` of the record of one request at the gateway.
pub const KIND_REQUEST: &str = "request";

/// The value that replaces a redacted argument.
pub const REDACTED: &str = "[REDACTED]";

/// One row of the audit log: who did what, with which outcome, at what cost, from where.
///
/// Serialized as one JSON object per line in the file sink and the spool; the same
/// field names are the column names in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUID v7 (time-ordered); the idempotency key of the row (with `ts`).
    pub id: Uuid,
    /// When the request arrived (or the auth event happened), UTC.
    pub ts: DateTime<Utc>,
    /// `"request"` for a gateway request; auth event names (`"login"`, `"token_refresh"`, …).
    pub kind: String,
    pub sub: Option<String>,
    pub email: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    /// MCP session id (or a digest of it: whatever the caller chooses to record).
    pub session: Option<String>,
    pub request_id: Option<String>,
    /// JSON-RPC method (`tools/call`, …).
    pub rpc_method: Option<String>,
    pub backend: Option<String>,
    /// Tool or prompt name, or resource URI.
    pub target: Option<String>,
    /// SHA-256 (hex) of the canonical JSON of the redacted arguments.
    pub args_digest: Option<String>,
    /// The redacted arguments, only with `log_arguments = true`.
    pub args: Option<Value>,
    /// HTTP status answered (0: none was written).
    pub http_status: u16,
    /// JSON-RPC error code of the answer, if it was an error.
    pub rpc_error: Option<i64>,
    pub latency_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub source_addr: Option<String>,
    pub user_agent: Option<String>,
    /// Free text: a refusal reason, an upstream error, an auth failure cause.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// A new event of `kind`, with a fresh UUID v7 and the current time; every other
    /// field empty.
    pub fn new(kind: impl Into<String>) -> AuditEvent {
        AuditEvent::at(kind, Utc::now())
    }

    /// A new event of `kind` that happened at `ts`, with a fresh UUID v7 of that time
    /// (its 74 other bits random: unique without the process-wide counter, a lock shared
    /// by every request thread, that `Uuid::now_v7` uses to order ids within a
    /// millisecond; rows are told apart by `ts` and `id` together, so that order is not needed).
    pub fn at(kind: impl Into<String>, ts: DateTime<Utc>) -> AuditEvent {
        let ms = ts.timestamp_millis().max(0) as u64;
        let stamp =
            uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, (ms % 1000) as u32 * 1_000_000);
        AuditEvent {
            id: Uuid::new_v7(stamp),
            ts,
            kind: kind.into(),
            sub: None,
            email: None,
            groups: Vec::new(),
            client_id: None,
            session: None,
            request_id: None,
            rpc_method: None,
            backend: None,
            target: None,
            args_digest: None,
            args: None,
            http_status: 0,
            rpc_error: None,
            latency_ms: 0.0,
            bytes_in: 0,
            bytes_out: 0,
            source_addr: None,
            user_agent: None,
            detail: None,
        }
    }

    /// `AuditEvent::new("request")`.
    pub fn request() -> AuditEvent {
        AuditEvent::new(KIND_REQUEST)
    }

    /// `AuditEvent::at("request", ts)`.
    pub fn request_at(ts: DateTime<Utc>) -> AuditEvent {
        AuditEvent::at(KIND_REQUEST, ts)
    }

    /// True when the outcome was an error (HTTP ≥ 400 or a JSON-RPC error).
    pub fn is_error(&self) -> bool {
        self.http_status >= 400 || self.rpc_error.is_some()
    }

    /// Bounds every free-text field and removes NUL characters (PostgreSQL's `text`
    /// and `jsonb` cannot hold them), so that no client input can make a row unwritable.
    pub(crate) fn sanitize(&mut self) {
        fn cap(s: &mut Option<String>, max: usize) {
            if let Some(v) = s {
                clean(v, max);
            }
        }
        clean(&mut self.kind, 64);
        for (field, max) in [
            (&mut self.sub, 512),
            (&mut self.email, 512),
            (&mut self.client_id, 512),
            (&mut self.session, 512),
            (&mut self.request_id, 256),
            (&mut self.rpc_method, 256),
            (&mut self.backend, 256),
            (&mut self.target, 2048),
            (&mut self.args_digest, 128),
            (&mut self.source_addr, 256),
            (&mut self.user_agent, 1024),
            (&mut self.detail, 8192),
        ] {
            cap(field, max);
        }
        self.groups.truncate(256);
        for g in &mut self.groups {
            clean(g, 512);
            if g.contains(super::postgres::GROUP_SEP) {
                *g = g.replace(super::postgres::GROUP_SEP, "\u{FFFD}");
            }
        }
        if let Some(a) = &mut self.args {
            clean_value(a);
        }
        if !self.latency_ms.is_finite() || self.latency_ms < 0.0 {
            self.latency_ms = 0.0;
        }
    }
}

fn clean(s: &mut String, max: usize) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn clean_value(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(a) => a.iter_mut().for_each(clean_value),
        Value::Object(o) => {
            if o.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(o);
                for (k, mut v) in old {
                    clean_value(&mut v);
                    o.insert(k.replace('\0', "\u{FFFD}"), v);
                }
            } else {
                o.values_mut().for_each(clean_value);
            }
        }
        _ => {}
    }
}

/// Redacts arguments by key: compiled from `redact_keys`.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    keys: Vec<String>,
}

impl Redactor {
    pub(crate) fn new(keys: &[String]) -> Redactor {
        let mut keys: Vec<String> = keys.iter().map(|k| normalize_key(k)).collect();
        keys.sort();
        keys.dedup();
        Redactor { keys }
    }

    /// A key matches when, lowercased and stripped of everything but letters and
    /// digits, it equals or ends with an entry (normalized the same way): with
    /// `token`, `access_token`, `X-Auth-Token` and `githubToken` all match.
    pub(crate) fn matches(&self, key: &str) -> bool {
        let k = normalize_key(key);
        self.keys.iter().any(|e| k.ends_with(e.as_str()))
    }

    pub(crate) fn redact(&self, v: &Value) -> Value {
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| {
                        let v = if self.matches(k) {
                            Value::String(REDACTED.into())
                        } else {
                            self.redact(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.redact(v)).collect()),
            other => other.clone(),
        }
    }
}

/// SHA-256 (hex) of the canonical JSON of `v`: object keys sorted at every level, no
/// insignificant whitespace, so equal arguments give equal digests whatever their order.
pub fn digest(v: &Value) -> String {
    digest_with(v, None)
}

/// `digest(&redactor.redact(v))`, without building the redacted copy.
pub(crate) fn digest_redacted(v: &Value, redactor: &Redactor) -> String {
    digest_with(v, Some(redactor))
}

fn digest_with(v: &Value, redactor: Option<&Redactor>) -> String {
    let mut buf = Vec::with_capacity(256);
    canonical(v, redactor, &mut buf);
    let sum = Sha256::digest(&buf);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in sum {
        hex.push(HEX[(b >> 4) as usize] as char);
        hex.push(HEX[(b & 15) as usize] as char);
    }
    hex
}

/// Appends the JSON of a scalar or a string (writing to a Vec cannot fail).
fn json_into(v: &impl Serialize, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, v);
}

fn canonical(v: &Value, redactor: Option<&Redactor>, out: &mut Vec<u8>) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_into(k, out);
                out.push(b':');
                if redactor.is_some_and(|r| r.matches(k)) {
                    json_into(&REDACTED, out);
                } else {
                    canonical(&o[k], redactor, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, redactor, out);
            }
            out.push(b']');
        }
        other => json_into(other, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_ignores_key_order() {
        assert_eq!(
            digest(&json!({"a": 1, "b": [1, {"y": 2, "x": 1}]})),
            digest(&json!({"b": [1, {"x": 1, "y": 2}], "a": 1}))
        );
        assert_ne!(digest(&json!({"a": 1})), digest(&json!({"a": 2})));
        assert_eq!(digest(&json!({})).len(), 64);
    }

    #[test]
    fn redacted_digest_equals_the_digest_of_the_redacted_copy() {
        let r = Redactor::new(&["token".to_string(), "password".to_string()]);
        for v in [
            json!({"text": "hi", "api_token": "s3cret", "nested": [{"password": 1, "x": null}]}),
            json!([{"githubToken": {"deep": true}}, 2.5, "str", false]),
            json!("plain"),
            json!({}),
        ] {
            assert_eq!(digest_redacted(&v, &r), digest(&r.redact(&v)), "{v}");
        }
        assert_ne!(
            digest_redacted(&json!({"token": "a"}), &r),
            digest(&json!({"token": "a"}))
        );
    }

    #[test]
    fn ids_carry_the_event_time_and_do_not_repeat() {
        let ts = DateTime::parse_from_rfc3339("2026-11-27T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let ids: std::collections::HashSet<Uuid> =
            (0..10_000).map(|_| AuditEvent::request_at(ts).id).collect();
        assert_eq!(ids.len(), 10_000);
        let id = ids.into_iter().next().unwrap();
        assert_eq!(id.get_version_num(), 7);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        assert_eq!((secs, nanos), (ts.timestamp() as u64, 123_000_000));
    }

    #[test]
    fn sanitize_strips_nul_and_caps() {
        let mut e = AuditEvent::request();
        e.target = Some(format!("a\0b{}", "é".repeat(5000)));
        e.args = Some(json!({"k\0": ["x\0"]}));
        e.latency_ms = f64::NAN;
        e.sanitize();
        let t = e.target.unwrap();
        assert!(!t.contains('\0') && t.len() <= 2048);
        assert!(!e.args.unwrap().to_string().contains("\\u0000"));
        assert_eq!(e.latency_ms, 0.0);
    }
}
