//! The aggregated `/mcp` endpoint: Streamable HTTP in front, many backends behind.
//!
//! This module knows MCP and HTTP semantics but nothing of Pingora: it takes a
//! [`Request`] and returns a [`Response`] (a full body or an SSE stream), so it can be
//! driven by the proxy and tested on its own. Here: the [`Gateway`] itself, the POST
//! path (one message or a batch) and the dispatch of a request by its method. The verbs
//! live beside it:
//!
//! - [`super::guards`]: `Host`/`Origin`, `Accept`, `Content-Type`;
//! - [`super::lifecycle`]: `initialize`, sealed sessions, upstream sessions, `DELETE`;
//! - [`super::routing`]: which backend a name or URI belongs to, and who may use it;
//! - [`super::fanout`]: the list methods, merged across backends;
//! - [`super::forward`]: calls routed to one backend;
//! - [`super::answers`]: notifications and the client's answers to backends;
//! - [`super::stream`]: the `GET` stream;
//! - [`super::passthrough`]: `/backends/{name}/mcp`, one backend behind the same guards.

use std::sync::Arc;

use dashmap::DashMap;
use http::HeaderMap;
use serde_json::{json, Value};

pub use super::exchange::{Caller, Info, Request, Response};
use super::index::Index;
use super::jsonrpc::{self, Message, Method};
use super::session::{Sealer, SessionClaims, UpstreamSession};
use super::version;
use crate::config::Config;
use crate::mcp::fanout::ListKind;
use crate::mcp::forward::collect_answer;
use crate::mcp::forward::Routed;
use crate::mcp::guards::{check_post_headers, GuardRefusal};
use crate::mcp::guards::{contains, Needle};
use crate::upstream::Backend;
use crate::wire::meta::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};

pub struct Gateway {
    pub config: Arc<Config>,
    pub backends: Vec<Arc<Backend>>,
    pub(super) sealer: Sealer,
    /// Sessions ended with DELETE on this replica: sid → expiry (unix seconds).
    pub(super) ended: DashMap<String, u64>,
    /// Each session ended with DELETE on this replica, as it ends: its GET streams close.
    pub(super) session_ended: tokio::sync::broadcast::Sender<Arc<str>>,
    /// Upstream sessions re-created after the sealed one expired: (sid, backend).
    pub(super) overrides: DashMap<(String, usize), UpstreamSession>,
    pub(super) index: Index,
    /// Requests in flight: (sid, id as JSON) → backend, to route cancellations.
    pub(super) inflight: Arc<DashMap<(String, String), usize>>,
    /// Last capability bits each backend reported.
    pub(super) known_caps: Vec<std::sync::atomic::AtomicU16>,
    /// Session ids opened before (bounded: emptied when full). Claims never change, and
    /// the checks that can (ended, expired, user) run on every request.
    pub(super) opened: DashMap<Box<str>, Arc<SessionClaims>>,
    /// Pass-through session ids opened before (bounded the same way).
    pub(super) opened_passthrough: DashMap<Box<str>, Arc<super::session::PassthroughSession>>,
    /// The audit log, when enabled: asked how to keep arguments, handed every record.
    pub audit: Option<Arc<dyn crate::record::AuditSink>>,
    /// Calls held open for a modern client's input responses ([`super::bridge`]).
    pub holds: super::bridge::Holds,
    /// Input requests of modern backends asked of 2025 clients ([`super::asks`]).
    pub asks: super::asks::Asks,
    /// 2025 sessions' resource subscriptions at modern backends ([`super::subscriptions`]).
    pub subscriptions: super::subscriptions::Subscriptions,
    /// Modern requests' per-request sessions, made once per person and client.
    pub(super) stateless: super::modern::StatelessClaims,
    /// The next id of a modern client's call at a backend.
    upstream_ids: std::sync::atomic::AtomicU64,
}

impl Gateway {
    pub fn new(
        config: Arc<Config>,
        client: reqwest::Client,
        key: [u8; 32],
        audit: Option<Arc<dyn crate::record::AuditSink>>,
    ) -> Gateway {
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
            backends,
            sealer: Sealer::new(&key),
            ended: DashMap::new(),
            session_ended: tokio::sync::broadcast::channel(64).0,
            overrides: DashMap::new(),
            index: Index::default(),
            inflight: Arc::new(DashMap::new()),
            known_caps,
            audit,
            opened: DashMap::new(),
            opened_passthrough: DashMap::new(),
            holds: super::bridge::Holds::new(
                config.server.held_calls_max,
                config.server.held_call_ttl,
            ),
            asks: super::asks::Asks::new(config.server.held_calls_max, config.server.held_call_ttl),
            subscriptions: Default::default(),
            stateless: super::modern::StatelessClaims::new(),
            upstream_ids: std::sync::atomic::AtomicU64::new(1),
            config,
        }
    }

    /// A fresh id for a modern client's call in an upstream session or pipe it shares:
    /// an integer from 1 up, as the SDKs number their requests. Disjoint from the
    /// gateway's own requests there (`initialize` goes as 0, the rest as strings,
    /// `gw-1`, `gw-discover`, `gw-listen`).
    pub(super) fn next_upstream_id(&self) -> u64 {
        self.upstream_ids
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Seals and opens session ids (the `/mcp` ones and the pass-through route's).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn backend(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|b| b.name() == name)
    }

    /// Serves one request to `/mcp`.
    pub async fn handle(
        self: &Arc<Self>,
        req: Request,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        // A modern request's head passed this check already (precheck).
        if req.head.is_none() {
            if let Err(r) = self.check_host_origin(&req.headers) {
                return r.into();
            }
        }
        match req.method {
            http::Method::POST => self.post(req, caller, info).await,
            http::Method::GET => self.get(req, caller, info).await,
            http::Method::DELETE => self.delete(req, caller, info).await,
            _ => GuardRefusal::Method.into(),
        }
    }

    async fn post(
        self: &Arc<Self>,
        mut req: Request,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        if let Err(r) = check_post_headers(&req.headers) {
            return r.into();
        }
        // A modern request by its header, in the plain case, is read in one pass (its
        // metadata as text); anything else below. A head read before the body said so
        // already (a modern version, no session).
        if req.head.is_some()
            || req.headers.get(MCP_SESSION_ID).is_none()
                && req
                    .headers
                    .get(MCP_PROTOCOL_VERSION)
                    .is_some_and(|v| !super::version::is_supported(v.to_str().unwrap_or("")))
        {
            if let Some(r) = crate::wire::request::ModernRequest::read(&req.body) {
                let route = req.head.as_mut().and_then(|h| h.route.take());
                return self.modern_read(&req, r, route, caller, info).await;
            }
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
        if req.headers.get(MCP_SESSION_ID).is_none() {
            // The era is chosen per request: a sessionless request that names a modern
            // revision (header or _meta) is served statelessly.
            let params = match &msg {
                Message::Request { params, .. } | Message::Notification { params, .. } => {
                    params.as_ref()
                }
                Message::Response { .. } => None,
            };
            if super::modern::is_modern_request(&req.headers, params) {
                return self.modern(&req, msg, caller, info).await;
            }
        }
        if let Message::Request { method, id, params } = &msg {
            info.rpc_method = Some(method.clone());
            if *method == Method::Initialize {
                return self.initialize(id, params.as_ref(), caller, info).await;
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
            Err(_) if headers.get(MCP_SESSION_ID).is_none() => {
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
                note_error(&resp, info);
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

    pub(super) async fn request(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: Value,
        method: Method,
        params: Option<Value>,
        info: &mut Info,
    ) -> Response {
        if let Some(kind) = ListKind::of(&method) {
            return self.list(claims, caller, &id, &method, kind, params).await;
        }
        let call = Routed {
            id,
            method,
            params: params.unwrap_or_else(|| json!({})),
        };
        match call.method {
            Method::Ping => Response::json(200, &jsonrpc::result(&call.id, json!({}))),
            Method::Initialize => call.refuse(
                jsonrpc::INVALID_REQUEST,
                "session is already initialized".into(),
            ),
            Method::LoggingSetLevel => self.set_level(claims, caller, call).await,
            Method::ToolsCall | Method::PromptsGet => {
                self.call_by_name(claims, caller, call, None, info).await
            }
            Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
                self.call_by_uri(claims, caller, call, info).await
            }
            Method::CompletionComplete => self.complete(claims, caller, call, info).await,
            Method::ToolsList
            | Method::PromptsList
            | Method::ResourcesList
            | Method::ResourcesTemplatesList
            | Method::ServerDiscover
            | Method::SubscriptionsListen
            | Method::NotificationsInitialized
            | Method::NotificationsCancelled
            | Method::NotificationsRootsListChanged
            | Method::Other(_) => {
                let message = format!("Method not found: {}", call.method);
                call.refuse(jsonrpc::METHOD_NOT_FOUND, message)
            }
        }
    }
}

/// Records the JSON-RPC error a full answer carries, if any, in the request's record.
/// Most answers are results: only one that may hold an error is parsed.
pub(super) fn note_error(resp: &Response, info: &mut Info) {
    let Response::Full { body, .. } = resp else {
        return;
    };
    static ERROR: Needle = Needle::new(b"\"error\"");
    if !contains(body, &ERROR) {
        return;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let err = v.get("error");
        info.rpc_error = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
        if info.detail.is_none() {
            info.detail = err
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
}
