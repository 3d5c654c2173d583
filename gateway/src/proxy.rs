//! The Pingora `ProxyHttp` implementation: thin. It routes by path and hands each
//! request to the module that owns it.
//!
//! - `/mcp`: the aggregated endpoint, terminated here (the body must be parsed to be
//!   routed, and Pingora can only replay bodies up to 64 KiB), served by
//!   [`crate::mcp::handler`].
//! - `/backends/{name}/mcp`: Pingora's own proxy path to one backend, bodies untouched.
//! - `/healthz`, `/readyz`: health.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use rand::RngCore;
use serde_json::Value;

use crate::audit::{AuditEvent, Auditor};
use crate::auth::bearer::Authenticator;
use crate::auth::{metadata, policy, Identity};
use crate::config::AuthMode;
use crate::health;
use crate::mcp::handler::{Caller, Gateway, Info, Request, Response};
use crate::mcp::jsonrpc;
use crate::metrics;
use crate::upstream::Backend;

pub struct GatewayProxy {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    /// The audit log; every request to `/mcp` and to a pass-through route is recorded.
    pub audit: Option<Arc<Auditor>>,
}

/// Per-request state.
pub struct Ctx {
    request_id: String,
    started: Instant,
    info: Info,
    route: Route,
    caller: Option<Arc<Identity>>,
}

fn request_id(session: &Session) -> String {
    if let Some(v) = session.req_header().headers.get("x-request-id") {
        if let Ok(s) = v.to_str() {
            if !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return s.to_string();
            }
        }
    }
    let mut raw = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The audit record of a finished request. Moves the request's strings out of `ctx`
/// (the access log line is written before), so building it copies none.
fn audit_event(
    ctx: &mut Ctx,
    elapsed: std::time::Duration,
    status: u16,
    e: Option<&pingora::Error>,
) -> AuditEvent {
    let mut ev = AuditEvent::request_at(
        chrono::Utc::now()
            - chrono::Duration::from_std(elapsed).unwrap_or_else(|_| chrono::Duration::zero()),
    );
    if let Some(who) = &ctx.caller {
        ev.sub = Some(who.sub.clone());
        ev.email = who.email.clone();
        ev.groups = who.groups.clone();
        ev.client_id = who.client_id.clone();
    }
    let info = &mut ctx.info;
    ev.session = info.session.take();
    ev.request_id = Some(std::mem::take(&mut ctx.request_id));
    ev.rpc_method = info.rpc_method.take().map(|m| m.as_str().to_string());
    ev.backend = info.backend.take();
    ev.target = info.target.take();
    ev.args_digest = info.args_digest.take();
    ev.args = info.args.take();
    ev.http_status = status;
    ev.rpc_error = info.rpc_error;
    ev.latency_ms = elapsed.as_secs_f64() * 1000.0;
    ev.bytes_in = info.bytes_in;
    ev.bytes_out = info.bytes_out;
    ev.source_addr = info.source_addr.take();
    ev.user_agent = info.user_agent.take();
    ev.detail = info
        .auth_error
        .take()
        .or_else(|| info.detail.take())
        .or_else(|| e.map(|e| e.to_string()));
    ev
}

/// The client's address: the last entry of `header` when configured (the one the load
/// balancer appended), else the TCP peer.
fn client_address(session: &Session, header: Option<&http::HeaderName>) -> Option<String> {
    if let Some(h) = header {
        let last = session
            .req_header()
            .headers
            .get_all(h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|v| !v.is_empty());
        if let Some(ip) = last.and_then(|v| v.parse::<std::net::IpAddr>().ok()) {
            return Some(ip.to_string());
        }
    }
    session.client_addr().map(|a| match a.as_inet() {
        Some(inet) => inet.ip().to_string(),
        None => a.to_string(),
    })
}

impl GatewayProxy {
    /// Authenticates the request; on failure writes the 401/403 and returns `false`.
    async fn authenticate(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.auth.authenticate(&session.req_header().headers).await {
            Ok(who) => {
                ctx.info.user = Some(who.email.clone().unwrap_or_else(|| who.sub.clone()));
                ctx.caller = Some(who);
                Ok(true)
            }
            Err(e) => {
                let cfg = &self.gateway.config;
                let (status, challenge) = metadata::challenge(&cfg.server, &cfg.auth, &e);
                ctx.info.auth_error = Some(e.detail());
                let message = match status {
                    401 => format!("Unauthorized: {e}"),
                    403 => format!("Forbidden: {e}"),
                    _ => format!("Service Unavailable: {e}"),
                };
                let r = Response::refuse(status, jsonrpc::INVALID_REQUEST, message)
                    .with_header("www-authenticate", challenge);
                write_response(session, r, &ctx.request_id).await?;
                Ok(false)
            }
        }
    }

    async fn serve_mcp(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let Some(body) = self.read_body(session, ctx).await? else {
            return Ok(());
        };
        ctx.info.traceparent = session
            .req_header()
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            .map(str::to_string);
        let req = Request {
            method: session.req_header().method.clone(),
            headers: session.req_header().headers.clone(),
            body,
        };
        let caller = ctx
            .caller
            .clone()
            .unwrap_or_else(|| Arc::new(Caller::anonymous()));
        let resp = self.gateway.handle(req, &caller, &mut ctx.info).await;
        ctx.info.bytes_out = write_response(session, resp, &ctx.request_id).await?;
        Ok(())
    }

    /// `/backends/{name}/mcp`: the same guards as `/mcp` (Host/Origin, identity, backend
    /// and tool policy, body limits), then relayed to the one backend.
    async fn serve_passthrough(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        backend: &Arc<Backend>,
    ) -> Result<()> {
        if let Err(r) = self
            .gateway
            .check_host_origin(&session.req_header().headers)
        {
            write_response(session, r, &ctx.request_id).await?;
            return Ok(());
        }
        if !self.authenticate(session, ctx).await? {
            return Ok(());
        }
        let caller = ctx
            .caller
            .clone()
            .unwrap_or_else(|| Arc::new(Caller::anonymous()));
        ctx.info.backend = Some(backend.name().to_string());
        if !policy::may_use_backend(self.gateway.config.auth.mode, &backend.config, &caller) {
            ctx.info.rpc_error = Some(jsonrpc::FORBIDDEN);
            let r = Response::refuse(
                403,
                jsonrpc::FORBIDDEN,
                format!("Forbidden: you may not use backend {:?}", backend.name()),
            );
            write_response(session, r, &ctx.request_id).await?;
            return Ok(());
        }
        let Some(body) = self.read_body(session, ctx).await? else {
            return Ok(());
        };
        let (method, headers) = {
            let h = session.req_header();
            (h.method.clone(), h.headers.clone())
        };
        let resp = crate::mcp::passthrough::serve(
            &self.gateway,
            backend,
            &caller,
            &method,
            &headers,
            body,
            &mut ctx.info,
        )
        .await;
        ctx.info.bytes_out = write_response(session, resp, &ctx.request_id).await?;
        Ok(())
    }

    /// Reads the whole request body, bounded by `server.max_body_bytes` (413) and by
    /// `server.body_timeout_s` for all of it (408). `None`: refused, the answer written.
    async fn read_body(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Option<Bytes>> {
        let server = &self.gateway.config.server;
        let max = server.max_body_bytes;
        let declared = session
            .req_header()
            .headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > max) {
            self.refuse_body(session, ctx, BodyRefusal::TooLarge(max))
                .await?;
            return Ok(None);
        }
        let read = async {
            let mut body = BytesMut::new();
            while let Some(chunk) = session.read_request_body().await? {
                if body.len() + chunk.len() > max {
                    return Ok(Err(BodyRefusal::TooLarge(max)));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, Box<pingora::Error>>(Ok(body.freeze()))
        };
        let outcome = match tokio::time::timeout(server.body_timeout, read).await {
            Ok(read) => read?,
            Err(_) => Err(BodyRefusal::TooSlow(server.body_timeout)),
        };
        match outcome {
            Ok(body) => {
                ctx.info.request_id = ctx.request_id.clone();
                ctx.info.bytes_in = body.len() as u64;
                Ok(Some(body))
            }
            Err(refusal) => {
                self.refuse_body(session, ctx, refusal).await?;
                Ok(None)
            }
        }
    }

    async fn refuse_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        refusal: BodyRefusal,
    ) -> Result<()> {
        // The rest of the body is not read, so the connection cannot be reused.
        session.set_keepalive(None);
        ctx.info.rpc_error = Some(jsonrpc::INVALID_REQUEST);
        let resp = match refusal {
            BodyRefusal::TooLarge(max) => Response::refuse(
                413,
                jsonrpc::INVALID_REQUEST,
                format!("Payload Too Large: the body exceeds server.max_body_bytes ({max} bytes)"),
            ),
            BodyRefusal::TooSlow(limit) => Response::refuse(
                408,
                jsonrpc::INVALID_REQUEST,
                format!(
                    "Request Timeout: the body did not arrive within server.body_timeout_s ({} s)",
                    limit.as_secs()
                ),
            ),
        };
        ctx.info.detail = Some("request body refused".into());
        write_response(session, resp, &ctx.request_id).await?;
        Ok(())
    }
}

/// Why a request body was not taken.
enum BodyRefusal {
    TooLarge(usize),
    TooSlow(Duration),
}

/// Writes a handler response: a full body, or an SSE stream event by event.
pub async fn write_response(
    session: &mut Session,
    resp: Response,
    request_id: &str,
) -> Result<u64> {
    match resp {
        Response::Full {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut h = ResponseHeader::build(status, Some(headers.len() + 3))?;
            if let Some(ct) = content_type {
                h.insert_header("content-type", ct)?;
            }
            h.insert_header("content-length", body.len().to_string())?;
            h.insert_header("x-request-id", request_id)?;
            for (k, v) in headers {
                h.insert_header(k, v)?;
            }
            let empty = body.is_empty();
            let written = body.len() as u64;
            session.write_response_header(Box::new(h), empty).await?;
            if !empty {
                session.write_response_body(Some(body), true).await?;
            }
            Ok(written)
        }
        Response::Sse {
            headers,
            mut stream,
        } => {
            let mut h = ResponseHeader::build(200, Some(headers.len() + 4))?;
            h.insert_header("content-type", "text/event-stream")?;
            h.insert_header("cache-control", "no-cache")?;
            h.insert_header("transfer-encoding", "chunked")?;
            h.insert_header("x-request-id", request_id)?;
            for (k, v) in headers {
                h.insert_header(k, v)?;
            }
            session.write_response_header(Box::new(h), false).await?;
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                if session.is_process_shutting_down() {
                    break;
                }
                written += chunk.len() as u64;
                if session
                    .write_response_body(Some(chunk), false)
                    .await
                    .is_err()
                {
                    // The client went away; dropping the stream releases the upstream.
                    return Ok(written);
                }
            }
            session.write_response_body(None, true).await?;
            Ok(written)
        }
    }
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::json(status, v)
}

/// What a request is for, decided once in `request_filter` from its path.
pub enum Route {
    /// `/mcp`: the aggregated endpoint.
    Mcp,
    /// `/backends/{name}/mcp` of an HTTP backend.
    Passthrough(Arc<Backend>),
    /// RFC 9728 protected-resource metadata (authentication on).
    ResourceMetadata,
    Health,
    Ready,
    NotFound,
}

impl Route {
    pub fn of(path: &str, gateway: &Gateway) -> Route {
        match path {
            "/mcp" => Route::Mcp,
            metadata::PATH_MCP | metadata::PATH_ROOT
                if gateway.config.auth.mode != AuthMode::None =>
            {
                Route::ResourceMetadata
            }
            "/healthz" => Route::Health,
            "/readyz" => Route::Ready,
            p => p
                .strip_prefix("/backends/")
                .and_then(|rest| rest.strip_suffix("/mcp"))
                .and_then(|name| gateway.backend(name))
                .filter(|b| b.http_url().is_some())
                .map_or(Route::NotFound, |b| Route::Passthrough(b.clone())),
        }
    }

    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Mcp => "mcp",
            Route::Passthrough(_) => "passthrough",
            _ => "other",
        }
    }

    /// Whether the request goes to the audit log (every request that can reach a backend).
    pub fn audited(&self) -> bool {
        matches!(self, Route::Mcp | Route::Passthrough(_))
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: String::new(),
            started: Instant::now(),
            info: Info::default(),
            route: Route::NotFound,
            caller: None,
        }
    }

    /// Every route is served here, to the end: the body of an MCP request must be read
    /// to be routed or checked, which Pingora's proxy path cannot replay past 64 KiB.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = request_id(session);
        ctx.info.source_addr = client_address(
            session,
            self.gateway.config.server.client_ip_header.as_ref(),
        );
        ctx.info.user_agent = session
            .req_header()
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        ctx.route = Route::of(session.req_header().uri.path(), &self.gateway);
        match &ctx.route {
            Route::Mcp => {
                if self.authenticate(session, ctx).await? {
                    self.serve_mcp(session, ctx).await?;
                }
            }
            Route::Passthrough(backend) => {
                let backend = backend.clone();
                self.serve_passthrough(session, ctx, &backend).await?;
            }
            Route::ResourceMetadata => {
                let cfg = &self.gateway.config;
                let doc = metadata::document(&cfg.server, &cfg.auth);
                let r = json_response(200, &doc)
                    .with_header("access-control-allow-origin", "*".into())
                    .with_header("cache-control", "max-age=300".into());
                write_response(session, r, &ctx.request_id).await?;
            }
            Route::Health => {
                let r = json_response(200, &serde_json::json!({"status": "ok"}));
                write_response(session, r, &ctx.request_id).await?;
            }
            Route::Ready => {
                let (status, doc) = health::public_readiness(&self.gateway);
                write_response(session, json_response(status, &doc), &ctx.request_id).await?;
            }
            Route::NotFound => {
                let r = Response::refuse(
                    404,
                    jsonrpc::INVALID_REQUEST,
                    format!(
                        "Not Found: {}; the MCP endpoint is /mcp",
                        session.req_header().uri.path()
                    ),
                );
                write_response(session, r, &ctx.request_id).await?;
            }
        }
        Ok(true)
    }

    /// Never reached: `request_filter` answers every request itself.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            InternalError,
            "every route is served in request_filter",
        ))
    }

    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        // One reading for the metric, the log line and the audit record.
        let elapsed = ctx.started.elapsed();
        let req = session.req_header();
        if let Some(m) = metrics::requests() {
            let route = ctx.route.label();
            let method = ctx
                .info
                .rpc_method
                .as_ref()
                .map(jsonrpc::Method::label)
                .unwrap_or_else(|| req.method.as_str());
            let outcome =
                metrics::outcome(status, ctx.info.rpc_error, ctx.info.auth_error.is_some());
            let backend = ctx.info.backend.as_deref().unwrap_or("");
            m.requests
                .with_label_values(&[route, method, backend, outcome])
                .inc();
            m.latency
                .with_label_values(&[route, method])
                .observe(elapsed.as_secs_f64());
        }
        let audited = ctx.route.audited();
        tracing::info!(
            request_id = %ctx.request_id,
            http_method = %req.method,
            path = req.uri.path(),
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            rpc_method = ctx.info.rpc_method.as_ref().map(jsonrpc::Method::as_str),
            backend = ctx.info.backend.as_deref(),
            target = ctx.info.target.as_deref(),
            rpc_error = ctx.info.rpc_error,
            session = ctx.info.session.as_deref(),
            user = ctx.info.user.as_deref(),
            auth_error = ctx.info.auth_error.as_deref(),
            error = e.map(|e| e.to_string()),
            "request"
        );
        if let (Some(audit), true) = (&self.audit, audited) {
            audit.record(audit_event(ctx, elapsed, status, e));
        }
    }
}
