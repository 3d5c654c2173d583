//! The header fast path (2026-07-28): a modern request mirrors its method and target in
//! `Mcp-Method` / `Mcp-Name`, so its labels, its backend and the policy that applies are
//! known from the head, before the body is read or parsed.
//!
//! Trusted only where the spec lets an intermediary trust them: the
//! `MCP-Protocol-Version` header names a revision that requires the server to check the
//! headers against the body. The body is still checked against them afterwards
//! ([`super::modern`]: a mismatch is answered 400 -32020), and the policy is checked again
//! where the call is forwarded, so the fast path can only refuse earlier, never let more
//! through. A refusal found here is answered once the body is read, with the request's id
//! and the very answer the forwarding path gives ([`policy_answer`]); the rest of the
//! body is never parsed.

use http::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::exchange::{Caller, Info, Response};
use super::handler::Gateway;
use super::jsonrpc::{self, Method};
use crate::auth::policy;
use crate::upstream::Backend;
use crate::wire::{meta, version};

/// What a modern request's head says it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirrored {
    /// `MCP-Protocol-Version`: the modern revision it names.
    pub version: &'static str,
    pub method: Method,
    /// `Mcp-Name`, decoded (the Base64 sentinel form included).
    pub name: Option<String>,
}

impl Mirrored {
    /// `None` unless the request names a modern revision in `MCP-Protocol-Version`, has
    /// no session, and carries a readable `Mcp-Method`.
    pub fn read(headers: &HeaderMap) -> Option<Mirrored> {
        let text = |n: &http::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
        let version = text(&meta::MCP_PROTOCOL_VERSION).and_then(version::modern)?;
        if headers.contains_key(meta::MCP_SESSION_ID) {
            return None;
        }
        Some(Mirrored {
            version,
            method: Method::parse(text(&meta::MCP_METHOD)?),
            name: text(&meta::MCP_NAME)
                .and_then(meta::decode_header)
                .map(|n| n.into_owned()),
        })
    }
}

/// What the head of a modern POST said, checked (Host/Origin, then backend and tool
/// policy): carried with its request ([`super::exchange::Request::head`]), so that the
/// body is compared with it rather than the headers read and decoded again.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub mirrored: Mirrored,
    /// A call's or prompt's name, resolved: the backend and its own name there. Taken
    /// by the body's routing once the body is found to name the same
    /// ([`super::modern`]), so a name is resolved once per request.
    pub route: Option<(usize, String)>,
}

impl Head {
    /// Whether the body's method and name are what the head said (`false` leaves the
    /// answer, and its precise message, to reading the headers).
    pub(super) fn matches(&self, method: &Method, params: Option<&Value>) -> bool {
        self.mirrored.method == *method
            && match meta::name_of(method, params) {
                None => true,
                Some(body) => body.is_some() && body == self.mirrored.name.as_deref(),
            }
    }
}

/// A request refused from its head: answered once its id is read.
#[derive(Debug)]
pub struct EarlyRefusal {
    message: String,
    backend: String,
    /// Refused on `/backends/{name}/mcp`, which answers refusals 403.
    passthrough: bool,
}

impl EarlyRefusal {
    /// The answer, with the id of the request in `body` (`null` when it has none).
    pub fn answer(&self, body: &[u8]) -> Response {
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: Value,
        }
        if self.passthrough {
            return Response::refuse(403, jsonrpc::FORBIDDEN, self.message.clone());
        }
        let id = serde_json::from_slice::<IdOnly>(body)
            .map(|r| r.id)
            .unwrap_or(Value::Null);
        policy_answer(&id, &self.message, &self.backend)
    }
}

/// The answer to a call the caller may not make (200: a JSON-RPC error, as for every
/// routed request), the same from the head or from the body.
pub(super) fn policy_answer(id: &Value, message: &str, backend: &str) -> Response {
    Response::json(
        200,
        &jsonrpc::error_with_data(id, jsonrpc::FORBIDDEN, message, json!({"backend": backend})),
    )
}

impl Gateway {
    /// Fills the record's method, target and backend from the head of a modern POST, and
    /// decides backend and tool policy: the refusal, or what the head said (`None`: not
    /// a modern request, or one whose Host/Origin the body path refuses).
    pub fn precheck(
        &self,
        http_method: &http::Method,
        headers: &HeaderMap,
        caller: &Caller,
        info: &mut Info,
    ) -> Result<Option<Head>, EarlyRefusal> {
        // The mark of a modern request first: a 2025 one stops at one header lookup.
        if http_method != http::Method::POST {
            return Ok(None);
        }
        let Some(mirrored) = Mirrored::read(headers) else {
            return Ok(None);
        };
        if self.check_host_origin(headers).is_err() {
            return Ok(None);
        }
        info.rpc_method = Some(mirrored.method.clone());
        let mut head = Head {
            mirrored,
            route: None,
        };
        let m = &head.mirrored;
        let name = match (&m.method, &m.name) {
            (Method::ToolsCall | Method::PromptsGet, Some(name)) => name,
            _ => return Ok(Some(head)),
        };
        let Some((b, original)) = self.resolve_name(name) else {
            return Ok(Some(head));
        };
        let backend = &self.backends[b];
        info.target = Some(name.clone());
        info.backend = Some(backend.name().to_string());
        if let Some(refused) = self.refuse_early(backend, caller, &m.method, &original, info, false)
        {
            return Err(refused);
        }
        head.route = Some((b, original));
        Ok(Some(head))
    }

    /// The same on `/backends/{name}/mcp`: names there are the backend's own.
    pub fn precheck_passthrough(
        &self,
        backend: &Backend,
        headers: &HeaderMap,
        caller: &Caller,
        info: &mut Info,
    ) -> Option<EarlyRefusal> {
        let m = Mirrored::read(headers)?;
        info.rpc_method = Some(m.method.clone());
        if m.method != Method::ToolsCall {
            return None;
        }
        let name = m.name?;
        info.target = Some(name.clone());
        self.refuse_early(backend, caller, &m.method, &name, info, true)
    }

    fn refuse_early(
        &self,
        backend: &Backend,
        caller: &Caller,
        method: &Method,
        tool: &str,
        info: &mut Info,
        passthrough: bool,
    ) -> Option<EarlyRefusal> {
        let message = self.policy_refusal(backend, caller, method, Some(tool))?;
        info.rpc_error = Some(jsonrpc::FORBIDDEN);
        info.detail = Some(format!("refused by policy: {message}"));
        Some(EarlyRefusal {
            message,
            backend: backend.name().to_string(),
            passthrough,
        })
    }

    /// Why the caller may not make this call to `backend` (`tool`: the backend's own
    /// name of a called tool), or `None` when they may.
    pub(super) fn policy_refusal(
        &self,
        backend: &Backend,
        caller: &Caller,
        method: &Method,
        tool: Option<&str>,
    ) -> Option<String> {
        let allowed = self.may_use(backend, caller)
            && (*method != Method::ToolsCall
                || policy::may_use_tool(
                    self.config.auth.mode,
                    &backend.config,
                    tool.unwrap_or_default(),
                    caller,
                ));
        if allowed {
            return None;
        }
        let who = caller.email.as_deref().unwrap_or(&caller.sub);
        let what = match (method, tool) {
            (Method::ToolsCall, Some(t)) => format!("tool {t:?} of backend {:?}", backend.name()),
            _ => format!("backend {:?}", backend.name()),
        };
        tracing::info!(backend = backend.name(), user = who, "refused by policy");
        Some(format!("Forbidden: {who} may not use {what}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_modern_revision_makes_the_headers_trusted() {
        let call = [("mcp-method", "tools/call"), ("mcp-name", "a__echo")];
        for (version, trusted) in [
            (Some("2026-07-28"), true),
            (Some("2025-11-25"), false),
            (Some("2025-06-18"), false),
            (None, false),
        ] {
            let mut pairs = call.to_vec();
            if let Some(v) = version {
                pairs.push(("mcp-protocol-version", v));
            }
            assert_eq!(
                Mirrored::read(&headers(&pairs)).is_some(),
                trusted,
                "{version:?}"
            );
        }
        let mut with_session = call.to_vec();
        with_session.push(("mcp-protocol-version", "2026-07-28"));
        with_session.push(("mcp-session-id", "s"));
        assert_eq!(Mirrored::read(&headers(&with_session)), None);
    }

    #[test]
    fn the_name_is_decoded_and_the_method_typed() {
        let h = headers(&[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Y2Fmw6k=?="),
        ]);
        let m = Mirrored::read(&h).unwrap();
        assert_eq!(m.method, Method::ToolsCall);
        assert_eq!(m.version, "2026-07-28");
        assert_eq!(m.name.as_deref(), Some("café"));
        let no_method = headers(&[("mcp-protocol-version", "2026-07-28")]);
        assert_eq!(Mirrored::read(&no_method), None);
    }

    #[test]
    fn the_head_matches_only_a_body_that_says_the_same() {
        let head = |method, name: Option<&str>| Head {
            mirrored: Mirrored {
                version: "2026-07-28",
                method,
                name: name.map(str::to_string),
            },
            route: None,
        };
        let call = head(Method::ToolsCall, Some("a__echo"));
        let params = json!({"name": "a__echo"});
        assert!(call.matches(&Method::ToolsCall, Some(&params)));
        assert!(!call.matches(&Method::ToolsCall, Some(&json!({"name": "a__other"}))));
        assert!(!call.matches(&Method::ToolsCall, Some(&json!({}))));
        assert!(!call.matches(&Method::ToolsCall, None));
        assert!(!call.matches(&Method::PromptsGet, Some(&params)));
        // A name the head could not decode matches no body.
        assert!(!head(Method::ToolsCall, None).matches(&Method::ToolsCall, Some(&params)));
        let list = head(Method::ToolsList, None);
        assert!(list.matches(&Method::ToolsList, None));
        assert!(!list.matches(&Method::PromptsList, None));
    }

    #[test]
    fn a_refusal_answers_with_the_request_id() {
        let r = EarlyRefusal {
            message: "Forbidden: x".into(),
            backend: "b".into(),
            passthrough: false,
        };
        let body = br#"{"jsonrpc":"2.0","id":"abc","method":"tools/call","params":{"name":"b__t","arguments":{"big":[1,2,3]}}}"#;
        let Response::Full { status, body, .. } = r.answer(body) else {
            panic!("not a full answer")
        };
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "abc");
        assert_eq!(v["error"]["code"], jsonrpc::FORBIDDEN);
        assert_eq!(v["error"]["data"]["backend"], "b");
        let Response::Full { body, .. } = r.answer(b"not json") else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], Value::Null);
    }
}
