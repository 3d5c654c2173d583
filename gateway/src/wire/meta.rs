//! The modern era's per-request metadata (2026-07-28): what a stateless request carries
//! in `params._meta`, and the `Mcp-Method` / `Mcp-Name` headers that mirror its body so
//! that intermediaries can route without parsing it.
//!
//! Why here: the downstream handler validates these, the upstream side stamps them on
//! requests to modern backends; both read the same words.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderName;
use serde_json::{json, Value};

use super::jsonrpc::Method;
use super::LogLevel;

pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// The transport's own headers, as constants (a name given as text is parsed on every
/// lookup).
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// What a modern request says about its client, read once from `params._meta`.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    /// `io.modelcontextprotocol/protocolVersion`, as sent (checked by the caller).
    pub version: String,
    /// `io.modelcontextprotocol/clientCapabilities`.
    pub caps: Value,
    /// `io.modelcontextprotocol/clientInfo` (optional: `Null` when absent).
    pub info: Value,
    /// `io.modelcontextprotocol/logLevel`: log notifications only when set.
    pub log_level: Option<LogLevel>,
}

impl RequestMeta {
    /// Takes the metadata out of a request's params (moved, not copied: what goes
    /// upstream gets it again from the request's claims, [`stamp`], or not at all, a
    /// legacy backend); `Err` names what is missing (answered with -32602 Invalid
    /// params), and leaves the params as they were. `logLevel` stays where it is.
    pub fn take(params: Option<&mut Value>) -> Result<RequestMeta, String> {
        let Some(meta) = params
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        else {
            return Err("params._meta is missing: a 2026-07-28 request carries its protocol version and client capabilities there".into());
        };
        if !matches!(meta.get(PROTOCOL_VERSION), Some(Value::String(_))) {
            return Err(format!(
                "params._meta[{PROTOCOL_VERSION:?}] is missing or not a string"
            ));
        }
        if !matches!(meta.get(CLIENT_CAPABILITIES), Some(Value::Object(_))) {
            return Err(format!(
                "params._meta[{CLIENT_CAPABILITIES:?}] is missing or not an object"
            ));
        }
        let version = match meta.remove(PROTOCOL_VERSION) {
            Some(Value::String(v)) => v,
            _ => String::new(),
        };
        let caps = meta.remove(CLIENT_CAPABILITIES).unwrap_or_default();
        let info = meta.remove(CLIENT_INFO).unwrap_or(Value::Null);
        let log_level = meta
            .get(LOG_LEVEL)
            .and_then(Value::as_str)
            .and_then(LogLevel::parse);
        Ok(RequestMeta {
            version,
            caps,
            info,
            log_level,
        })
    }

    /// Whether the request carries modern metadata at all (its `_meta` names a protocol
    /// version): the mark of a 2026-07-28 request without a header to say so.
    pub fn present(params: Option<&Value>) -> bool {
        params
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(PROTOCOL_VERSION))
            .is_some()
    }
}

/// The gateway's own identity, stamped where a client sent none.
pub fn gateway_info() -> Value {
    json!({"name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// The body value `Mcp-Name` mirrors: `params.name` of `tools/call` and `prompts/get`,
/// `params.uri` of `resources/read`; `None` for other methods.
pub fn name_of<'a>(method: &Method, params: Option<&'a Value>) -> Option<Option<&'a str>> {
    let key = match method {
        Method::ToolsCall | Method::PromptsGet => "name",
        Method::ResourcesRead => "uri",
        _ => return None,
    };
    Some(params.and_then(|p| p.get(key)).and_then(Value::as_str))
}

/// The mirrored headers of a request to a modern backend.
pub fn headers_for(method: &Method, params: &Value) -> Vec<(HeaderName, String)> {
    let mut h = vec![(MCP_METHOD, method.as_str().to_string())];
    if let Some(Some(name)) = name_of(method, Some(params)) {
        h.push((MCP_NAME, encode_header(name)));
    }
    h
}

const SENTINEL_HEAD: &str = "=?base64?";
const SENTINEL_TAIL: &str = "?=";

/// A header value as the transport chapter encodes it: as is when it is plain visible
/// ASCII without surrounding spaces, else the Base64 sentinel `=?base64?…?=`.
pub fn encode_header(v: &str) -> String {
    let looks_encoded = v.starts_with(SENTINEL_HEAD) && v.ends_with(SENTINEL_TAIL);
    let padded = v.starts_with(' ') || v.ends_with(' ');
    let visible = v.bytes().all(|b| (0x20..0x7f).contains(&b));
    let plain = !v.is_empty() && visible && !padded && !looks_encoded;
    if plain {
        v.to_string()
    } else {
        format!("{SENTINEL_HEAD}{}{SENTINEL_TAIL}", STANDARD.encode(v))
    }
}

/// Decodes a header value that may use the Base64 sentinel; `None` when the sentinel's
/// content is not Base64 of UTF-8, or the plain value has characters a header may not.
/// A plain value is borrowed, not copied.
pub fn decode_header(v: &str) -> Option<Cow<'_, str>> {
    if let Some(inner) = v
        .strip_prefix(SENTINEL_HEAD)
        .and_then(|r| r.strip_suffix(SENTINEL_TAIL))
    {
        let bytes = STANDARD.decode(inner).ok()?;
        return String::from_utf8(bytes).ok().map(Cow::Owned);
    }
    v.bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then_some(Cow::Borrowed(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirrored_headers_name_the_method_and_the_encoded_name() {
        let h = |method, params: Value| {
            headers_for(&method, &params)
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect::<Vec<_>>()
        };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            h(Method::ToolsCall, json!({"name": "t"})),
            [pair("mcp-method", "tools/call"), pair("mcp-name", "t")]
        );
        assert_eq!(
            h(Method::PromptsGet, json!({"name": "café"})),
            [
                pair("mcp-method", "prompts/get"),
                pair("mcp-name", "=?base64?Y2Fmw6k=?=")
            ]
        );
        assert_eq!(
            h(Method::ToolsList, json!({})),
            [pair("mcp-method", "tools/list")]
        );
    }

    #[test]
    fn header_values_round_trip() {
        for v in [
            "get_weather",
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            assert_eq!(
                decode_header(&encode_header(v)).as_deref(),
                Some(v),
                "{v:?}"
            );
        }
        assert_eq!(encode_header("us-west1"), "us-west1");
        assert_eq!(
            encode_header("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(decode_header("=?base64?not base64?="), None);
    }

    #[test]
    fn takes_and_refuses_meta() {
        let ok = json!({"name": "t", "_meta": {PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {"roots": {}}, CLIENT_INFO: {"name": "c"}, LOG_LEVEL: "info", "progressToken": 1}});
        assert!(RequestMeta::present(Some(&ok)));
        let mut p = ok.clone();
        let m = RequestMeta::take(Some(&mut p)).unwrap();
        assert_eq!(m.version, "2026-07-28");
        assert_eq!(m.caps, json!({"roots": {}}));
        assert_eq!(m.info, json!({"name": "c"}));
        assert_eq!(m.log_level, Some(LogLevel::Info));
        // Moved out; the client's own keys and its log level stay.
        assert_eq!(
            p,
            json!({"name": "t", "_meta": {LOG_LEVEL: "info", "progressToken": 1}})
        );
        let mut bare = json!({"_meta": {PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {}}});
        assert_eq!(
            RequestMeta::take(Some(&mut bare)).unwrap().info,
            Value::Null
        );
        for bad in [
            json!({}),
            json!({"_meta": {PROTOCOL_VERSION: "2026-07-28"}}),
            json!({"_meta": {PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: []}}),
            json!({"_meta": {PROTOCOL_VERSION: 7, CLIENT_CAPABILITIES: {}}}),
            json!({"_meta": {CLIENT_CAPABILITIES: {}}}),
        ] {
            let mut p = bad.clone();
            assert!(RequestMeta::take(Some(&mut p)).is_err(), "{bad}");
            assert_eq!(p, bad, "a refused request's params are left alone");
        }
        assert!(RequestMeta::take(None).is_err());
    }
}
