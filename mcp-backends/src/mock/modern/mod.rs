//! MCP 2026-07-28, the stateless era: per-request `_meta`, the method set, the
//! errors of the revision (-32020, -32021, -32022), `server/discover`, and what
//! every result carries (`resultType`, caching hints, `serverInfo`).
//!
//! Transport-specific parts: [`http`] (header validation, replies, cancellation by
//! closing the stream) and [`listen`] (`subscriptions/listen`, shared by HTTP and stdio).

use serde_json::{json, Map, Value};

use super::config::ProtocolMode;
use super::jsonrpc::{RpcError, INVALID_PARAMS, METHOD_NOT_FOUND};
use super::protocol::{
    self, LogLevel, META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL,
    META_PROTOCOL_VERSION, META_SERVER_INFO, MODERN_VERSION,
};
use super::server::MockServer;

pub mod http;
pub mod listen;
pub mod stdio;

/// `HeaderMismatch`: headers missing, malformed or not matching the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// `MissingRequiredClientCapability`.
pub const MISSING_CAPABILITY: i64 = -32021;
/// `UnsupportedProtocolVersion`.
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// The methods of the modern era.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Discover,
    Listen,
    ToolsList,
    ToolsCall,
    ResourcesList,
    ResourceTemplatesList,
    ResourcesRead,
    PromptsList,
    PromptsGet,
    Complete,
}

impl Method {
    pub fn parse(method: &str) -> Option<Method> {
        Some(match method {
            "server/discover" => Method::Discover,
            "subscriptions/listen" => Method::Listen,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "resources/list" => Method::ResourcesList,
            "resources/templates/list" => Method::ResourceTemplatesList,
            "resources/read" => Method::ResourcesRead,
            "prompts/list" => Method::PromptsList,
            "prompts/get" => Method::PromptsGet,
            "completion/complete" => Method::Complete,
            _ => return None,
        })
    }

    /// Results that carry `ttlMs` and `cacheScope` (`CacheableResult`).
    pub fn cacheable(self) -> bool {
        matches!(
            self,
            Method::Discover
                | Method::ToolsList
                | Method::ResourcesList
                | Method::ResourceTemplatesList
                | Method::ResourcesRead
                | Method::PromptsList
        )
    }

    /// The body field mirrored in `Mcp-Name`, if any.
    pub fn name_field(self) -> Option<&'static str> {
        match self {
            Method::ToolsCall | Method::PromptsGet => Some("name"),
            Method::ResourcesRead => Some("uri"),
            _ => None,
        }
    }
}

/// What a modern request says about its client in `params._meta`.
#[derive(Clone, Debug)]
pub struct ModernMeta {
    pub capabilities: Map<String, Value>,
    pub client_info: Option<Value>,
    /// `notifications/message` are sent only when the request sets a level.
    pub log_level: Option<LogLevel>,
}

impl ModernMeta {
    pub fn supports(&self, capability: &str) -> bool {
        self.capabilities
            .get(capability)
            .is_some_and(|c| !c.is_null())
    }
}

/// Whether a request carries the modern `_meta` (the era selector of mixed mode).
pub fn has_modern_meta(params: &Value) -> bool {
    params
        .get("_meta")
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some()
}

/// The versions this mock answers with in `supportedVersions` and -32022.
pub fn supported_versions(mode: ProtocolMode) -> Vec<&'static str> {
    let mut v = vec![MODERN_VERSION];
    if mode.speaks_legacy() {
        v.extend(protocol::SUPPORTED_VERSIONS);
    }
    v
}

/// Why a modern request was refused before dispatch, and how HTTP answers it.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub error: RpcError,
}

impl Refusal {
    fn new(status: u16, error: RpcError) -> Refusal {
        Refusal { status, error }
    }
}

pub fn header_mismatch(message: impl Into<String>) -> Refusal {
    Refusal::new(400, RpcError::new(HEADER_MISMATCH, message))
}

/// Steps 3 and 5 of the validation order: `_meta` with `protocolVersion` and
/// `clientCapabilities` (400, -32602), then a version this mock speaks (400, -32022).
/// The header check (step 4) sits between them on HTTP: see [`http`].
pub fn read_meta(params: &Value) -> Result<(String, ModernMeta), Refusal> {
    let invalid = |what: &str| {
        Refusal::new(
            400,
            RpcError::invalid_params(format!("Invalid request metadata: {what}")),
        )
    };
    let meta = match params.get("_meta") {
        Some(Value::Object(m)) => m,
        _ => return Err(invalid("params._meta is required")),
    };
    let version = match meta.get(META_PROTOCOL_VERSION) {
        Some(Value::String(v)) => v.clone(),
        _ => {
            return Err(invalid(&format!(
                "_meta[\"{META_PROTOCOL_VERSION}\"] (string) is required"
            )))
        }
    };
    let capabilities = match meta.get(META_CLIENT_CAPABILITIES) {
        Some(Value::Object(c)) => c.clone(),
        _ => {
            return Err(invalid(&format!(
                "_meta[\"{META_CLIENT_CAPABILITIES}\"] (object) is required"
            )))
        }
    };
    let log_level =
        match meta.get(META_LOG_LEVEL) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_str().and_then(LogLevel::parse).ok_or_else(|| {
                invalid(&format!("_meta[\"{META_LOG_LEVEL}\"] is not a log level"))
            })?),
        };
    Ok((
        version,
        ModernMeta {
            capabilities,
            client_info: meta.get(META_CLIENT_INFO).cloned(),
            log_level,
        },
    ))
}

/// Step 5: 400 with -32022 and the supported versions unless `version` is modern.
pub fn check_version(mode: ProtocolMode, version: &str) -> Result<(), Refusal> {
    if version == MODERN_VERSION {
        return Ok(());
    }
    Err(Refusal::new(
        400,
        RpcError::new(
            UNSUPPORTED_VERSION,
            format!("Unsupported protocol version: {version}"),
        )
        .with_data(json!({ "supported": supported_versions(mode), "requested": version })),
    ))
}

/// Step 6: 404 with -32601 for unknown and removed methods.
pub fn check_method(mode: ProtocolMode, method: &str) -> Result<Method, Refusal> {
    Method::parse(method).ok_or_else(|| {
        let mut error = RpcError::method_not_found(method);
        if matches!(
            method,
            "initialize" | "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe"
        ) {
            error.message = format!(
                "Method not found: {method} is not part of MCP {MODERN_VERSION} (supported versions: {})",
                supported_versions(mode).join(", ")
            );
            error.data = Some(json!({ "method": method, "supported": supported_versions(mode) }));
        }
        Refusal::new(404, error)
    })
}

/// The HTTP status of an error produced while handling a modern request.
pub fn status_of_error(code: i64) -> u16 {
    match code {
        HEADER_MISMATCH | MISSING_CAPABILITY | UNSUPPORTED_VERSION => 400,
        METHOD_NOT_FOUND => 404,
        _ => 200,
    }
}

/// -32021 naming the capabilities the request needed.
pub fn missing_capability(required: &[&str]) -> RpcError {
    let caps: Map<String, Value> = required
        .iter()
        .map(|c| ((*c).to_string(), json!({})))
        .collect();
    RpcError::new(
        MISSING_CAPABILITY,
        format!(
            "Missing required client capability: {}",
            required.join(", ")
        ),
    )
    .with_data(json!({ "requiredCapabilities": caps }))
}

/// Resource not found is -32602 from 2026-07-28 on (was -32002).
pub fn modernize_error(mut error: RpcError) -> RpcError {
    if error.code == super::jsonrpc::RESOURCE_NOT_FOUND {
        error.code = INVALID_PARAMS;
    }
    error
}

fn server_info(server: &MockServer) -> Value {
    json!({ "name": server.config.name, "version": env!("CARGO_PKG_VERSION") })
}

/// Adds what every modern result carries: `resultType` (`complete` unless the
/// handler set one), caching hints on cacheable complete results, `serverInfo`.
pub fn finish_result(server: &MockServer, method: Method, mut result: Value) -> Value {
    let Value::Object(obj) = &mut result else {
        return result;
    };
    let complete = obj.entry("resultType").or_insert_with(|| json!("complete")) == "complete";
    if complete && method.cacheable() {
        obj.entry("ttlMs")
            .or_insert_with(|| json!(server.config.ttl_ms));
        let scope = if server.config.cache_private {
            "private"
        } else {
            "public"
        };
        obj.entry("cacheScope").or_insert_with(|| json!(scope));
    }
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(meta) = meta {
        meta.entry(META_SERVER_INFO)
            .or_insert_with(|| server_info(server));
    }
    result
}

/// `server/discover`.
pub fn discover(server: &MockServer) -> Value {
    json!({
        "supportedVersions": supported_versions(server.config.protocol),
        "capabilities": {
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "logging": {},
            "completions": {},
        },
        "instructions": "Mock MCP server for gateway tests; see mcp-backends/README.md.",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::config::MockConfig;

    #[test]
    fn meta_is_validated_in_order() {
        assert_eq!(
            read_meta(&json!({})).expect_err("no meta").error.code,
            -32602
        );
        let no_caps = json!({ "_meta": { META_PROTOCOL_VERSION: "2026-07-28" } });
        assert_eq!(read_meta(&no_caps).expect_err("no caps").error.code, -32602);
        let ok = json!({ "_meta": { META_PROTOCOL_VERSION: "v9", META_CLIENT_CAPABILITIES: {} } });
        let (version, meta) = read_meta(&ok).expect("valid");
        assert!(meta.log_level.is_none());
        let refusal = check_version(ProtocolMode::Mixed, &version).expect_err("unsupported");
        assert_eq!(refusal.error.code, UNSUPPORTED_VERSION);
        let data = refusal.error.data.expect("data");
        assert_eq!(data["requested"], "v9");
        assert_eq!(data["supported"][0], MODERN_VERSION);
        assert_eq!(
            check_method(ProtocolMode::Modern, "ping")
                .expect_err("removed")
                .status,
            404
        );
    }

    #[test]
    fn results_are_finished() {
        let server = MockServer::new(MockConfig::default(), None);
        let r = finish_result(&server, Method::ToolsList, json!({ "tools": [] }));
        assert_eq!(r["resultType"], "complete");
        assert_eq!(r["ttlMs"], 60_000);
        assert_eq!(r["cacheScope"], "public");
        assert_eq!(r["_meta"][META_SERVER_INFO]["name"], "mock");
        let r = finish_result(
            &server,
            Method::ToolsCall,
            json!({ "resultType": "input_required" }),
        );
        assert!(r.get("ttlMs").is_none());
        assert_eq!(r["resultType"], "input_required");
    }
}
