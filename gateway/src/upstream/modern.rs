//! Modern backends (2026-07-28): which era a backend speaks, learnt with
//! `server/discover` (or set in its config) and remembered until a failure says
//! otherwise; and the stateless requests spoken to one — `_meta` stamped, `Mcp-Method` /
//! `Mcp-Name` mirrored, no upstream session to open, keep or lose.
//!
//! Not here: the legacy handshake ([`Backend::initialize`] falls back to it).

use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::http::Reply;
use super::{final_response, to_bytes, Backend, Link, UpstreamError};
use crate::config::{BackendProtocol, Transport};
use crate::wire::caps;
use crate::wire::jsonrpc::{self, Method};
use crate::wire::meta;
use crate::wire::version::{self, Era};
use crate::wire::UpstreamSession;

const UNKNOWN: u8 = 0;
const LEGACY: u8 = 1;
const MODERN: u8 = 2;
/// Set in `modern_caps` once a discovery has filled it.
const CAPS_KNOWN: u32 = 1 << 31;

/// The era a backend starts in, from its config.
pub(super) fn initial_era(p: BackendProtocol) -> u8 {
    match p {
        BackendProtocol::Auto => UNKNOWN,
        BackendProtocol::Legacy => LEGACY,
        BackendProtocol::Modern => MODERN,
    }
}

/// What a `server/discover` probe says about a backend.
enum Probe {
    Modern(UpstreamSession),
    /// Not a modern server (or one that speaks no revision the gateway does).
    Legacy,
}

impl Backend {
    /// The era the backend is spoken to in, when known.
    pub fn era(&self) -> Option<Era> {
        match self.era.load(Ordering::Relaxed) {
            LEGACY => Some(Era::Legacy),
            MODERN => Some(Era::Modern),
            _ => None,
        }
    }

    /// Forgets a discovered era after a failure that suggests it changed (a backend
    /// upgraded or rolled back); a configured one stays.
    pub(super) fn forget_era(&self) {
        self.modern_caps.store(0, Ordering::Relaxed);
        if self.config.protocol == BackendProtocol::Auto
            && self.era.swap(UNKNOWN, Ordering::Relaxed) != UNKNOWN
        {
            tracing::info!(
                backend = self.name(),
                "backend's protocol era will be asked again"
            );
        }
    }

    /// The modern "session" of a backend, if it speaks the modern era: found out with
    /// `server/discover` unless already known. `Ok(None)`: speak the legacy era.
    pub(super) async fn modern_session(&self) -> Result<Option<UpstreamSession>, UpstreamError> {
        // STDIO and legacy-SSE backends are spoken to in the legacy era.
        if !matches!(self.config.transport, Transport::Http { .. }) {
            return Ok(None);
        }
        match self.era.load(Ordering::Relaxed) {
            LEGACY => return Ok(None),
            MODERN => {
                let known = self.modern_caps.load(Ordering::Relaxed);
                if known & CAPS_KNOWN != 0 {
                    return Ok(Some(UpstreamSession {
                        id: None,
                        version: version::MODERN_LATEST.to_string(),
                        caps: caps::Caps(known as u16),
                    }));
                }
            }
            _ => {}
        }
        match self.discover().await? {
            Probe::Modern(s) => {
                self.modern_caps
                    .store(CAPS_KNOWN | u32::from(s.caps.0), Ordering::Relaxed);
                if self.era.swap(MODERN, Ordering::Relaxed) != MODERN {
                    tracing::info!(backend = self.name(), "backend speaks protocol 2026-07-28");
                }
                Ok(Some(s))
            }
            Probe::Legacy if self.config.protocol == BackendProtocol::Modern => {
                Err(UpstreamError::Protocol(
                    "it is configured with protocol = \"2026-07-28\" but does not answer server/discover".into(),
                ))
            }
            Probe::Legacy => {
                self.era.store(LEGACY, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Asks the backend `server/discover`; connection failures are errors, anything a
    /// legacy server answers (no session, unknown method) means legacy.
    async fn discover(&self) -> Result<Probe, UpstreamError> {
        let Link::Http(h) = &self.link else {
            return Ok(Probe::Legacy);
        };
        let mut params = json!({});
        stamp_own(&mut params);
        let id = json!("gw-discover");
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": params});
        let extra = meta::headers_for(&Method::ServerDiscover, &params);
        let opened = match h
            .post(None, version::MODERN_LATEST, to_bytes(&body), &extra)
            .await
        {
            Ok(o) => o,
            Err(UpstreamError::Status {
                status: 400..=499, ..
            }) => return Ok(Probe::Legacy),
            Err(UpstreamError::Refused { answer, .. }) => {
                // A modern error (e.g. unsupported version) still names a modern server;
                // one the gateway cannot speak to is spoken to as a legacy one.
                let code = answer.pointer("/error/code").and_then(Value::as_i64);
                if code == Some(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION) {
                    tracing::warn!(backend = self.name(), error = %answer, "backend speaks no modern revision the gateway does");
                }
                return Ok(Probe::Legacy);
            }
            Err(e) => return Err(e),
        };
        let reply = match final_response(opened.reply, &id).await {
            Ok(r) => r,
            Err(UpstreamError::Protocol(_)) => return Ok(Probe::Legacy),
            Err(e) => return Err(e),
        };
        let Some(result) = reply.get("result") else {
            return Ok(Probe::Legacy);
        };
        let speaks = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(version::MODERN_LATEST)));
        if !speaks {
            return Ok(Probe::Legacy);
        }
        Ok(Probe::Modern(UpstreamSession {
            id: None,
            version: version::MODERN_LATEST.to_string(),
            caps: caps::from_json(result.get("capabilities").unwrap_or(&Value::Null)),
        }))
    }

    /// A failure of a stateless request that says the backend no longer speaks the
    /// modern era (a plain 4xx without a JSON-RPC error): asked again, then retried in
    /// whichever era it speaks now.
    pub(super) fn modern_failed(&self, e: UpstreamError) -> UpstreamError {
        match e {
            UpstreamError::Status {
                status: 400 | 404 | 405,
                ..
            } => {
                self.forget_era();
                UpstreamError::SessionExpired
            }
            other => other,
        }
    }

    /// `subscriptions/listen` on a modern backend, opted in to every change notification;
    /// its acknowledgement is skipped.
    pub(super) async fn listen_upstream(
        &self,
        session: &UpstreamSession,
        uris: &[String],
    ) -> Result<Option<super::MessageStream>, UpstreamError> {
        let Link::Http(h) = &self.link else {
            return Ok(None);
        };
        let mut params = listen_params();
        if !uris.is_empty() {
            params["notifications"]["resourceSubscriptions"] = json!(uris);
        }
        let body = json!({"jsonrpc": "2.0", "id": "gw-listen", "method": "subscriptions/listen", "params": params});
        let extra = meta::headers_for(&Method::SubscriptionsListen, &params);
        let opened = h
            .post(None, &session.version, to_bytes(&body), &extra)
            .await
            .map_err(|e| self.modern_failed(e))?;
        match opened.reply {
            Reply::Stream(s) => self.acknowledged(s).await,
            // Answered at once: it has nothing to stream.
            Reply::Json(_) | Reply::Accepted => Ok(None),
        }
    }

    /// A listen stream once the backend has acknowledged it (its first message, within
    /// the backend's timeout): from then on it sends every change it makes, so a
    /// gateway stream waiting on this one may acknowledge its own client. The
    /// acknowledgement itself is not passed on; a first message that is not one (a
    /// server that skips it) is.
    async fn acknowledged(
        &self,
        mut s: super::MessageStream,
    ) -> Result<Option<super::MessageStream>, UpstreamError> {
        let first = tokio::time::timeout(self.config.timeout, s.next())
            .await
            .map_err(|_| UpstreamError::Timeout(self.config.timeout))?;
        match first {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(m)) if is_acknowledgement(&m) => Ok(Some(s)),
            Some(Ok(m)) => Ok(Some(Box::pin(
                futures::stream::once(async move { Ok(m) }).chain(s),
            ))),
        }
    }
}

/// Whether a message is a listen stream's `notifications/subscriptions/acknowledged`.
fn is_acknowledgement(m: &Value) -> bool {
    m.get("method").and_then(Value::as_str) == Some("notifications/subscriptions/acknowledged")
}

/// The params of the gateway's own `subscriptions/listen` to a modern backend (HTTP or
/// STDIO): stamped with the gateway's `_meta`, opted in to every list change.
pub(super) fn listen_params() -> Value {
    let mut params = json!({"notifications": {
        "toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true,
    }});
    stamp_own(&mut params);
    params
}

/// Stamps the params of one of the gateway's own requests to a modern backend (its
/// discovery, listen, health probe) with its own `_meta`: no capabilities, its own
/// identity. The rule is [`ForModern`]'s; these requests are rare enough to be copied.
pub(super) fn stamp_own(params: &mut Value) {
    let none = Value::Null;
    let own = ForModern {
        params,
        caps: &none,
        info: &none,
        stamped: &StampCache::default(),
    };
    if let Ok(stamped) = serde_json::to_value(own) {
        *params = stamped;
    }
}

/// The modern client's `_meta` keys, which mean nothing to a legacy backend.
const MODERN_META: [&str; 4] = [
    meta::PROTOCOL_VERSION,
    meta::CLIENT_CAPABILITIES,
    meta::CLIENT_INFO,
    meta::LOG_LEVEL,
];

/// A modern client's params as a legacy backend gets them: serialized without a copy and
/// without the modern `_meta` keys (an emptied `_meta` left out too). A modern backend's
/// params are stamped instead ([`ForModern`]).
pub struct ForLegacy<'a>(pub &'a Value);

impl Serialize for ForLegacy<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(params) = self.0 else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(None)?;
        for (k, v) in params {
            match v {
                Value::Object(m) if k == "_meta" => {
                    if m.keys().any(|k| !MODERN_META.contains(&k.as_str())) {
                        map.serialize_entry(k, &KeptMeta(m))?;
                    }
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A call's params as a modern backend gets them: serialized without a copy, with the
/// client's metadata put into `_meta` (the protocol version the gateway's; the
/// capabilities and identity the client's, unless the params name their own, else none
/// and the gateway's; every other `_meta` key kept).
pub struct ForModern<'a> {
    pub params: &'a Value,
    pub caps: &'a Value,
    pub info: &'a Value,
    /// The client's stamped `_meta` when the params carry none of their own: the same
    /// for every call of a client, written once.
    pub stamped: &'a StampCache,
}

/// A client's `_meta` as a modern backend gets it ([`ForModern`]), written at its first
/// call. Kept with the client's claims; not part of what they say (equal to any other).
#[derive(Default, Clone)]
pub struct StampCache(std::sync::OnceLock<Box<RawValue>>);

impl PartialEq for StampCache {
    fn eq(&self, _: &StampCache) -> bool {
        true
    }
}

impl std::fmt::Debug for StampCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StampCache")
    }
}

impl Serialize for ForModern<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let empty = EMPTY.get_or_init(Map::new);
        let params = match self.params {
            Value::Object(p) => p,
            _ => empty,
        };
        let kept = match params.get("_meta") {
            Some(Value::Object(m)) => m,
            _ => empty,
        };
        let mut map = s.serialize_map(None)?;
        for (k, v) in params.iter().filter(|(k, _)| *k != "_meta") {
            map.serialize_entry(k, v)?;
        }
        let meta = StampedMeta {
            kept,
            caps: self.caps,
            info: self.info,
        };
        let cache = &self.stamped.0;
        match cache.get() {
            Some(raw) if kept.is_empty() => map.serialize_entry("_meta", raw)?,
            None if kept.is_empty() => match serde_json::value::to_raw_value(&meta) {
                Ok(raw) => map.serialize_entry("_meta", cache.get_or_init(|| raw))?,
                Err(_) => map.serialize_entry("_meta", &meta)?,
            },
            _ => map.serialize_entry("_meta", &meta)?,
        }
        map.end()
    }
}

/// `_meta` stamped for a modern backend ([`ForModern`]).
struct StampedMeta<'a> {
    kept: &'a Map<String, Value>,
    caps: &'a Value,
    info: &'a Value,
}

impl Serialize for StampedMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self
            .kept
            .iter()
            .filter(|(k, _)| *k != meta::PROTOCOL_VERSION)
        {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry(meta::PROTOCOL_VERSION, version::MODERN_LATEST)?;
        if !self.kept.contains_key(meta::CLIENT_CAPABILITIES) {
            match self.caps {
                caps @ Value::Object(_) => map.serialize_entry(meta::CLIENT_CAPABILITIES, caps)?,
                _ => map.serialize_entry(meta::CLIENT_CAPABILITIES, &Map::new())?,
            }
        }
        if !self.kept.contains_key(meta::CLIENT_INFO) {
            match self.info {
                info @ Value::Object(_) => map.serialize_entry(meta::CLIENT_INFO, info)?,
                _ => map.serialize_entry(meta::CLIENT_INFO, &meta::gateway_info())?,
            }
        }
        map.end()
    }
}

/// A `_meta` without the modern client's keys.
struct KeptMeta<'a>(&'a Map<String, Value>);

impl Serialize for KeptMeta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(
            self.0
                .iter()
                .filter(|(k, _)| !MODERN_META.contains(&k.as_str())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_for_a_modern_backend_are_stamped_without_overwriting() {
        use meta::{CLIENT_CAPABILITIES as CAPS, CLIENT_INFO as INFO, PROTOCOL_VERSION as V};
        let caps = json!({"sampling": {}});
        let info = json!({"name": "c", "version": "1"});
        let own = meta::gateway_info();
        let client = [
            (&caps, &info),
            (&Value::Null, &Value::Null),
            (&json!([]), &json!("x")),
        ];
        let cases = [
            (
                json!({"name": "t", "arguments": {"a": [1, {"b": null}]}}),
                [
                    json!({"name": "t", "arguments": {"a": [1, {"b": null}]}, "_meta": {V: version::MODERN_LATEST, CAPS: caps, INFO: info}}),
                    json!({"name": "t", "arguments": {"a": [1, {"b": null}]}, "_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                    json!({"name": "t", "arguments": {"a": [1, {"b": null}]}, "_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                ],
            ),
            (
                // The client's other keys kept, the protocol version the gateway's.
                json!({"name": "t", "_meta": {"progressToken": 7, V: "2025-11-25"}}),
                [
                    json!({"name": "t", "_meta": {"progressToken": 7, V: version::MODERN_LATEST, CAPS: caps, INFO: info}}),
                    json!({"name": "t", "_meta": {"progressToken": 7, V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                    json!({"name": "t", "_meta": {"progressToken": 7, V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                ],
            ),
            (
                // Capabilities and identity the params name are theirs.
                json!({"_meta": {CAPS: {"roots": {}}, INFO: {"name": "p"}}}),
                [
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {"roots": {}}, INFO: {"name": "p"}}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {"roots": {}}, INFO: {"name": "p"}}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {"roots": {}}, INFO: {"name": "p"}}}),
                ],
            ),
            (
                json!({"_meta": 3}),
                [
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: caps, INFO: info}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                ],
            ),
            (
                json!([1, 2]),
                [
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: caps, INFO: info}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                    json!({"_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}}),
                ],
            ),
        ];
        for (i, (caps, info)) in client.into_iter().enumerate() {
            // One client's cache for all its calls: written by the first without `_meta`
            // of its own, read by the rest.
            let cache = StampCache::default();
            for (params, expected) in cases.iter().chain(cases.iter()) {
                let streamed: Value = serde_json::from_slice(
                    &serde_json::to_vec(&ForModern {
                        params,
                        caps,
                        info,
                        stamped: &cache,
                    })
                    .unwrap_or_default(),
                )
                .unwrap_or_default();
                assert_eq!(streamed, expected[i], "{params} with {caps}, {info}");
            }
        }
        // The gateway's own requests: the same rule, with nothing of a client's.
        let mut p = json!({"notifications": {"toolsListChanged": true}});
        stamp_own(&mut p);
        assert_eq!(
            p,
            json!({"notifications": {"toolsListChanged": true}, "_meta": {V: version::MODERN_LATEST, CAPS: {}, INFO: own}})
        );
    }

    #[test]
    fn params_for_a_legacy_backend_lose_the_modern_meta_uncopied() {
        let cases = [
            (
                json!({"name": "t", "arguments": {"a": [1, {"b": null}]}}),
                json!({"name": "t", "arguments": {"a": [1, {"b": null}]}}),
            ),
            (
                json!({"name": "t", "_meta": {meta::LOG_LEVEL: "info"}}),
                json!({"name": "t"}),
            ),
            (
                json!({"name": "t", "_meta": {meta::LOG_LEVEL: "info", meta::CLIENT_INFO: {}, "progressToken": 7, "traceparent": "00-x"}}),
                json!({"name": "t", "_meta": {"progressToken": 7, "traceparent": "00-x"}}),
            ),
            (json!({"_meta": {}}), json!({})),
            (json!({"_meta": 3}), json!({"_meta": 3})),
            (json!([1, 2]), json!([1, 2])),
            (Value::Null, Value::Null),
        ];
        for (p, expected) in cases {
            let streamed: Value =
                serde_json::from_slice(&serde_json::to_vec(&ForLegacy(&p)).unwrap_or_default())
                    .unwrap_or_default();
            assert_eq!(streamed, expected, "{p}");
        }
    }
}
