//! The aggregated `/mcp` endpoint: Streamable HTTP in front, many backends behind.
//!
//! This module knows MCP and HTTP semantics but nothing of Pingora: it takes a
//! [`Request`] and returns a [`Response`] (a full body or an SSE stream), so it can be
//! driven by the proxy and tested on its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use http::{HeaderMap, Method};
use serde_json::{json, Map, Value};

use super::cursor::{self, Cursors};
use super::index::{self, Index};
use super::jsonrpc::{self, Message};
use super::names;
use super::relay;
use super::session::{caps, now_secs, Sealer, SessionClaims, UpstreamSession};
use super::version;
use crate::auth::policy;
use crate::config::Config;
use crate::upstream::sse::format_event;
use crate::upstream::{to_bytes, Backend, Reply, UpstreamError};

/// A request as the handler sees it.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Who is calling (anonymous without authentication).
pub type Caller = crate::auth::Identity;

/// What the handler learnt about a request, for logs (and later, the audit record).
#[derive(Debug, Default, Clone)]
pub struct Info {
    pub rpc_method: Option<String>,
    pub backend: Option<String>,
    pub target: Option<String>,
    pub rpc_error: Option<i64>,
    pub session: Option<String>,
    /// Email (or subject) of the authenticated caller.
    pub user: Option<String>,
    /// Why authentication failed, when it did.
    pub auth_error: Option<String>,
    /// Request id, sent upstream as `x-request-id`.
    pub request_id: String,
    /// The client's W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// The client's address (from `server.client_ip_header` behind a load balancer).
    pub source_addr: Option<String>,
    pub user_agent: Option<String>,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes written.
    pub bytes_out: u64,
    /// SHA-256 (hex) of the call's `arguments`, for the audit record.
    pub args_digest: Option<String>,
    /// The call's `arguments` themselves (kept only when the audit log asks for them).
    pub args: Option<Value>,
    /// Why the request failed, in words: a policy refusal, a backend failure, or the
    /// message of the JSON-RPC error answered.
    pub detail: Option<String>,
}

/// The handler's answer.
pub enum Response {
    Full {
        status: u16,
        content_type: Option<&'static str>,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    Sse {
        headers: Vec<(&'static str, String)>,
        stream: BoxStream<'static, Bytes>,
    },
}

impl Response {
    pub fn json(status: u16, v: &Value) -> Response {
        Response::Full {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: to_bytes(v),
        }
    }

    pub fn json_bytes(status: u16, body: Bytes) -> Response {
        Response::Full {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body,
        }
    }

    /// An HTTP-level refusal with a JSON-RPC error body (id null).
    pub fn refuse(status: u16, code: i64, message: impl Into<String>) -> Response {
        Response::json(status, &jsonrpc::error(&Value::Null, code, message))
    }

    pub fn accepted() -> Response {
        Response::Full {
            status: 202,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        match &mut self {
            Response::Full { headers, .. } | Response::Sse { headers, .. } => {
                headers.push((name, value))
            }
        }
        self
    }

    /// Puts the request's id into an error body built without it.
    fn answering(self, id: &Value) -> Response {
        match self {
            Response::Full {
                status,
                content_type,
                headers,
                body,
            } => {
                let body = match serde_json::from_slice::<Value>(&body) {
                    Ok(mut v) if v.get("error").is_some() => {
                        v["id"] = id.clone();
                        to_bytes(&v)
                    }
                    _ => body,
                };
                Response::Full {
                    status,
                    content_type,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Response::Full { status, .. } => *status,
            Response::Sse { .. } => 200,
        }
    }
}

/// Which list a fan-out merges.
#[derive(Clone, Copy)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    fn of(method: &str) -> Option<ListKind> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::Templates,
            _ => return None,
        })
    }
    fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }
    fn cap(self) -> u16 {
        match self {
            ListKind::Tools => caps::TOOLS,
            ListKind::Prompts => caps::PROMPTS,
            ListKind::Resources | ListKind::Templates => caps::RESOURCES,
        }
    }
}

const KEEPALIVE: Duration = Duration::from_secs(15);

pub struct Gateway {
    pub config: Arc<Config>,
    pub backends: Vec<Arc<Backend>>,
    sealer: Sealer,
    /// Sessions ended with DELETE on this replica: sid → expiry (unix seconds).
    ended: DashMap<String, u64>,
    /// Each session ended with DELETE on this replica, as it ends: its GET streams close.
    session_ended: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Upstream sessions re-created after the sealed one expired: (sid, backend).
    overrides: DashMap<(String, usize), UpstreamSession>,
    index: Index,
    /// Requests in flight: (sid, id as JSON) → backend, to route cancellations.
    inflight: Arc<DashMap<(String, String), usize>>,
    /// Last capability bits each backend reported.
    known_caps: Vec<std::sync::atomic::AtomicU16>,
    /// Session ids opened before (bounded: emptied when full). Claims never change, and
    /// the checks that can (ended, expired, user) run on every request.
    opened: DashMap<Box<str>, Arc<SessionClaims>>,
    /// The audit log, once started.
    pub audit: std::sync::OnceLock<Arc<crate::audit::Auditor>>,
}

impl Gateway {
    pub fn new(config: Arc<Config>, client: reqwest::Client, key: [u8; 32]) -> Gateway {
        // One keep-alive pool for every Streamable HTTP backend.
        let connector = crate::upstream::http::build_connector();
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Arc::new(Backend::new(
                    i,
                    b.clone(),
                    client.clone(),
                    connector.clone(),
                    config.server.stream_idle_timeout,
                ))
            })
            .collect();
        let known_caps = backends
            .iter()
            .map(|_| std::sync::atomic::AtomicU16::new(0))
            .collect();
        Gateway {
            config,
            backends,
            sealer: Sealer::new(&key),
            ended: DashMap::new(),
            session_ended: tokio::sync::broadcast::channel(64).0,
            overrides: DashMap::new(),
            index: Index::default(),
            inflight: Arc::new(DashMap::new()),
            known_caps,
            audit: std::sync::OnceLock::new(),
            opened: DashMap::new(),
        }
    }

    /// Seals and opens session ids (the `/mcp` ones and the pass-through route's).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Host and Origin checks against DNS rebinding; `Err` carries the 403.
    pub fn check_host_origin(&self, headers: &HeaderMap) -> Result<(), Response> {
        let s = &self.config.server;
        if let Some(host) = headers.get(http::header::HOST) {
            let host = host.to_str().unwrap_or("").to_ascii_lowercase();
            let name = host_without_port(&host);
            if !s.allowed_hosts.iter().any(|h| h == "*" || h == name) {
                return Err(Response::refuse(
                    403,
                    jsonrpc::INVALID_REQUEST,
                    format!("Forbidden: Host {host:?} is not allowed (server.allowed_hosts)"),
                ));
            }
        }
        if let Some(origin) = headers.get(http::header::ORIGIN) {
            let origin = origin
                .to_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_ascii_lowercase();
            let ok = s.allowed_origins.iter().any(|o| o == "*" || *o == origin)
                || (s.allow_loopback_origins && is_loopback_origin(&origin));
            if !ok {
                return Err(Response::refuse(
                    403,
                    jsonrpc::INVALID_REQUEST,
                    format!("Forbidden: Origin {origin:?} is not allowed (server.allowed_origins)"),
                ));
            }
        }
        Ok(())
    }

    /// Serves one request to `/mcp`.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        if let Err(r) = self.check_host_origin(&req.headers) {
            return r;
        }
        match req.method {
            Method::POST => self.post(req, caller, info).await,
            Method::GET => self.get(req, caller, info).await,
            Method::DELETE => self.delete(req, caller, info).await,
            _ => Response::refuse(
                405,
                jsonrpc::INVALID_REQUEST,
                "Method Not Allowed: use POST, GET or DELETE",
            )
            .with_header("allow", "GET, POST, DELETE".into()),
        }
    }

    async fn post(self: &Arc<Self>, req: Request, caller: &Caller, info: &mut Info) -> Response {
        let ct = header_str(&req.headers, "content-type");
        if !ct.to_ascii_lowercase().starts_with("application/json") {
            return Response::refuse(
                415,
                jsonrpc::INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            );
        }
        if !accepts(&req.headers, "application/json") || !accepts(&req.headers, "text/event-stream")
        {
            return Response::refuse(
                406,
                jsonrpc::INVALID_REQUEST,
                "Not Acceptable: Accept must list both application/json and text/event-stream",
            );
        }
        let value: Value = match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                info.rpc_error = Some(jsonrpc::PARSE_ERROR);
                return Response::refuse(400, jsonrpc::PARSE_ERROR, format!("Parse error: {e}"));
            }
        };
        if let Value::Array(items) = value {
            return self.batch(items, &req.headers, caller, info).await;
        }
        let msg = match Message::from_value(value) {
            Ok(m) => m,
            Err(inv) => {
                info.rpc_error = Some(jsonrpc::INVALID_REQUEST);
                return Response::json(
                    400,
                    &jsonrpc::error(
                        &inv.id,
                        jsonrpc::INVALID_REQUEST,
                        format!("Invalid Request: {}", inv.message),
                    ),
                );
            }
        };
        if let Message::Request { method, id, params } = &msg {
            info.rpc_method = Some(method.clone());
            if method == "initialize" {
                return self.initialize(id, params.as_ref(), caller, info).await;
            }
            if method == "server/discover" && req.headers.get("mcp-session-id").is_none() {
                // A 2026-07-28 client probing; a plain 400 makes it fall back to initialize.
                return Response::json(
                    400,
                    &jsonrpc::error(
                        id,
                        jsonrpc::INVALID_REQUEST,
                        format!(
                            "Bad Request: this gateway speaks the initialize-based protocol \
                             versions ({}); send initialize first",
                            version::SUPPORTED.join(", ")
                        ),
                    ),
                );
            }
        }
        let claims = match self.open_session(&req.headers, caller) {
            Ok(c) => c,
            Err(r) => {
                return match &msg {
                    Message::Request { id, .. } => r.answering(id),
                    _ => r,
                }
            }
        };
        info.session = Some(claims.sid.clone());
        self.dispatch(&claims, caller, msg, info).await
    }

    /// JSON-RPC batches: refused from 2025-06-18 on; for older sessions each message is
    /// served and the answers returned together.
    async fn batch(
        self: &Arc<Self>,
        items: Vec<Value>,
        headers: &HeaderMap,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let claims = match self.open_session(headers, caller) {
            Ok(c) => c,
            Err(_) if headers.get("mcp-session-id").is_none() => {
                return Response::refuse(
                    400,
                    jsonrpc::INVALID_REQUEST,
                    "Invalid Request: JSON-RPC batches are not supported (protocol 2025-06-18 and later); send one message per request",
                )
            }
            Err(r) => return r,
        };
        if !version::allows_batches(&claims.v) || items.is_empty() {
            info.rpc_error = Some(jsonrpc::INVALID_REQUEST);
            return Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                format!(
                    "Invalid Request: JSON-RPC batches are not supported in protocol version {}; send one message per request",
                    claims.v
                ),
            );
        }
        let mut answers = Vec::new();
        for item in items {
            let msg = match Message::from_value(item) {
                Ok(m) => m,
                Err(inv) => {
                    answers.push(jsonrpc::error(
                        &inv.id,
                        jsonrpc::INVALID_REQUEST,
                        inv.message,
                    ));
                    continue;
                }
            };
            let id = match &msg {
                Message::Request { id, .. } => Some(id.clone()),
                _ => None,
            };
            let resp = self.dispatch(&claims, caller, msg, info).await;
            if let Some(id) = id {
                answers.push(collect_answer(resp, &id).await);
            }
        }
        if answers.is_empty() {
            Response::accepted()
        } else {
            Response::json(200, &Value::Array(answers))
        }
    }

    /// Opens and checks the session named by `Mcp-Session-Id`.
    fn open_session(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
    ) -> Result<Arc<SessionClaims>, Response> {
        let Some(token) = headers.get("mcp-session-id") else {
            return Err(Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: missing Mcp-Session-Id header; send initialize first",
            ));
        };
        let not_found = || {
            Response::refuse(
                404,
                jsonrpc::INVALID_REQUEST,
                "Not Found: session is unknown or has ended; send initialize to start a new one",
            )
        };
        let token = token.to_str().map_err(|_| not_found())?;
        // Opening a sealed id costs a decryption and a parse: keep recent ones.
        let cached = self.opened.get(token).map(|c| c.clone());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.sealer.open(token).ok_or_else(not_found)?);
                if self.opened.len() >= 100_000 {
                    self.opened.clear();
                }
                self.opened.insert(token.into(), c.clone());
                c
            }
        };
        if claims.sub != caller.sub
            || self.ended.contains_key(&claims.sid)
            || claims.iat + self.config.server.session_ttl.as_secs() < now_secs()
        {
            return Err(not_found());
        }
        if let Some(v) = headers.get("mcp-protocol-version") {
            let v = v.to_str().unwrap_or("");
            if !version::is_supported(v) {
                return Err(Response::refuse(
                    400,
                    jsonrpc::INVALID_REQUEST,
                    format!(
                        "Bad Request: unsupported MCP-Protocol-Version {v:?}; supported: {}",
                        version::SUPPORTED.join(", ")
                    ),
                ));
            }
        }
        Ok(claims)
    }

    async fn initialize(
        self: &Arc<Self>,
        id: &Value,
        params: Option<&Value>,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let empty = json!({});
        let params = params.unwrap_or(&empty);
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let negotiated = version::negotiate(requested);
        let client_caps = params
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let client_info = params.get("clientInfo").cloned().unwrap_or(Value::Null);
        let mut claims = SessionClaims::new(
            caller.sub.clone(),
            negotiated.to_string(),
            client_caps.clone(),
            client_info.clone(),
        );
        info.session = Some(claims.sid.clone());
        let allowed = self.backends.iter().filter(|b| self.may_use(b, caller));
        let results = futures::future::join_all(allowed.map(|b| {
            let (caps_v, info_v, sid) = (&client_caps, &client_info, claims.sid.as_str());
            async move {
                let r = tokio::time::timeout(
                    b.config.timeout,
                    b.initialize(sid, negotiated, caps_v, info_v),
                )
                .await
                .unwrap_or(Err(UpstreamError::Timeout(b.config.timeout)));
                (b, r)
            }
        }))
        .await;
        let mut bits = 0u16;
        for (b, r) in results {
            match r {
                Ok(s) => {
                    bits |= s.caps;
                    self.known_caps[b.index].store(s.caps, std::sync::atomic::Ordering::Relaxed);
                    claims.up.insert(b.name().to_string(), s);
                }
                Err(e) => {
                    b.omitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    bits |= self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(backend = b.name(), error = %e, "backend left out of new session; will retry on use");
                }
            }
        }
        let mut capabilities = caps::to_json(bits);
        if let Value::Object(m) = &mut capabilities {
            // logging/setLevel is answered by the gateway whatever the backends do.
            m.entry("logging").or_insert_with(|| json!({}));
        }
        let result = json!({
            "protocolVersion": negotiated,
            "capabilities": capabilities,
            "serverInfo": {"name": "mcp-gateway", "title": "MCP Gateway", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!(
                "This MCP gateway aggregates {} servers; tool and prompt names are prefixed with the server name and \"__\".",
                self.backends.len()
            ),
        });
        let token = self.sealer.seal(&claims);
        Response::json(200, &jsonrpc::result(id, result)).with_header("mcp-session-id", token)
    }

    /// Serves one message inside an established session.
    async fn dispatch(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        msg: Message,
        info: &mut Info,
    ) -> Response {
        match msg {
            Message::Request { id, method, params } => {
                info.rpc_method = Some(method.clone());
                let resp = self.request(claims, caller, id, method, params, info).await;
                // Most answers are results: parse only one that may hold an error.
                if let Response::Full { body, .. } = &resp {
                    if contains(body, b"\"error\"") {
                        if let Ok(v) = serde_json::from_slice::<Value>(body) {
                            let err = v.get("error");
                            info.rpc_error =
                                err.and_then(|e| e.get("code")).and_then(Value::as_i64);
                            if info.detail.is_none() {
                                info.detail = err
                                    .and_then(|e| e.get("message"))
                                    .and_then(Value::as_str)
                                    .map(str::to_string);
                            }
                        }
                    }
                }
                resp
            }
            Message::Notification { method, params } => {
                info.rpc_method = Some(method.clone());
                self.notification(claims, caller, &method, params).await;
                Response::accepted()
            }
            Message::Response { id, body } => {
                self.client_answer(claims, caller, id, body, info).await
            }
        }
    }

    async fn request(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: Value,
        method: String,
        params: Option<Value>,
        info: &mut Info,
    ) -> Response {
        if let Some(kind) = ListKind::of(&method) {
            return self.list(claims, caller, &id, &method, kind, params).await;
        }
        let rpc_err =
            |code: i64, message: String| Response::json(200, &jsonrpc::error(&id, code, message));
        match method.as_str() {
            "ping" => Response::json(200, &jsonrpc::result(&id, json!({}))),
            "initialize" => rpc_err(
                jsonrpc::INVALID_REQUEST,
                "session is already initialized".into(),
            ),
            "logging/setLevel" => {
                let Some(level) = params
                    .as_ref()
                    .and_then(|p| p.get("level"))
                    .and_then(Value::as_str)
                else {
                    return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        "logging/setLevel needs params.level".into(),
                    );
                };
                const LEVELS: [&str; 8] = [
                    "debug",
                    "info",
                    "notice",
                    "warning",
                    "error",
                    "critical",
                    "alert",
                    "emergency",
                ];
                if !LEVELS.contains(&level) {
                    return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        format!("unknown log level {level:?}"),
                    );
                }
                let targets = self.session_backends(claims, caller, caps::LOGGING);
                let p = json!({"level": level});
                futures::future::join_all(targets.into_iter().map(|b| {
                    let p = p.clone();
                    async move {
                        let _ = self
                            .in_session(claims, b, |s| {
                                let p = p.clone();
                                async move {
                                    self.backends[b]
                                        .request(&claims.sid, &s, "logging/setLevel", p)
                                        .await
                                }
                            })
                            .await;
                    }
                }))
                .await;
                Response::json(200, &jsonrpc::result(&id, json!({})))
            }
            "tools/call" | "prompts/get" => {
                let mut params = params.unwrap_or_else(|| json!({}));
                let Some(name) = params
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        format!("{method} needs params.name"),
                    );
                };
                info.target = Some(name.clone());
                if let (Some(args), Some(audit)) = (params.get("arguments"), self.audit.get()) {
                    // Digest of the redacted arguments; the arguments themselves only
                    // when the audit log keeps them.
                    let (digest, kept) = audit.arguments(args);
                    info.args_digest = Some(digest);
                    info.args = kept;
                }
                let what = if method == "tools/call" {
                    "tool"
                } else {
                    "prompt"
                };
                let Some((b, original)) = self.resolve_name(&name) else {
                    return rpc_err(jsonrpc::INVALID_PARAMS, format!("unknown {what} {name:?}"));
                };
                params["name"] = Value::String(original);
                self.forward(claims, caller, b, Routed { id, method, params }, info)
                    .await
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let mut params = params.unwrap_or_else(|| json!({}));
                let Some(uri) = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        format!("{method} needs params.uri"),
                    );
                };
                info.target = Some(uri.clone());
                let Some((b, original)) = self.resolve_uri(claims, caller, &uri) else {
                    return Response::json(
                        200,
                        &jsonrpc::error_with_data(
                            &id,
                            jsonrpc::INVALID_PARAMS,
                            format!("unknown resource {uri:?}"),
                            json!({"uri": uri}),
                        ),
                    );
                };
                params["uri"] = Value::String(original);
                self.forward(claims, caller, b, Routed { id, method, params }, info)
                    .await
            }
            "completion/complete" => {
                let mut params = params.unwrap_or_else(|| json!({}));
                let r = params.get("ref").cloned().unwrap_or(Value::Null);
                let target = match r.get("type").and_then(Value::as_str) {
                    Some("ref/prompt") => r
                        .get("name")
                        .and_then(Value::as_str)
                        .and_then(|n| self.resolve_name(n).map(|(b, o)| (b, "name", o))),
                    Some("ref/resource") => r.get("uri").and_then(Value::as_str).and_then(|u| {
                        self.resolve_uri(claims, caller, u)
                            .map(|(b, o)| (b, "uri", o))
                    }),
                    _ => return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        "completion/complete needs params.ref of type ref/prompt or ref/resource"
                            .into(),
                    ),
                };
                let Some((b, field, original)) = target else {
                    return rpc_err(
                        jsonrpc::INVALID_PARAMS,
                        format!("unknown completion reference {r}"),
                    );
                };
                params["ref"][field] = Value::String(original);
                self.forward(claims, caller, b, Routed { id, method, params }, info)
                    .await
            }
            _ => rpc_err(
                jsonrpc::METHOD_NOT_FOUND,
                format!("Method not found: {method}"),
            ),
        }
    }

    /// Backend indexes of the session that have `cap` (or whose capabilities are not
    /// known yet), in config order.
    fn session_backends(&self, claims: &SessionClaims, caller: &Caller, cap: u16) -> Vec<usize> {
        self.backends
            .iter()
            .filter(|b| {
                let bits = self
                    .overrides
                    .get(&(claims.sid.clone(), b.index))
                    .map(|s| s.caps)
                    .or_else(|| claims.up.get(b.name()).map(|s| s.caps))
                    .unwrap_or_else(|| {
                        self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed)
                    });
                (bits == 0 || bits & cap != 0) && self.may_use(b, caller)
            })
            .map(|b| b.index)
            .collect()
    }

    /// The upstream session of backend `b` in this downstream session, created on
    /// first use when the backend was not reachable at `initialize`.
    async fn upstream(
        &self,
        claims: &SessionClaims,
        b: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        if let Some(s) = self.overrides.get(&(claims.sid.clone(), b)) {
            return Ok(s.clone());
        }
        if let Some(s) = claims.up.get(self.backends[b].name()) {
            return Ok(s.clone());
        }
        self.reinit(claims, b).await
    }

    async fn reinit(
        &self,
        claims: &SessionClaims,
        b: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        let backend = &self.backends[b];
        let s = tokio::time::timeout(
            backend.config.timeout,
            backend.initialize(&claims.sid, &claims.v, &claims.caps, &claims.info),
        )
        .await
        .unwrap_or(Err(UpstreamError::Timeout(backend.config.timeout)))?;
        self.known_caps[b].store(s.caps, std::sync::atomic::Ordering::Relaxed);
        if self.overrides.len() > 100_000 {
            self.overrides.clear();
        }
        self.overrides.insert((claims.sid.clone(), b), s.clone());
        Ok(s)
    }

    /// Runs `f` in the upstream session, re-creating it once if the backend forgot it.
    async fn in_session<T, F, Fut>(
        &self,
        claims: &SessionClaims,
        b: usize,
        f: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(UpstreamSession) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let s = self.upstream(claims, b).await?;
        match f(s).await {
            Err(UpstreamError::SessionExpired) => {
                let s = self.reinit(claims, b).await?;
                f(s).await
            }
            other => other,
        }
    }

    /// Whether the caller may use backend `b` at all.
    fn may_use(&self, b: &Backend, caller: &Caller) -> bool {
        policy::may_use_backend(self.config.auth.mode, &b.config, caller)
    }

    /// Headers that tell the backend who is calling, as configured.
    pub fn identity_headers(b: &Backend, caller: &Caller) -> Vec<(http::HeaderName, String)> {
        b.config
            .forward_identity
            .iter()
            .filter_map(|(claim, header)| {
                let v = match claim.as_str() {
                    "email" => caller.email.clone()?,
                    "sub" => caller.sub.clone(),
                    "groups" => caller.groups.join(","),
                    "client_id" => caller.client_id.clone()?,
                    _ => return None,
                };
                Some((header.clone(), v))
            })
            .collect()
    }

    fn resolve_name(&self, public: &str) -> Option<(usize, String)> {
        if let Some(e) = self.index.names.get(public) {
            return Some(e.value().clone());
        }
        if let Some((head, rest)) = names::split_prefixed(public) {
            if let Some(b) = self
                .backends
                .iter()
                .find(|b| b.config.prefix && b.name() == head)
            {
                return Some((b.index, rest.to_string()));
            }
        }
        self.backends
            .iter()
            .find(|b| !b.config.prefix)
            .map(|b| (b.index, public.to_string()))
    }

    fn resolve_uri(
        &self,
        claims: &SessionClaims,
        caller: &Caller,
        uri: &str,
    ) -> Option<(usize, String)> {
        if let Some((name, original)) = index::split_prefixed_uri(uri) {
            if let Some(b) = self.backend(name) {
                return Some((b.index, original.to_string()));
            }
        }
        if let Some(b) = self.index.resource_backend(uri) {
            return Some((b, uri.to_string()));
        }
        // Not listed yet on this replica: with one resource backend the answer is clear.
        let candidates = self.session_backends(claims, caller, caps::RESOURCES);
        match candidates.as_slice() {
            [only] => Some((*only, uri.to_string())),
            _ => None,
        }
    }

    /// Fans a list request out to every backend of the session in parallel and merges
    /// the pages in config order. A failing backend is left out, never fails the list.
    async fn list(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: &Value,
        method: &str,
        kind: ListKind,
        params: Option<Value>,
    ) -> Response {
        let cursor_in = params
            .as_ref()
            .and_then(|p| p.get("cursor"))
            .and_then(Value::as_str);
        let targets: Vec<(usize, Option<String>)> = match cursor_in {
            Some(c) => match cursor::decode(c) {
                Some(map) => map
                    .into_iter()
                    .filter_map(|(name, cur)| self.backend(&name).map(|b| (b.index, Some(cur))))
                    .collect(),
                None => {
                    return Response::json(
                        200,
                        &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "invalid cursor"),
                    )
                }
            },
            None => self
                .session_backends(claims, caller, kind.cap())
                .into_iter()
                .map(|b| (b, None))
                .collect(),
        };
        let pages = futures::future::join_all(targets.iter().map(|(b, cur)| {
            let backend = &self.backends[*b];
            let p = match cur {
                Some(c) => json!({"cursor": c}),
                None => json!({}),
            };
            async move {
                let fut = self.in_session(claims, *b, |s| {
                    let p = p.clone();
                    async move { backend.request(&claims.sid, &s, method, p).await }
                });
                tokio::time::timeout(backend.config.timeout, fut)
                    .await
                    .unwrap_or(Err(UpstreamError::Timeout(backend.config.timeout)))
            }
        }))
        .await;
        let mut merged: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Cursors::new();
        for ((b, _), page) in targets.iter().zip(pages) {
            let backend = &self.backends[*b];
            let mut page = match page {
                Ok(p) => p,
                Err(e) => {
                    backend
                        .omitted
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(backend = backend.name(), method, error = %e, "backend left out of merged list");
                    continue;
                }
            };
            if let Some(c) = page.get("nextCursor").and_then(Value::as_str) {
                next.insert(backend.name().to_string(), c.to_string());
            }
            let Some(Value::Array(items)) = page.get_mut(kind.key()).map(Value::take) else {
                continue;
            };
            for mut item in items {
                if self.publish_item(kind, backend, caller, &mut item, &mut seen) {
                    merged.push(item);
                }
            }
        }
        let mut result = Map::new();
        result.insert(kind.key().into(), Value::Array(merged));
        if !next.is_empty() {
            result.insert("nextCursor".into(), Value::String(cursor::encode(&next)));
        }
        Response::json(200, &jsonrpc::result(id, Value::Object(result)))
    }

    /// Gives a listed item its public name (or URI) and indexes it. `false`: leave it out.
    fn publish_item(
        &self,
        kind: ListKind,
        backend: &Backend,
        caller: &Caller,
        item: &mut Value,
        seen: &mut std::collections::HashSet<String>,
    ) -> bool {
        match kind {
            ListKind::Tools | ListKind::Prompts => {
                let Some(name) = item.get("name").and_then(Value::as_str) else {
                    return false;
                };
                if matches!(kind, ListKind::Tools)
                    && !policy::may_use_tool(self.config.auth.mode, &backend.config, name, caller)
                {
                    return false;
                }
                if !backend.config.prefix {
                    if let Some((head, _)) = names::split_prefixed(name) {
                        if self
                            .backends
                            .iter()
                            .any(|b| b.config.prefix && b.name() == head)
                        {
                            tracing::warn!(
                                backend = backend.name(),
                                name,
                                "name looks like another backend's prefixed name; left out"
                            );
                            return false;
                        }
                    }
                }
                let (public, shortened) =
                    names::public_name(backend.name(), backend.config.prefix, name);
                if !seen.insert(public.clone()) {
                    tracing::warn!(backend = backend.name(), name, "duplicate name; left out");
                    return false;
                }
                if shortened {
                    self.index
                        .names
                        .insert(public.clone(), (backend.index, name.to_string()));
                }
                item["name"] = Value::String(public);
                true
            }
            ListKind::Resources | ListKind::Templates => {
                let key = if matches!(kind, ListKind::Resources) {
                    "uri"
                } else {
                    "uriTemplate"
                };
                let Some(uri) = item.get(key).and_then(Value::as_str).map(str::to_string) else {
                    return false;
                };
                let map = if matches!(kind, ListKind::Resources) {
                    &self.index.resources
                } else {
                    &self.index.templates
                };
                let owner = *map.entry(uri.clone()).or_insert(backend.index);
                if owner != backend.index || !seen.insert(uri.clone()) {
                    item[key] = Value::String(format!(
                        "{}{}/{uri}",
                        index::RESOURCE_PREFIX,
                        backend.name()
                    ));
                }
                true
            }
        }
    }

    /// Forwards a request to one backend and relays its answer (JSON or a stream).
    async fn forward(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        b: usize,
        call: Routed,
        info: &mut Info,
    ) -> Response {
        let Routed { id, method, params } = call;
        let backend = self.backends[b].clone();
        info.backend = Some(backend.name().to_string());
        if !self.may_use(&backend, caller)
            || (method == "tools/call"
                && !policy::may_use_tool(
                    self.config.auth.mode,
                    &backend.config,
                    params
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                    caller,
                ))
        {
            info.rpc_error = Some(jsonrpc::FORBIDDEN);
            let who = caller.email.as_deref().unwrap_or(&caller.sub);
            let what = match (method.as_str(), params.get("name").and_then(Value::as_str)) {
                ("tools/call", Some(t)) => format!("tool {t:?} of backend {:?}", backend.name()),
                _ => format!("backend {:?}", backend.name()),
            };
            tracing::info!(backend = backend.name(), user = who, "refused by policy");
            let message = format!("Forbidden: {who} may not use {what}");
            info.detail = Some(format!("refused by policy: {message}"));
            return Response::json(
                200,
                &jsonrpc::error_with_data(
                    &id,
                    jsonrpc::FORBIDDEN,
                    message,
                    json!({"backend": backend.name()}),
                ),
            );
        }
        let mut extra = Self::identity_headers(&backend, caller);
        if !info.request_id.is_empty() {
            extra.push((
                http::HeaderName::from_static("x-request-id"),
                info.request_id.clone(),
            ));
        }
        let mut params = params;
        if let Some(tp) = &info.traceparent {
            extra.push((http::HeaderName::from_static("traceparent"), tp.clone()));
            // Trace context travels in _meta too (2026-07-28 convention), unless the
            // client put its own there.
            if let Value::Object(p) = &mut params {
                let meta = p.entry("_meta").or_insert_with(|| json!({}));
                if let Value::Object(m) = meta {
                    m.entry("traceparent").or_insert_with(|| json!(tp));
                }
            }
        }
        let body =
            to_bytes(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let key = (claims.sid.clone(), id.to_string());
        self.inflight.insert(key.clone(), b);
        let guard = InflightGuard {
            map: self.inflight.clone(),
            key,
        };
        let r = self
            .in_session(claims, b, |s| {
                let (backend, body) = (&backend, body.clone());
                let extra = &extra;
                async move { backend.send(&claims.sid, &s, body, extra).await }
            })
            .await;
        match r {
            Ok(Reply::Json(bytes)) => Response::json_bytes(200, bytes),
            Ok(Reply::Accepted) => backend_error(
                &id,
                backend.name(),
                &UpstreamError::Protocol("it answered a request with no body".into()),
            ),
            Ok(Reply::Stream(stream)) => {
                let name = backend.name().to_string();
                let backend_for_err = backend.clone();
                let events =
                    futures::stream::unfold((stream, false, guard), move |(mut s, done, guard)| {
                        let (id, name, backend) =
                            (id.clone(), name.clone(), backend_for_err.clone());
                        async move {
                            if done {
                                return None;
                            }
                            match s.next().await {
                                Some(Ok(mut msg)) => {
                                    relay::rewrite_server_request(&name, &mut msg);
                                    let is_answer =
                                        msg.get("id") == Some(&id) && msg.get("method").is_none();
                                    Some((format_event(&to_bytes(&msg)), (s, is_answer, guard)))
                                }
                                Some(Err(e)) => {
                                    backend.record::<()>(&Err(e.clone()));
                                    let err = backend_error_value(&id, &name, &e);
                                    Some((format_event(&to_bytes(&err)), (s, true, guard)))
                                }
                                None => {
                                    let err =
                                        backend_error_value(&id, &name, &UpstreamError::Closed);
                                    Some((format_event(&to_bytes(&err)), (s, true, guard)))
                                }
                            }
                        }
                    });
                Response::Sse {
                    headers: Vec::new(),
                    stream: events.boxed(),
                }
            }
            Err(e) => {
                info.rpc_error = Some(e.code());
                info.detail = Some(format!("backend {:?}: {e}", backend.name()));
                tracing::warn!(backend = backend.name(), error = %e, "routed request failed");
                backend_error(&id, backend.name(), &e)
            }
        }
    }

    async fn notification(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        method: &str,
        params: Option<Value>,
    ) {
        let targets: Vec<usize> = match method {
            "notifications/initialized" => return,
            "notifications/cancelled" => {
                let rid = params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .map(Value::to_string);
                match rid.and_then(|r| {
                    self.inflight
                        .get(&(claims.sid.clone(), r))
                        .map(|e| *e.value())
                }) {
                    Some(b) => vec![b],
                    None => self
                        .backends
                        .iter()
                        .filter(|b| self.may_use(b, caller))
                        .map(|b| b.index)
                        .collect(),
                }
            }
            "notifications/roots/list_changed" => self
                .backends
                .iter()
                .filter(|b| self.may_use(b, caller))
                .map(|b| b.index)
                .collect(),
            _ => return,
        };
        let mut note = json!({"jsonrpc": "2.0", "method": method});
        if let Some(p) = params {
            note["params"] = p;
        }
        let body = to_bytes(&note);
        futures::future::join_all(targets.into_iter().map(|b| {
            let body = body.clone();
            async move {
                let backend = &self.backends[b];
                if let Ok(s) = self.upstream(claims, b).await {
                    if let Err(e) = backend.send(&claims.sid, &s, body, &[]).await {
                        tracing::debug!(backend = backend.name(), error = %e, "notification not delivered");
                    }
                }
            }
        }))
        .await;
    }

    /// The client answers a request that a backend sent through the gateway.
    async fn client_answer(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: Value,
        mut body: Value,
        info: &mut Info,
    ) -> Response {
        let Some((name, original)) = relay::unwrap_id(&id) else {
            return Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                format!("Bad Request: response id {id} answers no request of this gateway"),
            );
        };
        let Some(backend) = self.backend(name).cloned() else {
            return Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                format!("Bad Request: response id {id} names no backend"),
            );
        };
        info.backend = Some(backend.name().to_string());
        if !self.may_use(&backend, caller) {
            return Response::refuse(403, jsonrpc::FORBIDDEN, "Forbidden: not your backend");
        }
        body["id"] = original;
        let bytes = to_bytes(&body);
        let r = self
            .in_session(claims, backend.index, |s| {
                let (backend, bytes) = (&backend, bytes.clone());
                async move { backend.send(&claims.sid, &s, bytes, &[]).await }
            })
            .await;
        match r {
            Ok(_) => Response::accepted(),
            Err(e) => Response::refuse(
                502,
                e.code(),
                format!(
                    "backend {:?} did not take the response: {e}",
                    backend.name()
                ),
            ),
        }
    }

    /// GET: one downstream stream fed by each backend's server stream, re-opened with
    /// backoff while the client stays connected.
    async fn get(self: &Arc<Self>, req: Request, caller: &Caller, info: &mut Info) -> Response {
        if !accepts(&req.headers, "text/event-stream") {
            return Response::refuse(
                406,
                jsonrpc::INVALID_REQUEST,
                "Not Acceptable: Accept must include text/event-stream",
            );
        }
        // Listening before the session is checked: a DELETE in between is not missed.
        let ended = self.session_ended.subscribe();
        let claims = match self.open_session(&req.headers, caller) {
            Ok(c) => c,
            Err(r) => return r,
        };
        info.session = Some(claims.sid.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        for b in self
            .backends
            .iter()
            .filter(|b| self.may_use(b, caller))
            .map(|b| b.index)
        {
            let (gw, claims, tx) = (self.clone(), claims.clone(), tx.clone());
            tokio::spawn(async move { gw.pump_server_stream(claims, b, tx).await });
        }
        drop(tx);
        let keepalive =
            tokio_stream_interval(KEEPALIVE).map(|_| Bytes::from_static(b": keepalive\n\n"));
        let events = futures::stream::select(tokio_stream_receiver(rx), keepalive);
        // Send a comment first so the client sees the stream open at once.
        // The stream ends with the session (DELETE); the pumps stop when it is dropped.
        let stream = futures::stream::once(async { Bytes::from_static(b": stream open\n\n") })
            .chain(events)
            .take_until(self.clone().session_end(claims.sid.clone(), ended));
        Response::Sse {
            headers: Vec::new(),
            stream: stream.boxed(),
        }
    }

    /// Resolves when session `sid` is ended with DELETE on this replica.
    async fn session_end(
        self: Arc<Self>,
        sid: String,
        mut ended: tokio::sync::broadcast::Receiver<Arc<str>>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match ended.recv().await {
                Ok(s) if *s == *sid => return,
                Ok(_) => {}
                // Missed some: the map says whether this one was among them.
                Err(RecvError::Lagged(_)) if self.ended.contains_key(&sid) => return,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return std::future::pending().await,
            }
        }
    }

    async fn pump_server_stream(
        self: Arc<Self>,
        claims: Arc<SessionClaims>,
        b: usize,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) {
        let backend = self.backends[b].clone();
        let mut backoff = Duration::from_millis(500);
        loop {
            // An ended session's stream stops; and it never re-creates an upstream
            // session (that would start a per-session process nobody will use).
            if self.ended.contains_key(&claims.sid) {
                return;
            }
            let open = async {
                let s = self.upstream(&claims, b).await?;
                backend.open_stream(&claims.sid, &s).await
            };
            let opened = tokio::select! {
                r = open => r,
                _ = tx.closed() => return,
            };
            match opened {
                Ok(Some(mut stream)) => {
                    backoff = Duration::from_millis(500);
                    loop {
                        let item = tokio::select! {
                            i = stream.next() => i,
                            _ = tx.closed() => return,
                        };
                        match item {
                            Some(Ok(mut msg)) => {
                                relay::rewrite_server_request(backend.name(), &mut msg);
                                if tx.send(format_event(&to_bytes(&msg))).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::debug!(backend = backend.name(), error = %e, "server stream broke");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Ok(None) => return, // the backend has no server stream
                // Retried with backoff: a later request may re-create the upstream
                // session (then overrides have it).
                Err(UpstreamError::SessionExpired) => {}
                Err(e) => {
                    tracing::debug!(backend = backend.name(), error = %e, "cannot open server stream")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = tx.closed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn delete(self: &Arc<Self>, req: Request, caller: &Caller, info: &mut Info) -> Response {
        let claims = match self.open_session(&req.headers, caller) {
            Ok(c) => c,
            Err(r) => return r,
        };
        info.session = Some(claims.sid.clone());
        futures::future::join_all(self.backends.iter().map(|b| {
            let claims = &claims;
            async move {
                let s = self
                    .overrides
                    .remove(&(claims.sid.clone(), b.index))
                    .map(|(_, s)| s)
                    .or_else(|| claims.up.get(b.name()).cloned());
                if let Some(s) = s {
                    let _ = tokio::time::timeout(b.config.timeout, b.end_session(&claims.sid, &s))
                        .await;
                }
            }
        }))
        .await;
        let expiry = claims.iat + self.config.server.session_ttl.as_secs();
        if self.ended.len() > 100_000 {
            let now = now_secs();
            self.ended.retain(|_, e| *e > now);
        }
        self.ended.insert(claims.sid.clone(), expiry);
        let _ = self.session_ended.send(claims.sid.as_str().into());
        Response::Full {
            status: 200,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// A request routed to one backend, with its names already translated.
struct Routed {
    id: Value,
    method: String,
    params: Value,
}

struct InflightGuard {
    map: Arc<DashMap<(String, String), usize>>,
    key: (String, String),
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.map.remove(&self.key);
    }
}

fn backend_error_value(id: &Value, backend: &str, e: &UpstreamError) -> Value {
    jsonrpc::error_with_data(
        id,
        e.code(),
        format!("backend {backend:?} failed: {e}"),
        json!({"backend": backend}),
    )
}

fn backend_error(id: &Value, backend: &str, e: &UpstreamError) -> Response {
    Response::json(200, &backend_error_value(id, backend, e))
}

/// Reduces a reply to the JSON-RPC answer with `id` (for batches).
async fn collect_answer(resp: Response, id: &Value) -> Value {
    match resp {
        Response::Full { body, .. } => serde_json::from_slice(&body)
            .unwrap_or_else(|_| jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "no answer")),
        Response::Sse { mut stream, .. } => {
            let mut parser = crate::upstream::sse::Parser::new(crate::upstream::http::MAX_MESSAGE);
            while let Some(chunk) = stream.next().await {
                parser.push(&chunk);
                while let Ok(Some(ev)) = parser.next_event() {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        if v.get("id") == Some(id) && v.get("method").is_none() {
                            return v;
                        }
                    }
                }
            }
            jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "no answer")
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether the Accept header admits `mime` (`*/*` and `type/*` count).
fn accepts(h: &HeaderMap, mime: &str) -> bool {
    let major = mime.split('/').next().unwrap_or("");
    h.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str().unwrap_or("").split(',').any(|part| {
            let m = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            m == mime || m == "*/*" || m == format!("{major}/*")
        })
    })
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    matches!(host_without_port(rest), "localhost" | "127.0.0.1" | "[::1]")
}

fn tokio_stream_interval(every: Duration) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        |mut iv| async move {
            iv.tick().await;
            Some(((), iv))
        },
    )
}

fn tokio_stream_receiver(
    rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Bytes> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn accept_matching() {
        assert!(accepts(
            &headers(&[("accept", "application/json, text/event-stream")]),
            "text/event-stream"
        ));
        assert!(accepts(&headers(&[("accept", "*/*")]), "application/json"));
        assert!(!accepts(
            &headers(&[("accept", "application/json")]),
            "text/event-stream"
        ));
        assert!(!accepts(&headers(&[]), "application/json"));
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_without_port("localhost:8080"), "localhost");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert!(is_loopback_origin("http://localhost:3000"));
        assert!(!is_loopback_origin("http://evil.example.com"));
        assert!(!is_loopback_origin("null"));
    }
}
