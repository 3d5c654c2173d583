//! Streamable HTTP transport (2025-11-25 transports spec): `POST /mcp` (JSON or SSE
//! reply), `GET /mcp` (standalone SSE stream, or resumption with `Last-Event-ID`),
//! `DELETE /mcp` (end the session), `GET /health`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::protocol;
use super::server::MockServer;
use super::sse::{sse_body, HttpBody, StreamKind};

mod guard;
mod post;
mod reply;
mod respond;

use guard::{accepts, check_host_origin};
pub use post::Parsed;
use post::{check_version_header, resolve_session};
pub use respond::{
    empty, full, header_str, headers_json, json_response, method_not_allowed, rpc_error,
    sse_response, transport_error, with_status,
};

use super::config::ProtocolMode;

pub const MCP_PATH: &str = "/mcp";
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
pub(crate) const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// The `retry:` announced before the server closes a connection mid-stream.
pub(crate) const RECONNECT_RETRY_MS: u64 = 500;
/// Sessions idle this long without a live GET stream are forgotten.
const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(3600);

/// Accepts connections until the listener fails for good.
pub async fn serve(listener: TcpListener, server: Arc<MockServer>) -> anyhow::Result<()> {
    let reaper = Arc::clone(&server);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let n = reaper.reap_idle(SESSION_IDLE_LIMIT);
            if n > 0 {
                tracing::info!(sessions = n, "idle sessions dropped");
            }
        }
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let server = Arc::clone(&server);
                async move { Ok::<_, Infallible>(handle(server, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(server: Arc<MockServer>, req: Request<HyperBody>) -> Response<HttpBody> {
    let path = req.uri().path();
    if path == "/health" || path == "/traces" {
        return match *req.method() {
            Method::GET | Method::HEAD if path == "/traces" => {
                json_response(StatusCode::OK, &Value::Array(server.traces()))
            }
            Method::GET | Method::HEAD => json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "name": server.config.name,
                    "sessions": server.session_count(),
                    "listeners": server.listeners.count(),
                    "cancelled": server.cancelled_count(),
                }),
            ),
            _ => method_not_allowed("GET, HEAD"),
        };
    }
    if path != MCP_PATH {
        return with_status(
            StatusCode::NOT_FOUND,
            full("not found; the MCP endpoint is /mcp\n"),
        );
    }
    if let Err(resp) = check_host_origin(&server, req.headers()) {
        return *resp;
    }
    tracing::debug!(method = %req.method(), "request on /mcp");
    let modern_only = server.config.protocol == ProtocolMode::Modern;
    match *req.method() {
        Method::POST => post::handle_post(server, req).await,
        // 2026-07-28 has no GET stream and no session to delete.
        Method::GET | Method::DELETE if modern_only => method_not_allowed("POST"),
        Method::GET => handle_get(&server, req.headers()),
        Method::DELETE => handle_delete(&server, req.headers()),
        _ => method_not_allowed("GET, POST, DELETE"),
    }
}

fn handle_get(server: &MockServer, headers: &HeaderMap) -> Response<HttpBody> {
    if !accepts(headers, "text/event-stream") {
        return transport_error(
            StatusCode::NOT_ACCEPTABLE,
            &Value::Null,
            "Not Acceptable: Accept must list text/event-stream",
        );
    }
    let session = match resolve_session(server, headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let version = match check_version_header(headers, &Value::Null) {
        Ok(v) => v.unwrap_or_else(|| session.protocol()),
        Err(resp) => return *resp,
    };
    let Some(registry) = session.streams() else {
        return transport_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Value::Null,
            "no stream registry",
        );
    };
    let keepalive = Some(server.config.keepalive);
    if let Some(last) = header_str(headers, LAST_EVENT_ID) {
        if let Some(conn) = registry.resume(last) {
            tracing::debug!(last_event_id = last, "stream resumed");
            return sse_response(sse_body(conn, keepalive));
        }
    }
    let (_, conn) = registry.open(StreamKind::Get, protocol::sends_priming_events(&version));
    sse_response(sse_body(conn, keepalive))
}

fn handle_delete(server: &MockServer, headers: &HeaderMap) -> Response<HttpBody> {
    if server.config.stateless {
        return method_not_allowed("GET, POST");
    }
    let session = match resolve_session(server, headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    if let Some(id) = &session.id {
        server.remove_session(id);
        tracing::info!(session = %id, "session deleted");
    }
    session.close();
    with_status(StatusCode::OK, empty())
}
