//! Streamable HTTP transport (2025-11-25 transports spec): `POST /mcp` (JSON or SSE
//! reply), `GET /mcp` (standalone SSE stream, or resumption with `Last-Event-ID`),
//! `DELETE /mcp` (end the session), `GET /health`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::config::ReplyMode;
use super::handler::{self, Outcome, RequestCtx};
use super::jsonrpc::{self, classify, Incoming, RpcError, SESSION_NOT_FOUND, TRANSPORT_ERROR};
use super::protocol;
use super::server::MockServer;
use super::session::{OutMsg, Outlet, Session};
use super::sse::{sse_body, HttpBody, StreamKind, StreamRegistry};

pub const MCP_PATH: &str = "/mcp";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const LAST_EVENT_ID: &str = "last-event-id";
/// The `retry:` announced before the server closes a connection mid-stream.
const RECONNECT_RETRY_MS: u64 = 500;
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

fn full(bytes: impl Into<Bytes>) -> HttpBody {
    Full::new(bytes.into()).boxed_unsync()
}

fn empty() -> HttpBody {
    Empty::<Bytes>::new().boxed_unsync()
}

fn with_status(status: StatusCode, body: HttpBody) -> Response<HttpBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<HttpBody> {
    let mut resp = with_status(status, full(value.to_string()));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn rpc_error(status: StatusCode, id: &Value, error: RpcError) -> Response<HttpBody> {
    json_response(status, &jsonrpc::error_response(id, &error))
}

fn transport_error(
    status: StatusCode,
    id: &Value,
    message: impl Into<String>,
) -> Response<HttpBody> {
    rpc_error(status, id, RpcError::new(TRANSPORT_ERROR, message))
}

/// An early answer that ends request handling (boxed: responses are large).
type Rejection = Box<Response<HttpBody>>;

fn sse_response(body: HttpBody) -> Response<HttpBody> {
    let mut resp = with_status(StatusCode::OK, body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether an `Accept` header admits `wanted` (exactly, or via `type/*` or `*/*`).
fn accepts(headers: &HeaderMap, wanted: &str) -> bool {
    let family = wanted.split('/').next().unwrap_or(wanted);
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let media = item
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            media == wanted || media == "*/*" || media == format!("{family}/*")
        })
}

fn is_json_content(headers: &HeaderMap) -> bool {
    header_str(headers, CONTENT_TYPE.as_str())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// The host part of an authority (`host[:port]`, `[v6][:port]`).
fn host_part(authority: &str) -> &str {
    let a = authority.trim();
    if a.starts_with('[') {
        return match a.find(']') {
            Some(end) => &a[..=end],
            None => a,
        };
    }
    match a.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => a,
    }
}

fn origin_host(origin: &str) -> Option<&str> {
    let rest = origin.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!authority.is_empty()).then(|| host_part(authority))
}

fn host_allowed(server: &MockServer, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
        || server
            .config
            .extra_allowed_hosts
            .iter()
            .any(|h| h == "*" || h.eq_ignore_ascii_case(&host))
}

/// DNS-rebinding protection: `Host` and `Origin`, when present, must name a local host.
fn check_host_origin(server: &MockServer, headers: &HeaderMap) -> Result<(), Rejection> {
    let forbidden = |what: &str, value: &str| {
        tracing::warn!(header = what, value, "rejected by DNS-rebinding protection");
        Err(Box::new(transport_error(
            StatusCode::FORBIDDEN,
            &Value::Null,
            format!("Forbidden: {what} '{value}' is not an allowed local host"),
        )))
    };
    if let Some(host) = headers.get(HOST) {
        let value = host.to_str().unwrap_or("");
        if !host_allowed(server, host_part(value)) {
            return forbidden("Host", value);
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let value = origin.to_str().unwrap_or("");
        if !origin_host(value).is_some_and(|h| host_allowed(server, h)) {
            return forbidden("Origin", value);
        }
    }
    Ok(())
}

/// Request headers as a JSON object (lowercase names; repeated headers joined by ", ").
fn headers_json(headers: &HeaderMap) -> Map<String, Value> {
    let mut map = Map::new();
    for name in headers.keys() {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        map.insert(name.as_str().to_string(), Value::String(values.join(", ")));
    }
    map
}

/// Finds the session a request belongs to: 400 without a session id, 404 for an
/// unknown or terminated one. Stateless mode has a single implicit session.
fn resolve_session(
    server: &MockServer,
    headers: &HeaderMap,
    id: &Value,
) -> Result<Arc<Session>, Rejection> {
    if server.config.stateless {
        return server.default_session().ok_or_else(|| {
            Box::new(transport_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                id,
                "no stateless session",
            ))
        });
    }
    let Some(raw) = headers.get(SESSION_HEADER) else {
        return Err(Box::new(transport_error(
            StatusCode::BAD_REQUEST,
            id,
            "Bad Request: Mcp-Session-Id header is required (send initialize first)",
        )));
    };
    let Ok(sid) = raw.to_str() else {
        return Err(Box::new(transport_error(
            StatusCode::BAD_REQUEST,
            id,
            "Bad Request: Mcp-Session-Id must be visible ASCII",
        )));
    };
    match server.session(sid) {
        Some(session) => {
            session.touch();
            Ok(session)
        }
        None => Err(Box::new(rpc_error(
            StatusCode::NOT_FOUND,
            id,
            RpcError::new(SESSION_NOT_FOUND, format!("Session not found: {sid}")),
        ))),
    }
}

/// 400 for an `MCP-Protocol-Version` the mock does not speak.
fn check_version_header(headers: &HeaderMap, id: &Value) -> Result<Option<String>, Rejection> {
    match headers.get(VERSION_HEADER) {
        None => Ok(None),
        Some(raw) => {
            let v = raw.to_str().unwrap_or("");
            if protocol::is_supported(v) {
                Ok(Some(v.to_string()))
            } else {
                Err(Box::new(rpc_error(
                    StatusCode::BAD_REQUEST,
                    id,
                    RpcError::invalid_request(format!(
                        "Bad Request: unsupported MCP-Protocol-Version '{v}' (supported: {})",
                        protocol::SUPPORTED_VERSIONS.join(", ")
                    )),
                )))
            }
        }
    }
}

async fn handle(server: Arc<MockServer>, req: Request<HyperBody>) -> Response<HttpBody> {
    let path = req.uri().path();
    if path == "/health" {
        return match *req.method() {
            Method::GET | Method::HEAD => json_response(
                StatusCode::OK,
                &json!({ "status": "ok", "name": server.config.name, "sessions": server.session_count() }),
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
    match *req.method() {
        Method::POST => handle_post(server, req).await,
        Method::GET => handle_get(&server, req.headers()),
        Method::DELETE => handle_delete(&server, req.headers()),
        _ => method_not_allowed("GET, POST, DELETE"),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<HttpBody> {
    let mut resp = transport_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &Value::Null,
        "Method Not Allowed",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

async fn handle_post(server: Arc<MockServer>, req: Request<HyperBody>) -> Response<HttpBody> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if !(accepts(&headers, "application/json") && accepts(&headers, "text/event-stream")) {
        return transport_error(
            StatusCode::NOT_ACCEPTABLE,
            &Value::Null,
            "Not Acceptable: Accept must list both application/json and text/event-stream",
        );
    }
    if !is_json_content(&headers) {
        return transport_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let limit = server.config.max_body_bytes;
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return transport_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                format!("Payload Too Large: the body exceeds {limit} bytes"),
            )
        }
        Err(e) => {
            return transport_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                format!("Bad Request: could not read the body: {e}"),
            )
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                RpcError::parse_error(format!("Parse error: {e}")),
            )
        }
    };
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        single => (vec![single], false),
    };
    if items.is_empty() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            RpcError::invalid_request("empty JSON-RPC batch"),
        );
    }
    let messages: Vec<Incoming> = items.into_iter().map(classify).collect();
    let reply_id = match (&messages[..], batch) {
        ([Incoming::Request { id, .. }], false) | ([Incoming::Invalid { id, .. }], false) => {
            id.clone()
        }
        _ => Value::Null,
    };

    let is_initialize =
        |m: &Incoming| matches!(m, Incoming::Request { method, .. } if method == "initialize");
    if messages.iter().any(is_initialize) {
        if batch {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                RpcError::invalid_request("initialize must not be part of a JSON-RPC batch"),
            );
        }
        let mut messages = messages;
        if let Some(Incoming::Request { id, params, .. }) = messages.pop() {
            return handle_initialize(&server, &headers, id, params).await;
        }
        return transport_error(StatusCode::BAD_REQUEST, &Value::Null, "Bad Request");
    }

    let session = match resolve_session(&server, &headers, &reply_id) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let version = match check_version_header(&headers, &reply_id) {
        Ok(v) => v.unwrap_or_else(|| session.protocol()),
        Err(resp) => return *resp,
    };
    if batch && !protocol::allows_batches(&version) {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            RpcError::invalid_request(format!(
                "JSON-RPC batches are not supported in protocol version {version}"
            )),
        );
    }

    let header_map = Arc::new(headers_json(&headers));
    let related_as_unsolicited = server.config.reply_mode == ReplyMode::Json;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut prefilled = Vec::new();
    let mut expected = 0usize;
    let mut unknown_response = None;
    for message in messages {
        match message {
            Incoming::Request { id, method, params } => {
                expected += 1;
                handler::spawn_request(
                    Arc::clone(&server),
                    Arc::clone(&session),
                    id,
                    method,
                    params,
                    Arc::clone(&header_map),
                    tx.clone(),
                    related_as_unsolicited,
                );
            }
            Incoming::Notification { method, params } => {
                handler::handle_notification(&session, &method, &params)
            }
            Incoming::Response { id, outcome } => {
                if !session.resolve_server_request(&id, outcome) {
                    tracing::warn!(%id, "response to an unknown server request");
                    unknown_response = Some(id);
                }
            }
            Incoming::Invalid { id, error } => prefilled.push(jsonrpc::error_response(&id, &error)),
        }
    }
    drop(tx);

    if expected == 0 {
        if !prefilled.is_empty() {
            let body = if batch {
                Value::Array(prefilled)
            } else {
                prefilled.swap_remove(0)
            };
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
        if let (Some(id), false) = (unknown_response, batch) {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                RpcError::invalid_request(format!("no pending server request has id {id}")),
            );
        }
        return with_status(StatusCode::ACCEPTED, empty());
    }
    reply(&server, session, rx, expected, prefilled, batch, &version).await
}

/// `initialize` creates the session (stateful mode) and is answered directly.
async fn handle_initialize(
    server: &Arc<MockServer>,
    headers: &HeaderMap,
    id: Value,
    params: Value,
) -> Response<HttpBody> {
    if let Err(resp) = check_version_header(headers, &id) {
        return *resp;
    }
    let session = match server.default_session() {
        Some(s) if server.config.stateless => s,
        _ => Session::new(
            Some(Session::new_id()),
            Outlet::Http(StreamRegistry::default()),
        ),
    };
    let (tx, _rx) = mpsc::unbounded_channel();
    let ctx = RequestCtx {
        server: Arc::clone(server),
        session: Arc::clone(&session),
        request_id: id,
        headers: Arc::new(headers_json(headers)),
        out: tx,
        related_as_unsolicited: true,
        progress_token: None,
    };
    if !server.config.latency.is_zero() {
        tokio::time::sleep(server.config.latency).await;
    }
    let response = match handler::dispatch(&ctx, "initialize", &params).await {
        Outcome::Reply(r) => r,
        Outcome::Silent => Value::Null,
    };
    let ok = response.get("result").is_some();
    if ok && !server.config.stateless {
        server.insert_session(Arc::clone(&session));
        tracing::info!(session = session.id.as_deref().unwrap_or(""), version = %session.protocol(), "session created");
    }
    let mut resp = match (server.config.reply_mode, session.streams()) {
        (ReplyMode::Sse, Some(registry)) => {
            let priming = protocol::sends_priming_events(&session.protocol());
            let (sid, conn) = registry.open(StreamKind::Post, priming);
            registry.send(sid, &response);
            registry.finish(sid);
            sse_response(sse_body(conn, None))
        }
        _ => json_response(StatusCode::OK, &response),
    };
    if let (true, Some(sid)) = (ok, &session.id) {
        if let Ok(value) = HeaderValue::from_str(sid) {
            resp.headers_mut().insert(SESSION_HEADER, value);
        }
    }
    resp
}

/// Collects what the request handlers emit and answers with JSON when only
/// responses came (and the mode allows), with an SSE stream otherwise.
async fn reply(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<OutMsg>,
    expected: usize,
    mut buffered: Vec<Value>,
    batch: bool,
    version: &str,
) -> Response<HttpBody> {
    let mut done = 0usize;
    if server.config.reply_mode != ReplyMode::Sse {
        while done < expected {
            match rx.recv().await {
                None => break,
                Some(OutMsg::Response(v)) => {
                    buffered.push(v);
                    done += 1;
                }
                Some(OutMsg::NoResponse) => done += 1,
                Some(other) => {
                    return open_sse(
                        server,
                        session,
                        rx,
                        expected,
                        done,
                        buffered,
                        Some(other),
                        version,
                    )
                }
            }
        }
        if !buffered.is_empty() {
            let body = if batch {
                Value::Array(buffered)
            } else {
                buffered.swap_remove(0)
            };
            return json_response(StatusCode::OK, &body);
        }
        // Every request was cancelled: an SSE stream that ends without a response.
    }
    open_sse(server, session, rx, expected, done, buffered, None, version)
}

#[allow(clippy::too_many_arguments)]
fn open_sse(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<OutMsg>,
    expected: usize,
    done: usize,
    buffered: Vec<Value>,
    first: Option<OutMsg>,
    version: &str,
) -> Response<HttpBody> {
    let Some(registry) = session.streams() else {
        return transport_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &Value::Null,
            "no stream registry",
        );
    };
    let (sid, conn) = registry.open(StreamKind::Post, protocol::sends_priming_events(version));
    for message in &buffered {
        registry.send(sid, message);
    }
    tokio::spawn(async move {
        let Some(registry) = session.streams() else {
            return;
        };
        let mut done = done;
        let mut next = first;
        loop {
            let message = match next.take() {
                Some(m) => m,
                None if done >= expected => break,
                None => match rx.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            match message {
                OutMsg::Related(v) => registry.send(sid, &v),
                OutMsg::Response(v) => {
                    registry.send(sid, &v);
                    done += 1;
                }
                OutMsg::NoResponse => done += 1,
                OutMsg::CloseStream => break,
                OutMsg::Disconnect => registry.disconnect(sid, RECONNECT_RETRY_MS),
            }
        }
        registry.finish(sid);
    });
    sse_response(sse_body(conn, Some(server.config.keepalive)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::config::MockConfig;

    #[test]
    fn host_parsing() {
        assert_eq!(host_part("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_part("localhost"), "localhost");
        assert_eq!(host_part("[::1]:3000"), "[::1]");
        assert_eq!(origin_host("http://localhost:3000"), Some("localhost"));
        assert_eq!(
            origin_host("https://evil.example.com/x"),
            Some("evil.example.com")
        );
        assert_eq!(origin_host("null"), None);
    }

    #[test]
    fn host_policy() {
        let server = MockServer::new(
            MockConfig {
                extra_allowed_hosts: vec!["mock-a".into()],
                ..MockConfig::default()
            },
            None,
        );
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:1234"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example.com"));
        assert!(check_host_origin(&server, &h).is_err());
        h.insert(ORIGIN, HeaderValue::from_static("http://[::1]:9"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(HOST, HeaderValue::from_static("mock-a:80"));
        assert!(check_host_origin(&server, &h).is_ok());
        h.insert(HOST, HeaderValue::from_static("evil.example.com"));
        assert!(check_host_origin(&server, &h).is_err());
    }

    #[test]
    fn accept_matching() {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream;q=0.9"),
        );
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts(&h, "text/event-stream"));
        h.insert(ACCEPT, HeaderValue::from_static("*/*"));
        assert!(accepts(&h, "text/event-stream"));
    }
}
