//! How a served answer is shaped for a modern client (2026-07-28): every result gets
//! `resultType`, a read and a list their cache hints (`ttlMs`, `cacheScope`), the answer
//! the client's id, and a call's stream loses what the era does not carry (the server's
//! own requests, log lines nobody asked for).
//!
//! Why the JSON answer is spliced rather than parsed: a modern client's every call comes
//! back through here, and a legacy backend's bytes need only a new id and a key or three
//! in front of the result's, a modern backend's often nothing at all. The answer most
//! servers write is read by its bytes ([`plain`]), any other one with serde but not into
//! values ([`Shape::splice`]); anything unusual takes the parsing path, which says the
//! same.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use self::plain::{EraKeys, Plain};
use super::exchange::Response;
use super::guards::{contains, Needle};
use super::jsonrpc::Method;

mod plain;

/// How often a modern client's call stream gets a comment while it waits, so that a
/// closed stream (the client cancelling) is noticed.
const CALL_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(3);

/// How an answer is shaped for a modern client.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    /// The request set a log level: `notifications/message` may reach it.
    pub log: bool,
    /// Answers depend on who asks (authentication on): `cacheScope` is `private`.
    pub private: bool,
}

impl Shape {
    /// Shapes a served answer to request `id`.
    pub(super) async fn finish(self, resp: Response, id: &Value, method: &Method) -> Response {
        let resp = resp.map_full_body(|body| {
            if self.shaped(&body, id, method) {
                return body;
            }
            let spliced = self
                .splice_plain(&body, id, method)
                .or_else(|| self.splice(&body, id, method));
            match spliced {
                Some(spliced) => spliced.into(),
                None => self.reparse(body, id, method),
            }
        });
        match resp {
            full @ Response::Full { .. } => full,
            Response::Sse { headers, stream } => {
                use futures::StreamExt;
                let (id, method) = (id.clone(), method.clone());
                let mut parser =
                    crate::upstream::sse::Parser::new(crate::upstream::http::MAX_MESSAGE);
                let stream = stream.map(move |chunk| {
                    parser.push(&chunk);
                    let mut out = Vec::new();
                    while let Ok(Some(ev)) = parser.next_event() {
                        let Ok(mut v) = serde_json::from_str::<Value>(&ev.data) else {
                            continue;
                        };
                        if self.keep(&v) {
                            self.message(&mut v, &id, &method);
                            out.extend_from_slice(&crate::upstream::sse::format_event(
                                &crate::upstream::to_bytes(&v),
                            ));
                        }
                    }
                    bytes::Bytes::from(out)
                });
                let stream = stream
                    .filter(|b| futures::future::ready(!b.is_empty()))
                    .boxed();
                Response::Sse {
                    headers,
                    stream: super::stream::with_keepalive(stream, CALL_KEEPALIVE),
                }
            }
        }
    }

    /// Whether the JSON answer is this era's answer to `id` as it is: a modern backend's
    /// to a call that kept the client's id ([`super::call::Call::keeps_client_id`]).
    /// Read once, the result's members skipped but for the era's keys: by its bytes
    /// when it is a plain answer ([`Plain`]), else with serde; any doubt (another id, no
    /// `resultType`, a read without its cache hints) is `false`, and [`Shape::splice`]
    /// makes it one. A legacy backend's answer names no `resultType`: it stops at a byte
    /// search.
    fn shaped(self, body: &[u8], id: &Value, method: &Method) -> bool {
        static RESULT_TYPE: Needle = Needle::new(b"\"resultType\"");
        if !contains(body, &RESULT_TYPE) {
            return false;
        }
        let Ok(ours) = serde_json::to_vec(id) else {
            return false;
        };
        let plain = Plain::read(body);
        match plain.as_ref().and_then(Plain::era_keys) {
            Some(keys) => plain.is_some_and(|p| p.id == ours) && keys.complete_for(method),
            None => Self::shaped_parsed(body, &ours, method),
        }
    }

    /// [`Shape::shaped`] for any answer: read with serde.
    fn shaped_parsed(body: &[u8], ours: &[u8], method: &Method) -> bool {
        #[derive(Deserialize)]
        struct Shaped<'a> {
            #[serde(borrow, default, deserialize_with = "present")]
            jsonrpc: Option<&'a RawValue>,
            #[serde(borrow, default, deserialize_with = "present")]
            id: Option<&'a RawValue>,
            #[serde(borrow, default, deserialize_with = "present")]
            method: Option<&'a RawValue>,
            #[serde(borrow, default)]
            result: Option<Present<'a>>,
        }
        let Ok(answer) = serde_json::from_slice::<Shaped>(body) else {
            return false;
        };
        let (Some(result), None) = (answer.result, answer.method) else {
            return false;
        };
        let same_id = answer.id.is_some_and(|a| a.get().as_bytes() == ours);
        let keys = EraKeys {
            result_type: result.result_type.map(|v| v.get().as_bytes()),
            ttl_ms: result.ttl_ms.map(|v| v.get().as_bytes()),
            cache_scope: result.cache_scope.map(|v| v.get().as_bytes()),
        };
        let jsonrpc = answer.jsonrpc.is_some_and(|v| v.get() == r#""2.0""#);
        jsonrpc && same_id && keys.complete_for(method)
    }

    /// The JSON answer parsed, shaped and written again (what [`Shape::splice`] leaves).
    fn reparse(self, body: bytes::Bytes, id: &Value, method: &Method) -> bytes::Bytes {
        let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        // The one answer of a JSON reply is this request's, whatever id the backend
        // answered with (the gateway's own upstream id).
        if v.get("method").is_none() && v.get("id").is_some() {
            v["id"] = id.clone();
        }
        self.message(&mut v, id, method);
        crate::upstream::to_bytes(&v)
    }

    /// The answer servers write, `{"jsonrpc":"2.0","id":…,"result":{…}}` with its
    /// members in one of the orders [`Plain::read`] knows, spliced by its bytes: the
    /// era's keys put in front of the result's when nothing is escaped and no string
    /// after the result's `{` is a member name the splice reads or adds. Then the answer
    /// has no other `id`, `error` or `method`, and the result none of the era's keys, so
    /// this is what [`Shape::splice`] and [`Shape::reparse`] say, without reading the
    /// result's members (another member beside the result, none of those, is kept as
    /// the parsing path keeps it). Members put in front of an object keep a well-formed
    /// answer well-formed (and a malformed one malformed, as it came). `None` for
    /// anything else.
    fn splice_plain(self, body: &[u8], id: &Value, method: &Method) -> Option<Vec<u8>> {
        const NAMES: [&[u8]; 8] = [
            b"jsonrpc",
            b"id",
            b"method",
            b"result",
            b"error",
            b"resultType",
            b"ttlMs",
            b"cacheScope",
        ];
        let plain = Plain::read(body).filter(|p| p.names_none_of(&NAMES))?;
        let mut out = Vec::with_capacity(body.len() + 64);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        serde_json::to_writer(&mut out, id).ok()?;
        out.extend_from_slice(br#","result":{"#);
        self.put_keys(&mut out, &Present::default(), method, plain.members);
        out.extend_from_slice(plain.close);
        Some(out)
    }

    /// The JSON answer shaped without parsing it into values: its `result` (or `error`)
    /// kept as the backend wrote it, under the client's `id`, with the keys
    /// [`Shape::message`] would add put in front. `None` when the body is anything but a
    /// plain answer (the parsing path takes it).
    fn splice(self, body: &[u8], id: &Value, method: &Method) -> Option<Vec<u8>> {
        let answer: Answer = serde_json::from_slice(body).ok()?;
        if answer.method.is_some() || answer.id.is_none() {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 64);
        out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        serde_json::to_writer(&mut out, id).ok()?;
        match (answer.result, answer.error) {
            (Some(result), None) => {
                out.extend_from_slice(br#","result":"#);
                self.splice_result(&mut out, result.get().as_bytes(), method)?;
            }
            (None, Some(error)) => {
                out.extend_from_slice(br#","error":"#);
                out.extend_from_slice(error.get().as_bytes());
            }
            _ => return None,
        }
        out.push(b'}');
        Some(out)
    }

    /// A result object with the era's keys it lacks put in front; any other result as it is.
    fn splice_result(self, out: &mut Vec<u8>, result: &[u8], method: &Method) -> Option<()> {
        let result = result.trim_ascii();
        let Some(rest) = result.strip_prefix(b"{") else {
            out.extend_from_slice(result);
            return Some(());
        };
        // Most results name none of the era's keys (and escape nothing that could
        // spell one): nothing to look for then.
        static KEYS: [Needle; 3] = [
            Needle::new(b"\"resultType\""),
            Needle::new(b"\"ttlMs\""),
            Needle::new(b"\"cacheScope\""),
        ];
        let plain =
            memchr::memchr(b'\\', result).is_none() && !KEYS.iter().any(|k| contains(result, k));
        let present: Present = match plain {
            true => Present::default(),
            false => serde_json::from_slice(result).ok()?,
        };
        out.push(b'{');
        self.put_keys(out, &present, method, rest);
        Some(())
    }

    /// The era's keys a result lacks (`present`: those it has), then `rest`: what
    /// follows the result's `{`.
    fn put_keys(self, out: &mut Vec<u8>, present: &Present, method: &Method, rest: &[u8]) {
        let mut added: Vec<&[u8]> = Vec::with_capacity(3);
        if present.result_type.is_none() {
            added.push(br#""resultType":"complete""#);
        }
        let complete = present
            .result_type
            .is_none_or(|t| t.get() == r#""complete""#);
        if matches!(method, Method::ResourcesRead) && complete {
            if present.ttl_ms.is_none() {
                added.push(br#""ttlMs":0"#);
            }
            if present.cache_scope.is_none() {
                added.push(match self.private {
                    true => br#""cacheScope":"private""#,
                    false => br#""cacheScope":"public""#,
                });
            }
        }
        for (i, key) in added.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
        }
        let empty = rest.trim_ascii_start().starts_with(b"}");
        if !added.is_empty() && !empty {
            out.push(b',');
        }
        out.extend_from_slice(rest);
    }

    /// Whether a message on a call's stream may reach a modern client: no requests of
    /// the server's own (those are input requests in this era), no log lines unasked.
    fn keep(&self, v: &Value) -> bool {
        match v.get("method").and_then(Value::as_str) {
            None => true,
            Some(_) if v.get("id").is_some_and(|i| !i.is_null()) => false,
            Some("notifications/message") => self.log,
            Some(_) => true,
        }
    }

    /// Shapes the answer to `id` in place; other messages are left alone.
    fn message(&self, v: &mut Value, id: &Value, method: &Method) {
        if v.get("id") != Some(id) {
            return;
        }
        let Some(Value::Object(r)) = v.get_mut("result") else {
            return;
        };
        r.entry("resultType").or_insert_with(|| json!("complete"));
        let cacheable = matches!(method, Method::ResourcesRead)
            && r.get("resultType") == Some(&json!("complete"));
        if cacheable {
            r.entry("ttlMs").or_insert(json!(0));
            let scope = if self.private { "private" } else { "public" };
            r.entry("cacheScope").or_insert(json!(scope));
        }
    }
}

/// A JSON-RPC answer's parts, borrowed from its bytes (a `null` member counts as present).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Which of the era's keys a result object already has (its other members skipped).
#[derive(Deserialize, Default)]
struct Present<'a> {
    #[serde(rename = "resultType", borrow, default, deserialize_with = "present")]
    result_type: Option<&'a RawValue>,
    #[serde(rename = "ttlMs", borrow, default, deserialize_with = "present")]
    ttl_ms: Option<&'a RawValue>,
    #[serde(rename = "cacheScope", borrow, default, deserialize_with = "present")]
    cache_scope: Option<&'a RawValue>,
}

/// A member that is there, whatever its value (`Option`'s own reading makes `null` absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Lists are shaped where they are merged ([`super::fanout`]): the smallest `ttlMs` of
/// the pages, `private` when any page or the caller's filter makes it so.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CacheHints {
    pub ttl_ms: Option<u64>,
    pub private: bool,
}

impl CacheHints {
    /// Takes one backend page's hints into account (a page without them: not cacheable).
    pub(super) fn add_page(&mut self, page: &Value) {
        let ttl = page.get("ttlMs").and_then(Value::as_u64).unwrap_or(0);
        self.ttl_ms = Some(self.ttl_ms.map_or(ttl, |t| t.min(ttl)));
        if page.get("cacheScope").and_then(Value::as_str) == Some("private") {
            self.private = true;
        }
    }

    pub(super) fn write(self, result: &mut serde_json::Map<String, Value>, per_person: bool) {
        result.insert("resultType".into(), json!("complete"));
        result.insert("ttlMs".into(), json!(self.ttl_ms.unwrap_or(0)));
        let scope = if self.private || per_person {
            "private"
        } else {
            "public"
        };
        result.insert("cacheScope".into(), json!(scope));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spliced answer says what the parsed one says, for every kind of answer.
    #[test]
    fn splicing_says_what_parsing_says() {
        let id = json!("client-7");
        let bodies = [
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"content":[{"type":"text","text":"hi"}]}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result": { } }"#,
            r#"{"id":3,"jsonrpc":"2.0","result":{"resultType":"input_required","inputRequests":{}}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"contents":[],"ttlMs":5}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"contents":[],"cacheScope":"private","resultType":"complete"}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"resultType":null}}"#,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"no"}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":[1,2]}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"result\u0054ype":"input_required","a":"x\"y"}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":{"text":"say \"ttlMs\""}}"#,
            r#"{"jsonrpc":"2.0","id":"gw-1","result":"\u00e9\n"}"#,
        ];
        for body in bodies {
            for method in [Method::ToolsCall, Method::ResourcesRead] {
                for private in [false, true] {
                    let shape = Shape {
                        log: false,
                        private,
                    };
                    let spliced = shape
                        .splice(body.as_bytes(), &id, &method)
                        .unwrap_or_else(|| panic!("not spliced: {body}"));
                    let parsed = shape.reparse(body.as_bytes().to_vec().into(), &id, &method);
                    let a: Value = serde_json::from_slice(&spliced).unwrap_or_default();
                    let b: Value = serde_json::from_slice(&parsed).unwrap_or_default();
                    assert_eq!(a, b, "{body} {method}");
                    assert_eq!(a["id"], id);
                }
            }
        }
    }

    /// An answer passed on as it is would be shaped to itself; everything else is not
    /// passed on (a legacy backend's answer, another id, a nested `resultType`, a read
    /// without its cache hints, anything that is not one answer).
    #[test]
    fn only_an_answer_shaping_would_not_change_is_passed_as_it_is() {
        let shape = Shape {
            log: false,
            private: true,
        };
        let call = Method::ToolsCall;
        let read = Method::ResourcesRead;
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"resultType":"complete"}}"#,
                &call,
                true,
            ),
            (
                r#"{"result":{"resultType":"input_required","inputRequests":{}},"id":7,"jsonrpc":"2.0"}"#,
                &call,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"contents":[],"resultType":"complete","ttlMs":5,"cacheScope":"public"}}"#,
                &read,
                true,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"contents":[],"resultType":"complete"}}"#,
                &read,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"gw-1","result":{"resultType":"complete"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":"7","result":{"resultType":"complete"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"structuredContent":{"resultType":"x"}}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"a","resultType":"b"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"id":7,"result":{"resultType":"complete"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"1.0","id":7,"result":{"resultType":"complete"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"method":"x","result":{"resultType":"complete"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"resultType"}}"#,
                &call,
                false,
            ),
            (
                r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete"}"#,
                &call,
                false,
            ),
        ];
        let id = json!(7);
        for (body, method, passed) in cases {
            assert_eq!(shape.shaped(body.as_bytes(), &id, method), passed, "{body}");
            if passed {
                let shaped = shape.reparse(body.as_bytes().to_vec().into(), &id, method);
                let a: Value = serde_json::from_str(body).unwrap_or_default();
                let b: Value = serde_json::from_slice(&shaped).unwrap_or_default();
                assert_eq!(a, b, "{body}");
            }
        }
    }

    /// What is not a plain answer is left to the parsing path.
    #[test]
    fn anything_else_is_parsed() {
        let shape = Shape {
            log: false,
            private: true,
        };
        let id = json!(1);
        for body in [
            r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#,
            r#"{"jsonrpc":"2.0","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"a","resultType":"b"}}"#,
            r#"not json"#,
        ] {
            assert!(
                shape
                    .splice(body.as_bytes(), &id, &Method::ToolsCall)
                    .is_none(),
                "{body}"
            );
        }
    }
}
