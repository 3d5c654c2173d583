//! `/backends/{name}/mcp`: one backend's own MCP endpoint, its names unprefixed, relayed
//! behind the same guards as `/mcp`.
//!
//! Why it is terminated here rather than proxied by Pingora: the body must be read to
//! enforce tool rules and to name the method and tool in the audit record, and Pingora
//! replays a body it has read only up to 64 KiB. So the request is read (bounded by
//! `server.max_body_bytes` before anything reaches the backend), its JSON-RPC messages
//! are inspected (batches too), and it is relayed through the backend's own pooled
//! client ([`crate::upstream::http::HttpUpstream::relay`]); the answer comes back as the
//! backend wrote it. The backend's `Mcp-Session-Id` is sealed to the person and the
//! backend, as `/mcp` session ids are, so an id learnt by someone else is useless.
//!
//! Not done here: authentication and backend-level policy (the proxy adapter, before),
//! prefixing or merging (that is `/mcp`), and filtering the backend's lists: a person
//! may see a tool listed here that a rule refuses them, and a call to it is refused.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method};
use serde_json::Value;

use super::handler::{Caller, Gateway, Info, Response};
use super::jsonrpc;
use super::session::PassthroughSession;
use crate::auth::policy;
use crate::upstream::http::{RelayRequest, Relayed, MAX_MESSAGE};
use crate::upstream::{Backend, UpstreamError};

/// The revision a client that names none is assumed to speak (Streamable HTTP rule).
const DEFAULT_VERSION: &str = "2025-03-26";

/// Serves one pass-through request from `caller`, already authenticated and allowed
/// the backend.
pub async fn serve(
    gw: &Gateway,
    backend: &Arc<Backend>,
    caller: &Caller,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
    info: &mut Info,
) -> Response {
    info.backend = Some(backend.name().to_string());
    let Some(http) = backend.http() else {
        return Response::refuse(404, jsonrpc::INVALID_REQUEST, "Not Found");
    };
    if *method == Method::POST {
        if let Err(refused) = inspect(gw, backend, caller, headers, &body, info) {
            return refused;
        }
    }
    let session = match unseal(gw, backend, caller, headers) {
        Ok(s) => s,
        Err(refused) => {
            info.detail = Some("unknown, foreign or altered pass-through session id".into());
            return refused;
        }
    };
    let extra = upstream_headers(backend, caller, headers, info);
    let sent = http
        .relay(RelayRequest {
            method: method.as_str(),
            session: session.as_deref(),
            version: header(headers, "mcp-protocol-version")
                .filter(|v| {
                    v.len() <= 32 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .unwrap_or(DEFAULT_VERSION),
            accept: if *method == Method::GET {
                "text/event-stream"
            } else {
                "application/json, text/event-stream"
            },
            body: (*method == Method::POST).then_some(&body),
            extra: &extra,
        })
        .await;
    backend
        .requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match sent {
        Ok(relayed) => {
            // The backend names the session it was asked about: the client's sealed id
            // is that one already, so it is not sealed again.
            let same = relayed.session_id.is_some() && relayed.session_id == session;
            let known = header(headers, "mcp-session-id").filter(|_| same);
            answer(gw, backend, caller, relayed, known, info).await
        }
        Err(e) => {
            backend.record::<()>(&Err(e.clone()));
            info.rpc_error = Some(e.code());
            info.detail = Some(e.to_string());
            let status = if matches!(e, UpstreamError::Timeout(_)) {
                504
            } else {
                502
            };
            Response::refuse(
                status,
                e.code(),
                format!("backend {:?} is unavailable", backend.name()),
            )
        }
    }
}

/// The backend's own session id from the client's sealed one: `Ok(None)` without one,
/// 404 for an id sealed for someone else, another backend, or altered.
fn unseal(
    gw: &Gateway,
    backend: &Backend,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Option<String>, Response> {
    let Some(sealed) = header(headers, "mcp-session-id") else {
        return Ok(None);
    };
    // Opened once per id: what a sealed id carries never changes, and whose it is and
    // for which backend is checked on every request.
    let opened = match gw.opened_passthrough.get(sealed).map(|s| s.clone()) {
        Some(s) => Some(s),
        None => gw.sealer().open_passthrough(sealed).map(|s| {
            let s = Arc::new(s);
            if gw.opened_passthrough.len() >= 100_000 {
                gw.opened_passthrough.clear();
            }
            gw.opened_passthrough.insert(sealed.into(), s.clone());
            s
        }),
    };
    match opened {
        Some(s) if s.sub == caller.sub && s.backend == backend.name() => Ok(Some(s.id.clone())),
        _ => Err(Response::refuse(
            404,
            jsonrpc::INVALID_REQUEST,
            "Not Found: unknown session; send initialize again without Mcp-Session-Id",
        )),
    }
}

/// What goes to the backend besides the MCP headers: the configured identity headers,
/// resumption and trace context, the request id.
fn upstream_headers(
    backend: &Backend,
    caller: &Caller,
    headers: &HeaderMap,
    info: &Info,
) -> Vec<(http::HeaderName, String)> {
    let mut extra = Gateway::identity_headers(backend, caller);
    for name in ["last-event-id", "traceparent"] {
        if let Some(v) = header(headers, name).filter(|v| v.len() <= 256) {
            extra.push((http::HeaderName::from_static(name), v.to_string()));
        }
    }
    // The 2026-07-28 mirrored headers (checked against the body in `inspect`) and the
    // client's Mcp-Param-* headers, which an intermediary passes on.
    for (name, v) in headers {
        let n = name.as_str();
        if n == "mcp-method" || n == "mcp-name" || n.starts_with("mcp-param-") {
            if let Ok(v) = v.to_str() {
                extra.push((name.clone(), v.to_string()));
            }
        }
    }
    if !info.request_id.is_empty() {
        extra.push((
            http::HeaderName::from_static("x-request-id"),
            info.request_id.clone(),
        ));
    }
    extra
}

/// The backend's answer for the client: an event stream relayed as it comes, anything
/// else read whole; its session id sealed to the caller.
async fn answer(
    gw: &Gateway,
    backend: &Backend,
    caller: &Caller,
    relayed: Relayed,
    known: Option<&str>,
    info: &mut Info,
) -> Response {
    let sealed = relayed.session_id.map(|id| match known {
        Some(k) => k.to_string(),
        None => gw.sealer().seal_passthrough(&PassthroughSession {
            sub: caller.sub.clone(),
            backend: backend.name().to_string(),
            id,
        }),
    });
    let is_stream = relayed
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let resp = if is_stream && relayed.status == 200 {
        // Relayed event by event as the backend writes them; a failure ends the stream.
        let chunks = relayed
            .body
            .take_while(|c| futures::future::ready(c.is_ok()))
            .filter_map(|c| futures::future::ready(c.ok()));
        Response::Sse {
            headers: Vec::new(),
            stream: chunks.boxed(),
        }
    } else {
        let body = match read_all(relayed.body).await {
            Ok(b) => b,
            Err(e) => {
                info.detail = Some(e.to_string());
                return Response::refuse(502, e.code(), "the backend's answer could not be read");
            }
        };
        Response::Full {
            status: relayed.status,
            content_type: relayed
                .content_type
                .as_deref()
                .filter(|c| c.starts_with("application/json"))
                .map(|_| "application/json"),
            headers: Vec::new(),
            body,
        }
    };
    match sealed {
        Some(s) => resp.with_header("mcp-session-id", s),
        None => resp,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads a relayed body whole (at most [`MAX_MESSAGE`] bytes).
async fn read_all(
    mut body: futures::stream::BoxStream<'static, Result<Bytes, UpstreamError>>,
) -> Result<Bytes, UpstreamError> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > MAX_MESSAGE {
            return Err(UpstreamError::Protocol(format!(
                "reply larger than {MAX_MESSAGE} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Names the request's method and target in `info` and applies the tool rules to every
/// message (a batch is refused whole when one of its calls is). A body that is not JSON
/// is refused as `/mcp` refuses it.
fn inspect(
    gw: &Gateway,
    backend: &Backend,
    caller: &Caller,
    headers: &HeaderMap,
    body: &[u8],
    info: &mut Info,
) -> Result<(), Response> {
    // A 2026-07-28 request mirrors its method and target in headers that the backend
    // (or a balancer before it) may act on: they must say what the body says, which is
    // what the policy below is enforced on.
    let modern =
        header(headers, "mcp-protocol-version").is_some_and(crate::wire::version::is_modern);
    let parsed: Value = serde_json::from_slice(body).map_err(|e| {
        info.rpc_error = Some(jsonrpc::PARSE_ERROR);
        Response::refuse(400, jsonrpc::PARSE_ERROR, format!("Parse error: {e}"))
    })?;
    let messages: Vec<&Value> = match &parsed {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let mut recorded = false;
    for m in messages {
        let Some(method) = m.get("method").and_then(Value::as_str) else {
            continue; // a response to the backend's own request
        };
        let params = m.get("params");
        if modern {
            let parsed = jsonrpc::Method::parse(method);
            if let Err(why) = super::modern::mirrored_headers_match(headers, &parsed, params) {
                info.rpc_error = Some(jsonrpc::HEADER_MISMATCH);
                info.detail = Some(why.clone());
                let id = m.get("id").cloned().unwrap_or(Value::Null);
                return Err(Response::json(
                    400,
                    &jsonrpc::error(&id, jsonrpc::HEADER_MISMATCH, why),
                ));
            }
        }
        let name = |k: &str| params.and_then(|p| p.get(k)).and_then(Value::as_str);
        let target = match method {
            "tools/call" | "prompts/get" => name("name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => name("uri"),
            _ => None,
        };
        if !recorded {
            // The record describes the first request of a batch.
            recorded = true;
            info.rpc_method = Some(jsonrpc::Method::parse(method));
            info.target = target.map(str::to_string);
            if let (Some(args), Some(audit)) =
                (params.and_then(|p| p.get("arguments")), gw.audit.as_deref())
            {
                let (digest, kept) = audit.arguments(args);
                info.args_digest = Some(digest);
                info.args = kept;
            }
        }
        if method == "tools/call" {
            let tool = target.unwrap_or_default();
            if !policy::may_use_tool(gw.config.auth.mode, &backend.config, tool, caller) {
                let who = caller.email.as_deref().unwrap_or(&caller.sub);
                let message = format!(
                    "Forbidden: {who} may not use tool {tool:?} of backend {:?}",
                    backend.name()
                );
                tracing::info!(
                    backend = backend.name(),
                    user = who,
                    tool,
                    "refused by policy"
                );
                info.rpc_error = Some(jsonrpc::FORBIDDEN);
                info.detail = Some(format!("refused by policy: {message}"));
                return Err(Response::refuse(403, jsonrpc::FORBIDDEN, message));
            }
        }
    }
    Ok(())
}
