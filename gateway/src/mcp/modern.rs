//! The modern era downstream (2026-07-28): stateless requests on `/mcp`.
//!
//! A modern request carries its revision, the client's capabilities and identity in
//! `params._meta` and mirrors its method and target into `Mcp-Method` / `Mcp-Name`. It is
//! checked in the order the transport chapter gives (header present, `_meta` complete,
//! header = body, revision spoken, method known), then served by the same verbs as a
//! legacy session's requests, on a per-request "session" that lives nowhere
//! ([`Gateway::stateless_claims`]); its answer is shaped for the era ([`super::shape`]).
//!
//! Not here: `subscriptions/listen` ([`super::listen`]); the legacy path
//! ([`super::lifecycle`]).

use std::sync::Arc;

use http::HeaderMap;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::exchange::{Caller, Info, Response};
use super::handler::Gateway;
use super::jsonrpc::{self, Message, Method};
use super::session::{now_secs, SessionClaims};
use super::shape::Shape;
use crate::config::AuthMode;
use crate::upstream::UpstreamError;
use crate::wire::caps::{self, Caps};
use crate::wire::meta::{self, RequestMeta};
use crate::wire::version;

/// A modern request refused before it is served: HTTP status, JSON-RPC code, message,
/// and the error's `data` when the schema gives it one.
fn refuse(id: &Value, status: u16, code: i64, message: String, data: Option<Value>) -> Response {
    let body = match data {
        Some(d) => jsonrpc::error_with_data(id, code, message, d),
        None => jsonrpc::error(id, code, message),
    };
    Response::json(status, &body)
}

/// Whether a POST without a session is a modern request: its `MCP-Protocol-Version`
/// header names a revision that is not a legacy one, or its `_meta` names a revision.
pub(super) fn is_modern_request(headers: &HeaderMap, params: Option<&Value>) -> bool {
    match headers
        .get(meta::MCP_PROTOCOL_VERSION)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) => !version::is_supported(v),
        None => RequestMeta::present(params),
    }
}

impl Gateway {
    /// Serves one modern message.
    pub(super) async fn modern(
        self: &Arc<Self>,
        headers: &HeaderMap,
        msg: Message,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let (id, method, mut params) = match msg {
            Message::Request { id, method, params } => (id, method, params),
            // No client notification is defined on Streamable HTTP in this revision
            // (cancelling is closing the stream): accepted and dropped.
            Message::Notification { method, .. } => {
                info.rpc_method = Some(method);
                return Response::accepted();
            }
            Message::Response { id, .. } => {
                info.rpc_error = Some(jsonrpc::INVALID_REQUEST);
                return refuse(
                    &id,
                    400,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: clients send no JSON-RPC responses in protocol 2026-07-28 (answers to input requests go in inputResponses of a retried request)".into(),
                    None,
                );
            }
        };
        info.rpc_method = Some(method.clone());
        let meta = match check(headers, &id, &method, params.as_mut()) {
            Ok(m) => m,
            Err(r) => {
                info.rpc_error = Some(r.1);
                // Labels taken from the head ([`super::early`]) are not trusted now.
                info.backend = None;
                info.target = None;
                return r.0;
            }
        };
        info.param_headers = headers
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("mcp-param-"))
            .filter_map(|(k, v)| Some((k.clone(), v.to_str().ok()?.to_string())))
            .collect();
        let shape = Shape {
            log: meta.log_level.is_some(),
            private: self.config.auth.mode != AuthMode::None,
        };
        let claims = self.stateless_claims(caller, meta);
        match method {
            Method::ServerDiscover => self.discover(&claims, caller, &id).await,
            Method::SubscriptionsListen => self.listen(claims, caller, id, params).await,
            // Lists are shaped where they are merged.
            m if super::fanout::ListKind::of(&m).is_some() => {
                let resp = self.request(&claims, caller, id, m, params, info).await;
                super::handler::note_error(&resp, info);
                resp
            }
            _ => {
                let resp = self
                    .request(&claims, caller, id.clone(), method.clone(), params, info)
                    .await;
                super::handler::note_error(&resp, info);
                shape.finish(resp, &id, &method).await
            }
        }
    }

    /// The per-request session of a modern request: never sealed, never stored. Its id
    /// is stable per person and client, so a legacy backend's upstream session opened for
    /// one request serves the next ([`Gateway::upstream`] keeps it).
    pub(super) fn stateless_claims(&self, caller: &Caller, meta: RequestMeta) -> SessionClaims {
        SessionClaims {
            sid: stateless_sid(&caller.sub, &meta.caps, &meta.info),
            sub: caller.sub.clone(),
            iat: now_secs(),
            v: version::MODERN_LATEST.to_string(),
            caps: meta.caps,
            info: meta.info,
            up: Default::default(),
        }
    }

    /// `server/discover`: the revisions spoken statelessly, the capabilities of the
    /// backends this person may use (asked of each now, so unknown ones are learnt), and
    /// who answers.
    async fn discover(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: &Value,
    ) -> Response {
        let allowed = self.backends.iter().filter(|b| self.may_use(b, caller));
        let learnt = futures::future::join_all(allowed.map(|b| async move {
            tokio::time::timeout(b.config.timeout, self.upstream(claims, b.index))
                .await
                .unwrap_or(Err(UpstreamError::Timeout(b.config.timeout)))
                .map(|s| s.caps)
                .unwrap_or_else(|_| {
                    Caps(self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed))
                })
        }))
        .await;
        let bits = learnt.into_iter().fold(Caps::default(), |a, c| a | c);
        let result = json!({
            "resultType": "complete",
            "supportedVersions": version::MODERN,
            "capabilities": caps::to_json(bits),
            "instructions": format!(
                "This MCP gateway aggregates {} servers; tool and prompt names are prefixed with the server name and \"__\".",
                self.backends.len()
            ),
            "ttlMs": 0,
            "cacheScope": if self.config.auth.mode == AuthMode::None { "public" } else { "private" },
            "_meta": {meta::SERVER_INFO: server_info()},
        });
        Response::json(200, &jsonrpc::result(id, result))
    }
}

/// The id of a modern request's per-request session: `m` and 30 hex digits of a
/// SHA-256 over the person and the client's capabilities and identity (serialized into
/// the hash, not into a string first). A strong hash: two people never share an id, so
/// never an upstream session, whatever a client puts in its `_meta`.
fn stateless_sid(sub: &str, caps: &Value, info: &Value) -> String {
    use std::io::Write;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    h.update(sub.as_bytes());
    h.update([0]);
    // Writing into a hash cannot fail; a failure would only make another id.
    let _ = serde_json::to_writer(&mut h, caps);
    let _ = h.write_all(&[0]);
    let _ = serde_json::to_writer(&mut h, info);
    let digest = h.finalize();
    let mut sid = String::with_capacity(31);
    sid.push('m');
    for b in &digest[..15] {
        sid.push(HEX[usize::from(b >> 4)] as char);
        sid.push(HEX[usize::from(b & 15)] as char);
    }
    sid
}

/// Who answers: the gateway itself.
pub(super) fn server_info() -> Value {
    json!({"name": "mcp-gateway", "title": "MCP Gateway", "version": env!("CARGO_PKG_VERSION")})
}

/// Checks a modern request in the transport chapter's order; `Err` carries the refusal
/// and its JSON-RPC code (for the request record).
fn check(
    headers: &HeaderMap,
    id: &Value,
    method: &Method,
    mut params: Option<&mut Value>,
) -> Result<RequestMeta, (Response, i64)> {
    let fail =
        |status, code, message: String, data| Err((refuse(id, status, code, message, data), code));
    let header = |name: &http::HeaderName| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    let Some(Ok(hv)) = header(&meta::MCP_PROTOCOL_VERSION) else {
        return fail(
            400,
            jsonrpc::HEADER_MISMATCH,
            "Header mismatch: the MCP-Protocol-Version header is missing or not visible ASCII"
                .into(),
            None,
        );
    };
    let meta = match RequestMeta::take(params.as_deref_mut()) {
        Ok(m) => m,
        Err(why) => {
            return fail(
                400,
                jsonrpc::INVALID_PARAMS,
                format!("Invalid params: {why}"),
                None,
            )
        }
    };
    if hv != meta.version {
        return fail(
            400,
            jsonrpc::HEADER_MISMATCH,
            format!(
                "Header mismatch: MCP-Protocol-Version header value {hv:?} does not match body value {:?}",
                meta.version
            ),
            None,
        );
    }
    if !version::is_modern(&meta.version) {
        // The same list as server/discover's supportedVersions: the revisions a
        // stateless request may name (the legacy ones start with initialize).
        let supported = version::MODERN;
        return fail(
            400,
            jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            format!(
                "Unsupported protocol version {:?}: stateless requests speak {}; earlier revisions start with initialize",
                meta.version,
                version::MODERN.join(", ")
            ),
            Some(json!({"supported": supported, "requested": meta.version})),
        );
    }
    if let Err(why) = mirrored_headers_match(headers, method, params.as_deref()) {
        return fail(400, jsonrpc::HEADER_MISMATCH, why, None);
    }
    if !served(method) {
        return fail(
            404,
            jsonrpc::METHOD_NOT_FOUND,
            format!(
                "Method not found: {method} (not part of protocol {})",
                meta.version
            ),
            None,
        );
    }
    Ok(meta)
}

/// Whether `Mcp-Method` and (for calls, prompts and reads) `Mcp-Name` say what the body
/// says; `Err` is the HeaderMismatch message. Also the pass-through route's check.
pub(crate) fn mirrored_headers_match(
    headers: &HeaderMap,
    method: &Method,
    params: Option<&Value>,
) -> Result<(), String> {
    let header = |name: &http::HeaderName| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    match header(&meta::MCP_METHOD) {
        Some(Ok(m)) if m == method.as_str() => {}
        Some(Ok(m)) => {
            return Err(format!(
                "Header mismatch: Mcp-Method header value {m:?} does not match body value {:?}",
                method.as_str()
            ))
        }
        _ => return Err("Header mismatch: the Mcp-Method header is missing".into()),
    }
    let Some(body) = meta::name_of(method, params) else {
        return Ok(());
    };
    match (
        header(&meta::MCP_NAME)
            .and_then(Result::ok)
            .map(meta::decode_header),
        body,
    ) {
        (Some(Some(h)), Some(b)) if h == b => Ok(()),
        (None, _) => Err(format!(
            "Header mismatch: {method} needs the Mcp-Name header"
        )),
        (Some(h), b) => Err(format!(
            "Header mismatch: Mcp-Name header value {:?} does not match body value {:?}",
            h.unwrap_or_else(|| "(undecodable)".into()),
            b.unwrap_or("(none)")
        )),
    }
}

/// The methods a modern request may name.
fn served(method: &Method) -> bool {
    matches!(
        method,
        Method::ServerDiscover
            | Method::SubscriptionsListen
            | Method::ToolsList
            | Method::ToolsCall
            | Method::PromptsList
            | Method::PromptsGet
            | Method::ResourcesList
            | Method::ResourcesTemplatesList
            | Method::ResourcesRead
            | Method::CompletionComplete
    )
}
