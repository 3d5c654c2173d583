//! The modern era downstream (2026-07-28): stateless requests on `/mcp`.
//!
//! A modern request carries its revision, the client's capabilities and identity in
//! `params._meta` and mirrors its method and target into `Mcp-Method` / `Mcp-Name`. It is
//! checked in the order the transport chapter gives (header present, `_meta` complete,
//! header = body, revision spoken, method known), then served by the same verbs as a
//! legacy session's requests, on a per-request "session" that lives nowhere
//! ([`Gateway::stateless_claims`]); its answer is shaped for the era ([`Shape`]).
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
        .get("mcp-protocol-version")
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
        let (id, method, params) = match msg {
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
        let meta = match check(headers, &id, &method, params.as_ref()) {
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
        let claims = self.stateless_claims(caller, &meta);
        let shape = Shape {
            log: meta.log_level.is_some(),
            private: self.config.auth.mode != AuthMode::None,
        };
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
    pub(super) fn stateless_claims(&self, caller: &Caller, meta: &RequestMeta) -> SessionClaims {
        let mut h = Sha256::new();
        h.update(caller.sub.as_bytes());
        h.update([0]);
        h.update(meta.caps.to_string().as_bytes());
        h.update([0]);
        h.update(meta.info.to_string().as_bytes());
        let digest = h.finalize();
        let sid: String = std::iter::once("m".to_string())
            .chain(digest[..15].iter().map(|b| format!("{b:02x}")))
            .collect();
        SessionClaims {
            sid,
            sub: caller.sub.clone(),
            iat: now_secs(),
            v: version::MODERN_LATEST.to_string(),
            caps: meta.caps.clone(),
            info: meta.info.clone(),
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
    params: Option<&Value>,
) -> Result<RequestMeta, (Response, i64)> {
    let fail =
        |status, code, message: String, data| Err((refuse(id, status, code, message, data), code));
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    let Some(Ok(hv)) = header("mcp-protocol-version") else {
        return fail(
            400,
            jsonrpc::HEADER_MISMATCH,
            "Header mismatch: the MCP-Protocol-Version header is missing or not visible ASCII"
                .into(),
            None,
        );
    };
    let meta = match RequestMeta::read(params) {
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
    if let Err(why) = mirrored_headers_match(headers, method, params) {
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
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map_err(|_| ()));
    match header("mcp-method") {
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
        header("mcp-name")
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
    /// Shapes a served answer: every result gets `resultType`, a read its cache hints.
    async fn finish(self, resp: Response, id: &Value, method: &Method) -> Response {
        match resp {
            Response::Full {
                status,
                content_type,
                headers,
                body,
            } => {
                let body = match serde_json::from_slice::<Value>(&body) {
                    Ok(mut v) => {
                        // The one answer of a JSON reply is this request's, whatever id
                        // the backend answered with (the gateway's own upstream id):
                        // set here, so that the answer is parsed once.
                        if v.get("method").is_none() && v.get("id").is_some() {
                            v["id"] = id.clone();
                        }
                        self.message(&mut v, id, method);
                        crate::upstream::to_bytes(&v)
                    }
                    Err(_) => body,
                };
                Response::Full {
                    status,
                    content_type,
                    headers,
                    body,
                }
            }
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
