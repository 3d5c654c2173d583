//! `POST /mcp` in the 2025 eras: read and classify the body, find the session
//! (`initialize` creates one), run the requests and answer (see [`super::reply`]).

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming as HyperBody;
use serde_json::Value;
use tokio::sync::mpsc;

use super::guard::{accepts, is_json_content};
use super::reply::reply;
use super::respond::{
    empty, json_response, rpc_error, sse_response, transport_error, with_status, Rejection,
};
use super::{SESSION_HEADER, VERSION_HEADER};
use crate::mock::config::{ProtocolMode, ReplyMode};
use crate::mock::handler::{self, Outcome, RequestCtx};
use crate::mock::jsonrpc::{self, classify, Incoming, RpcError, SESSION_NOT_FOUND};
use crate::mock::modern;
use crate::mock::protocol;
use crate::mock::server::MockServer;
use crate::mock::session::{Outlet, Session};
use crate::mock::sse::{sse_body, HttpBody, StreamKind, StreamRegistry};

/// Finds the session a request belongs to: 400 without a session id, 404 for an
/// unknown or terminated one. Stateless mode has a single implicit session.
pub fn resolve_session(
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
pub fn check_version_header(headers: &HeaderMap, id: &Value) -> Result<Option<String>, Rejection> {
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

/// 406/415 unless `Accept` and `Content-Type` are what a POST needs.
pub fn check_post_headers(headers: &HeaderMap) -> Result<(), Rejection> {
    if !(accepts(headers, "application/json") && accepts(headers, "text/event-stream")) {
        return Err(Box::new(transport_error(
            StatusCode::NOT_ACCEPTABLE,
            &Value::Null,
            "Not Acceptable: Accept must list both application/json and text/event-stream",
        )));
    }
    if !is_json_content(headers) {
        return Err(Box::new(transport_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &Value::Null,
            "Unsupported Media Type: Content-Type must be application/json",
        )));
    }
    Ok(())
}

/// Reads the body (up to `--max-body-bytes`) and parses it as JSON.
pub async fn read_json(server: &MockServer, body: HyperBody) -> Result<Value, Rejection> {
    let limit = server.config.max_body_bytes;
    let bytes: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Box::new(transport_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                format!("Payload Too Large: the body exceeds {limit} bytes"),
            )))
        }
        Err(e) => {
            return Err(Box::new(transport_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                format!("Bad Request: could not read the body: {e}"),
            )))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            RpcError::parse_error(format!("Parse error: {e}")),
        ))
    })
}

/// A POST body as JSON-RPC messages: the messages, whether it was a batch, and the
/// id to answer transport errors with (the request's, for a single request).
pub struct Parsed {
    pub messages: Vec<Incoming>,
    pub batch: bool,
    pub reply_id: Value,
}

pub fn classify_body(value: Value) -> Result<Parsed, Rejection> {
    let (items, batch) = match value {
        Value::Array(items) => (items, true),
        single => (vec![single], false),
    };
    if items.is_empty() {
        return Err(Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            RpcError::invalid_request("empty JSON-RPC batch"),
        )));
    }
    let messages: Vec<Incoming> = items.into_iter().map(classify).collect();
    let reply_id = match (&messages[..], batch) {
        ([Incoming::Request { id, .. }], false) | ([Incoming::Invalid { id, .. }], false) => {
            id.clone()
        }
        _ => Value::Null,
    };
    Ok(Parsed {
        messages,
        batch,
        reply_id,
    })
}

pub async fn handle_post(server: Arc<MockServer>, req: Request<HyperBody>) -> Response<HttpBody> {
    let (parts, body) = req.into_parts();
    if let Err(resp) = check_post_headers(&parts.headers) {
        return *resp;
    }
    let parsed = match read_json(&server, body).await.and_then(classify_body) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let modern = match server.config.protocol {
        ProtocolMode::Legacy => false,
        ProtocolMode::Modern => true,
        ProtocolMode::Mixed => {
            modern::http::wants_modern(&parts.headers, &parsed, server.config.stateless)
        }
    };
    if modern {
        return modern::http::handle(server, parts.headers, parsed).await;
    }
    handle_legacy(server, parts.headers, parsed).await
}

/// Serves parsed messages in the 2025 eras (sessions, `initialize`, batches).
pub async fn handle_legacy(
    server: Arc<MockServer>,
    headers: HeaderMap,
    parsed: Parsed,
) -> Response<HttpBody> {
    let Parsed {
        mut messages,
        batch,
        reply_id,
    } = parsed;
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
    run_messages(&server, session, headers, messages, batch, &version).await
}

/// Starts the requests, delivers notifications and responses, and answers: 202 when
/// nothing needs a reply, 400 for invalid messages only, else the requests' replies.
async fn run_messages(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    headers: HeaderMap,
    messages: Vec<Incoming>,
    batch: bool,
    version: &str,
) -> Response<HttpBody> {
    let header_map = Arc::new(headers);
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
                    Arc::clone(server),
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
    reply(server, session, rx, expected, prefilled, batch, version).await
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
        headers: Arc::new(headers.clone()),
        out: tx,
        related_as_unsolicited: true,
        progress_token: None,
        modern: None,
        meta_traceparent: None,
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
