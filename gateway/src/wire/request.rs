//! A 2026-07-28 request read in one pass: its per-request metadata lifted out of
//! `params._meta` while the body is parsed, the client's capabilities and identity kept
//! as the raw JSON text they arrived as.
//!
//! Why: a modern client sends the same metadata with every request. Parsed into values,
//! it cost a modern call more than everything else the era adds; read this way it costs
//! a few comparisons, and the claims made from it are found by its text
//! (`mcp::modern::StatelessClaims`).
//!
//! Only the plain case is read here: one request (an id and a method) whose `_meta`
//! names a protocol version and carries client capabilities as an object. Anything else
//! (a notification, a batch, a duplicate key, metadata missing or of the wrong type) is
//! `None`, and the general path parses it and says what is wrong with it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::jsonrpc::Method;
use super::meta::{CLIENT_CAPABILITIES, CLIENT_INFO, LOG_LEVEL, PROTOCOL_VERSION};
use super::LogLevel;

/// A modern request, read.
#[derive(Debug)]
pub struct ModernRequest<'a> {
    pub id: Value,
    pub method: Method,
    /// The params without the metadata below; the client's other `_meta` keys (its
    /// `progressToken`, trace context, `logLevel` …) stay in `_meta`.
    pub params: Value,
    pub meta: RawMeta<'a>,
}

/// What a modern request says about its client, as sent.
#[derive(Debug)]
pub struct RawMeta<'a> {
    /// `io.modelcontextprotocol/protocolVersion` (checked by the caller).
    pub version: &'a str,
    /// `io.modelcontextprotocol/clientCapabilities`: a JSON object's text.
    pub caps: &'a RawValue,
    /// `io.modelcontextprotocol/clientInfo`'s text, when sent.
    pub info: Option<&'a RawValue>,
    /// `io.modelcontextprotocol/logLevel`, when it names a level.
    pub log_level: Option<LogLevel>,
}

impl<'a> ModernRequest<'a> {
    /// The request in `body`, or `None` when it is anything but the plain case (see the
    /// module's documentation).
    pub fn read(body: &'a [u8]) -> Option<ModernRequest<'a>> {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            jsonrpc: Cow<'a, str>,
            id: Value,
            #[serde(borrow)]
            method: Cow<'a, str>,
            #[serde(borrow)]
            params: Params<'a>,
        }
        let e: Envelope<'a> = serde_json::from_slice(body).ok()?;
        if e.jsonrpc != "2.0" || !matches!(e.id, Value::String(_) | Value::Number(_)) {
            return None;
        }
        Some(ModernRequest {
            id: e.id,
            method: Method::parse(&e.method),
            params: Value::Object(e.params.rest),
            meta: e.params.meta,
        })
    }
}

/// A request's params: its `_meta` read field by field, everything else as values.
struct Params<'a> {
    rest: Map<String, Value>,
    meta: RawMeta<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Params<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of params")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Params<'a>, A::Error> {
                let mut rest = Map::new();
                let mut meta = None;
                while let Some(key) = m.next_key::<Cow<'de, str>>()? {
                    if key == "_meta" {
                        if meta.is_some() {
                            return Err(de::Error::duplicate_field("_meta"));
                        }
                        meta = Some(m.next_value::<Meta<'a>>()?);
                    } else {
                        let v = m.next_value::<Value>()?;
                        if rest.insert(key.into_owned(), v).is_some() {
                            return Err(de::Error::custom("duplicate key in params"));
                        }
                    }
                }
                let Meta { raw, others } = meta.ok_or_else(|| de::Error::missing_field("_meta"))?;
                rest.insert("_meta".into(), Value::Object(others));
                Ok(Params { rest, meta: raw })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `_meta`: the era's keys read, the client's own kept.
struct Meta<'a> {
    raw: RawMeta<'a>,
    others: Map<String, Value>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Meta<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Meta<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of metadata")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Meta<'a>, A::Error> {
                let (mut version, mut caps, mut info) = (None, None, None);
                let mut others = Map::new();
                let twice = || de::Error::custom("duplicate key in _meta");
                while let Some(key) = m.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        // Borrowed: a version with an escape in it goes the general way.
                        PROTOCOL_VERSION if version.is_none() => {
                            version = Some(m.next_value::<&'a str>()?)
                        }
                        CLIENT_CAPABILITIES if caps.is_none() => {
                            caps = Some(m.next_value::<&'a RawValue>()?)
                        }
                        CLIENT_INFO if info.is_none() => {
                            info = Some(m.next_value::<&'a RawValue>()?)
                        }
                        PROTOCOL_VERSION | CLIENT_CAPABILITIES | CLIENT_INFO => return Err(twice()),
                        _ => {
                            let v = m.next_value::<Value>()?;
                            if others.insert(key.into_owned(), v).is_some() {
                                return Err(twice());
                            }
                        }
                    }
                }
                let caps = caps
                    .filter(|c| c.get().starts_with('{'))
                    .ok_or_else(|| de::Error::custom("clientCapabilities is not an object"))?;
                let log_level = others
                    .get(LOG_LEVEL)
                    .and_then(Value::as_str)
                    .and_then(LogLevel::parse);
                Ok(Meta {
                    raw: RawMeta {
                        version: version.ok_or_else(|| de::Error::missing_field("version"))?,
                        caps,
                        info,
                        log_level,
                    },
                    others,
                })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::jsonrpc::Message;
    use crate::wire::meta::RequestMeta;
    use serde_json::json;

    /// The general path's reading of the same body: message, then `RequestMeta::take`.
    fn general(body: &Value) -> (Value, Method, Value, RequestMeta) {
        let Ok(Message::Request { id, method, params }) = Message::from_value(body.clone()) else {
            panic!("not a request: {body}");
        };
        let mut params = params.unwrap_or_default();
        let meta = RequestMeta::take(Some(&mut params)).unwrap();
        (id, method, params, meta)
    }

    #[test]
    fn reads_what_the_general_path_reads() {
        for body in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a__b", "arguments": {"x": [1, {"y": null}]},
                "_meta": {PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {}, CLIENT_INFO: {"name": "c", "version": "1"}}}}),
            json!({"jsonrpc": "2.0", "id": "s-1", "method": "resources/read", "params": {"uri": "file:///\u{e9}\"x\"",
                "_meta": {"progressToken": 7, LOG_LEVEL: "debug", CLIENT_CAPABILITIES: {"roots": {"listChanged": true}}, PROTOCOL_VERSION: "2026-07-28"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {"_meta": {PROTOCOL_VERSION: "2099-01-01", CLIENT_CAPABILITIES: {}}}}),
        ] {
            let text = serde_json::to_vec(&body).unwrap();
            let r = ModernRequest::read(&text).unwrap_or_else(|| panic!("not read: {body}"));
            let (id, method, params, meta) = general(&body);
            assert_eq!(r.id, id);
            assert_eq!(r.method, method);
            assert_eq!(r.params, params, "{body}");
            assert_eq!(r.meta.version, meta.version);
            let caps: Value = serde_json::from_str(r.meta.caps.get()).unwrap();
            assert_eq!(caps, meta.caps);
            let info: Value = r
                .meta
                .info
                .map(|i| serde_json::from_str(i.get()).unwrap())
                .unwrap_or(Value::Null);
            assert_eq!(info, meta.info);
            assert_eq!(r.meta.log_level, meta.log_level);
        }
    }

    #[test]
    fn leaves_anything_unusual_to_the_general_path() {
        let meta = json!({PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {}});
        for body in [
            // Not a request with an id.
            json!({"jsonrpc": "2.0", "method": "tools/list", "params": {"_meta": meta}}),
            json!({"jsonrpc": "2.0", "id": null, "method": "tools/list", "params": {"_meta": meta}}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}),
            json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}]),
            // Metadata missing, incomplete or of the wrong type.
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {PROTOCOL_VERSION: "2026-07-28"}}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {PROTOCOL_VERSION: 7, CLIENT_CAPABILITIES: {}}}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: []}}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}),
        ] {
            let text = serde_json::to_vec(&body).unwrap();
            assert!(ModernRequest::read(&text).is_none(), "{body}");
        }
        // Duplicate keys (the general path keeps the last one).
        let dup = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert!(ModernRequest::read(dup).is_none());
        let dup = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert!(ModernRequest::read(dup).is_none());
        // A version written with an escape (read borrowed, so the general path reads it).
        let escaped = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026\u002d07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert!(ModernRequest::read(escaped).is_none());
    }
}
