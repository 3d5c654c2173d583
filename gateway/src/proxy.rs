//! The Pingora `ProxyHttp` implementation: thin. It routes by path and hands each
//! request to the module that owns it.
//!
//! - `/mcp`: the aggregated endpoint, terminated here (the body must be parsed to be
//!   routed, and Pingora can only replay bodies up to 64 KiB), served by
//!   [`crate::mcp::handler`].
//! - `/backends/{name}/mcp`: Pingora's own proxy path to one backend, bodies untouched.
//! - `/healthz`, `/readyz`: health.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{header, HeaderName};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use rand::RngCore;
use serde_json::Value;

use crate::audit::AuditEvent;
use crate::auth::bearer::Authenticator;
use crate::auth::{metadata, policy};
use crate::config::AuthMode;
use crate::drain::{Drain, SseCursor};
use crate::health;
use crate::mcp::handler::{Caller, Gateway, Request, Response};
use crate::mcp::jsonrpc;
use crate::metrics;
use crate::record::RequestRecord;
use crate::upstream::Backend;

pub struct GatewayProxy {
    pub gateway: Arc<Gateway>,
    pub auth: Arc<Authenticator>,
    /// Keep-alive lifetimes, `/readyz` while draining, streams ended when stopping.
    pub drain: Arc<Drain>,
}

/// Per-request state.
pub struct Ctx {
    route: Route,
    /// The request's one record: HTTP facts, caller, MCP facts.
    record: RequestRecord,
    /// The request's span (`Span::none()` when tracing is off); ends with the request.
    span: tracing::Span,
}

/// The request's span, continuing the client's trace (`traceparent`, `tracestate`);
/// `Span::none()` unless tracing is on and the request is sampled.
fn request_span(session: &Session) -> tracing::Span {
    if !mcp_telemetry::on() {
        return tracing::Span::none();
    }
    let h = &session.req_header().headers;
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    mcp_telemetry::head::request_span("mcp.request", get("traceparent"), get("tracestate"), || {
        mcp_telemetry::span!("mcp.request", otel.kind = "server")
    })
}

fn request_id(session: &Session) -> String {
    if let Some(v) = session.req_header().headers.get(X_REQUEST_ID) {
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
    /// Who sent the request (into the record), or why they are not let in.
    async fn authenticate(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Refusal> {
        match self.auth.authenticate(&session.req_header().headers).await {
            Ok(who) => {
                ctx.record.caller = Some(who);
                Ok(())
            }
            Err(e) => {
                let cfg = &self.gateway.config;
                let (status, challenge) = metadata::challenge(&cfg.server, &cfg.auth, &e);
                ctx.record.http.auth_error = Some(e.detail());
                Err(Refusal::Unauthenticated {
                    status,
                    reason: e.to_string(),
                    challenge,
                })
            }
        }
    }

    /// Writes a refusal's answer, noting its JSON-RPC code in the record.
    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, r: Refusal) -> Result<()> {
        ctx.record.mcp.rpc_error = Some(r.code());
        let too_large = matches!(r, Refusal::BodyTooLarge(_));
        if r.closes_connection() {
            // The rest of the body is not read, so the connection cannot be reused.
            session.set_keepalive(None);
        }
        write_response(
            session,
            r.into_response(),
            &ctx.record.mcp.request_id,
            &self.drain,
        )
        .await?;
        if too_large {
            linger(session).await;
        }
        Ok(())
    }

    async fn serve_mcp(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let caller = ctx
            .record
            .caller
            .clone()
            .unwrap_or_else(|| Arc::new(Caller::anonymous()));
        // A modern request's head names its method and target: labels and policy first.
        let early = {
            let h = session.req_header();
            self.gateway
                .precheck(&h.method, &h.headers, &caller, &mut ctx.record.mcp)
        };
        let Some(body) = self.read_body(session, ctx).await? else {
            return Ok(());
        };
        let head = match early {
            Ok(head) => head,
            Err(refused) => {
                let resp = refused.answer(&body);
                ctx.record.http.bytes_out =
                    write_response(session, resp, &ctx.record.mcp.request_id, &self.drain).await?;
                return Ok(());
            }
        };
        ctx.record.mcp.traceparent = session
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
            head,
        };
        let resp = self.gateway.handle(req, &caller, &mut ctx.record.mcp).await;
        ctx.record.http.bytes_out =
            write_response(session, resp, &ctx.record.mcp.request_id, &self.drain).await?;
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
            write_response(session, r.into(), &ctx.record.mcp.request_id, &self.drain).await?;
            return Ok(());
        }
        if let Err(r) = self.authenticate(session, ctx).await {
            return self.refuse(session, ctx, r).await;
        }
        let caller = ctx
            .record
            .caller
            .clone()
            .unwrap_or_else(|| Arc::new(Caller::anonymous()));
        ctx.record.mcp.backend = Some(backend.name().to_string());
        if !policy::may_use_backend(self.gateway.config.auth.mode, &backend.config, &caller) {
            let r = Refusal::BackendForbidden(backend.name().to_string());
            return self.refuse(session, ctx, r).await;
        }
        let early = self.gateway.precheck_passthrough(
            backend,
            &session.req_header().headers,
            &caller,
            &mut ctx.record.mcp,
        );
        let Some(body) = self.read_body(session, ctx).await? else {
            return Ok(());
        };
        if let Some(refused) = early {
            let resp = refused.answer(&body);
            ctx.record.http.bytes_out =
                write_response(session, resp, &ctx.record.mcp.request_id, &self.drain).await?;
            return Ok(());
        }
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
            &mut ctx.record.mcp,
        )
        .await;
        ctx.record.http.bytes_out =
            write_response(session, resp, &ctx.record.mcp.request_id, &self.drain).await?;
        Ok(())
    }

    /// Serves the request on its route, to the end (inside the request's span).
    async fn serve_route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        match &ctx.route {
            Route::Mcp => match self.authenticate(session, ctx).await {
                Ok(()) => self.serve_mcp(session, ctx).await?,
                Err(r) => self.refuse(session, ctx, r).await?,
            },
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
                write_response(session, r, &ctx.record.mcp.request_id, &self.drain).await?;
            }
            Route::Health => {
                let r = json_response(200, &serde_json::json!({"status": "ok"}));
                write_response(session, r, &ctx.record.mcp.request_id, &self.drain).await?;
            }
            Route::Ready => {
                let (status, doc) = health::public_readiness(&self.gateway, &self.drain);
                write_response(
                    session,
                    json_response(status, &doc),
                    &ctx.record.mcp.request_id,
                    &self.drain,
                )
                .await?;
            }
            Route::NotFound => {
                let path = session.req_header().uri.path().to_string();
                self.refuse(session, ctx, Refusal::NotFound(path)).await?;
            }
        }
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
            self.refuse(session, ctx, Refusal::BodyTooLarge(max))
                .await?;
            return Ok(None);
        }
        let read = async {
            let mut body = BytesMut::new();
            while let Some(chunk) = session.read_request_body().await? {
                if body.len() + chunk.len() > max {
                    return Ok(Err(Refusal::BodyTooLarge(max)));
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, Box<pingora::Error>>(Ok(body.freeze()))
        };
        let outcome = match tokio::time::timeout(server.body_timeout, read).await {
            Ok(read) => read?,
            Err(_) => Err(Refusal::BodyTooSlow(server.body_timeout)),
        };
        match outcome {
            Ok(body) => {
                ctx.record.http.bytes_in = body.len() as u64;
                Ok(Some(body))
            }
            Err(refusal) => {
                ctx.record.mcp.detail = Some("request body refused".into());
                self.refuse(session, ctx, refusal).await?;
                Ok(None)
            }
        }
    }
}

/// After a 413, the rest of the body is read and dropped for a moment (bounded in time
/// and bytes) before the connection closes: closed with the body unread, the socket
/// resets, and a client still sending loses the answer (nginx's lingering close).
async fn linger(session: &mut Session) {
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const LINGER_MAX_BYTES: usize = 64 << 20;
    let drain = async {
        let mut read = 0;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            read += chunk.len();
            if read > LINGER_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Why a request is not served, as a value: each is turned into its HTTP status,
/// JSON-RPC code and words in one place ([`Refusal::into_response`]).
enum Refusal {
    /// No, a bad or an insufficient token, or tokens cannot be checked now.
    Unauthenticated {
        status: u16,
        reason: String,
        challenge: String,
    },
    BackendForbidden(String),
    BodyTooLarge(usize),
    BodyTooSlow(Duration),
    NotFound(String),
}

impl Refusal {
    fn code(&self) -> i64 {
        match self {
            Refusal::BackendForbidden(_) => jsonrpc::FORBIDDEN,
            _ => jsonrpc::INVALID_REQUEST,
        }
    }

    /// Whether the connection must close (a body left unread).
    fn closes_connection(&self) -> bool {
        matches!(self, Refusal::BodyTooLarge(_) | Refusal::BodyTooSlow(_))
    }

    fn into_response(self) -> Response {
        let code = self.code();
        match self {
            Refusal::Unauthenticated {
                status,
                reason,
                challenge,
            } => {
                let what = match status {
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    _ => "Service Unavailable",
                };
                Response::refuse(status, code, format!("{what}: {reason}"))
                    .with_header("www-authenticate", challenge)
            }
            Refusal::BackendForbidden(name) => Response::refuse(
                403,
                code,
                format!("Forbidden: you may not use backend {name:?}"),
            ),
            Refusal::BodyTooLarge(max) => Response::refuse(
                413,
                code,
                format!("Payload Too Large: the body exceeds server.max_body_bytes ({max} bytes)"),
            ),
            Refusal::BodyTooSlow(limit) => Response::refuse(
                408,
                code,
                format!(
                    "Request Timeout: the body did not arrive within server.body_timeout_s ({} s)",
                    limit.as_secs()
                ),
            ),
            Refusal::NotFound(path) => Response::refuse(
                404,
                code,
                format!("Not Found: {path}; the MCP endpoint is /mcp"),
            ),
        }
    }
}

/// `Keep-Alive: timeout=N` on a response whose connection stays open: a client that
/// honours it retires the connection before a drain could end under it.
fn keepalive_header(session: &Session, h: &mut ResponseHeader, drain: &Drain) -> Result<()> {
    if session.get_keepalive().is_some() {
        h.insert_header(KEEP_ALIVE, drain.keep_alive().clone())?;
    }
    Ok(())
}

/// Writes a handler response: a full body, or an SSE stream event by event.
pub async fn write_response(
    session: &mut Session,
    resp: Response,
    request_id: &str,
    drain: &Drain,
) -> Result<u64> {
    match resp {
        Response::Full {
            status,
            content_type,
            headers,
            body,
        } => {
            let mut h = ResponseHeader::build(status, Some(headers.len() + 3))?;
            // Names as constants: a name given as text is parsed on every response.
            if let Some(ct) = content_type {
                h.insert_header(header::CONTENT_TYPE, ct)?;
            }
            h.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
            h.insert_header(X_REQUEST_ID, request_id)?;
            for (k, v) in headers {
                h.insert_header(k, v)?;
            }
            keepalive_header(session, &mut h, drain)?;
            let empty = body.is_empty();
            let written = body.len() as u64;
            session.write_response_header(Box::new(h), empty).await?;
            if !empty {
                session.write_response_body(Some(body), true).await?;
            }
            Ok(written)
        }
        Response::Sse { headers, stream } => {
            let mut h = ResponseHeader::build(200, Some(headers.len() + 5))?;
            h.insert_header("content-type", "text/event-stream")?;
            h.insert_header("cache-control", "no-cache")?;
            h.insert_header("transfer-encoding", "chunked")?;
            h.insert_header("x-request-id", request_id)?;
            for (k, v) in headers {
                h.insert_header(k, v)?;
            }
            keepalive_header(session, &mut h, drain)?;
            session.write_response_header(Box::new(h), false).await?;
            write_events(session, stream, drain).await
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How long a client whose stream a stopping process ended waits before it resumes
/// (the SSE `retry` field), in milliseconds.
const RESUME_RETRY_MS: u64 = 1000;

/// The events of an SSE response, as they come. Once the process stops accepting, the
/// stream ends at the next event boundary when the client can pick it up again: a
/// stream whose events carry ids (the client resumes with `Last-Event-ID` on the new
/// process or another replica) or a `GET` stream (the client reopens it). A `POST`
/// answer without ids is left to finish. When the drain window ends, every stream ends.
async fn write_events(
    session: &mut Session,
    mut stream: futures::stream::BoxStream<'static, Bytes>,
    drain: &Drain,
) -> Result<u64> {
    let is_get = session.req_header().method == http::Method::GET;
    let mut cursor = SseCursor::new();
    let mut written = 0u64;
    let mut stopping = drain.is_stopping();
    loop {
        if stopping && cursor.may_end(is_get) {
            tracing::debug!(
                resumable = cursor.saw_id(),
                "process stopping: stream ended"
            );
            // The connection closes with the stream, so the client's resumption (or
            // reopened GET) goes on a new one: to the new process or another replica.
            // A `retry` field first (2025-11-25 transports: a server that closes the
            // connection of a stream it has not ended sends one; the client waits that
            // long before it reconnects, by which time it has seen the close).
            let retry = Bytes::from(format!("retry: {RESUME_RETRY_MS}\n\n"));
            if session
                .write_response_body(Some(retry), false)
                .await
                .is_err()
            {
                return Ok(written);
            }
            session.set_keepalive(None);
            break;
        }
        let chunk = if stopping {
            stream.next().await
        } else {
            tokio::select! {
                c = stream.next() => c,
                _ = drain.stopped() => {
                    stopping = true;
                    continue;
                }
            }
        };
        let Some(chunk) = chunk else { break };
        if session.is_process_shutting_down() {
            break;
        }
        cursor.advance(&chunk);
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
            route: Route::NotFound,
            record: RequestRecord::default(),
            span: tracing::Span::none(),
        }
    }

    /// Every route is served here, to the end: the body of an MCP request must be read
    /// to be routed or checked, which Pingora's proxy path cannot replay past 64 KiB.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Pingora keeps an HTTP/1.1 connection open forever between requests unless told;
        // a connection it already closes (shutdown begun, client's `close`) stays closed.
        if session.get_keepalive().is_some() {
            let idle = self.drain.lifetimes().keepalive_timeout.as_secs();
            session.set_keepalive(Some(idle.max(1)));
        }
        ctx.record.mcp.request_id = request_id(session);
        ctx.record.http.source_addr = client_address(
            session,
            self.gateway.config.server.client_ip_header.as_ref(),
        );
        ctx.record.http.user_agent = session
            .req_header()
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect());
        ctx.route = Route::of(session.req_header().uri.path(), &self.gateway);
        let http = &mut ctx.record.http;
        http.http_method = session.req_header().method.clone();
        http.path = session.req_header().uri.path().to_string();
        http.route = ctx.route.label();
        let span = match ctx.route.audited() {
            true => request_span(session),
            false => tracing::Span::none(),
        };
        ctx.span = span.clone();
        mcp_telemetry::in_span!(span, self.serve_route(session, ctx))?;
        Ok(true)
    }

    /// Never reached: `request_filter` answers every request itself.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            InternalError,
            "every route is served in request_filter",
        ))
    }

    /// The one phase every request reaches: the record is finished and becomes the
    /// metric, the access log line and (for routes that reach a backend) the audit event.
    async fn logging(&self, session: &mut Session, e: Option<&pingora::Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let record = &mut ctx.record;
        record.finish(status, e.map(|e| e.to_string()));
        let (http, mcp) = (&record.http, &record.mcp);
        let outcome = metrics::outcome(status, mcp.rpc_error, http.auth_error.is_some());
        if let Some(m) = metrics::requests() {
            let backend = mcp.backend.as_deref().unwrap_or("");
            let method = record.method_label();
            let tool = record.tool_label(&self.gateway);
            m.requests
                .with_label_values(&[http.route, method, backend, tool, outcome])
                .inc();
            m.latency
                .with_label_values(&[http.route, method, backend, tool])
                .observe(http.elapsed.as_secs_f64());
        }
        record.trace(&ctx.span, outcome);
        {
            // The access log line carries the request's trace and span ids.
            let _in_span = ctx.span.enter();
            record.log();
        }
        if let (Some(audit), true) = (&self.gateway.audit, ctx.route.audited()) {
            audit.record(AuditEvent::from(std::mem::take(record)));
        }
    }
}
