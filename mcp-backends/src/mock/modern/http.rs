//! 2026-07-28 over Streamable HTTP: the validation order of a modern POST (the
//! fixtures doc, §2), the mirrored `Mcp-Method` / `Mcp-Name` headers (with the
//! Base64 sentinel form), replies as one JSON object or an SSE stream without
//! event ids, cancellation by closing the response stream, and listen streams.

use std::borrow::Cow;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::listen::Filter;
use super::{
    check_method, check_version, has_modern_meta, header_mismatch, read_meta, status_of_error,
    Method, ModernMeta, Refusal,
};
use crate::mock::config::ReplyMode;
use crate::mock::handler::{meta_traceparent, progress_token, spawn_ctx, RequestCtx};
use crate::mock::http::{
    json_response, rpc_error, sse_response, with_status, Parsed, SESSION_HEADER, VERSION_HEADER,
};
use crate::mock::jsonrpc::{self, Incoming, RpcError};
use crate::mock::protocol;
use crate::mock::server::MockServer;
use crate::mock::session::{OutMsg, Outlet, Session};
use crate::mock::sse::{sse_body, HttpBody, StreamRegistry};
use crate::mock::tools::modern::{HEADER_PARAMS, HEADER_TOOL};

const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

/// Mixed mode: whether a POST belongs to the modern era. Modern `_meta` decides;
/// then `initialize`, a session id or a 2025 `MCP-Protocol-Version` mean legacy;
/// anything else (no session, no 2025 version) is served as modern.
pub fn wants_modern(headers: &HeaderMap, parsed: &Parsed, stateless_legacy: bool) -> bool {
    if parsed.batch {
        return false;
    }
    if let [Incoming::Request { method, params, .. }] = &parsed.messages[..] {
        if has_modern_meta(params) {
            return true;
        }
        if method == "initialize" {
            return false;
        }
    }
    if headers.contains_key(SESSION_HEADER) {
        return false;
    }
    match headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(v) => !protocol::is_supported(v),
        None => !stateless_legacy,
    }
}

fn refuse(id: &Value, refusal: Refusal) -> Response<HttpBody> {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    rpc_error(status, id, refusal.error)
}

/// A modern POST, already read and classified.
pub async fn handle(
    server: Arc<MockServer>,
    headers: HeaderMap,
    parsed: Parsed,
) -> Response<HttpBody> {
    if parsed.batch {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            RpcError::invalid_request("JSON-RPC batches are not part of MCP 2026-07-28"),
        );
    }
    let Some(message) = parsed.messages.into_iter().next() else {
        return with_status(StatusCode::BAD_REQUEST, crate::mock::http::empty());
    };
    let (id, method, params) = match message {
        Incoming::Request { id, method, params } => (id, method, params),
        Incoming::Notification { method, .. } => {
            tracing::debug!(%method, "modern notification ignored");
            return with_status(StatusCode::ACCEPTED, crate::mock::http::empty());
        }
        Incoming::Response { .. } => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                RpcError::invalid_request("MCP 2026-07-28 clients send no JSON-RPC responses"),
            )
        }
        Incoming::Invalid { id, error } => return rpc_error(StatusCode::BAD_REQUEST, &id, error),
    };
    let (kind, meta) = match validate(&server, &headers, &method, &params) {
        Ok(v) => v,
        Err(refusal) => return refuse(&id, refusal),
    };
    if kind == Method::Listen {
        return listen(&server, id, &params).await;
    }
    let session = Session::new(None, Outlet::Http(StreamRegistry::default()));
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = RequestCtx {
        progress_token: progress_token(&params),
        meta_traceparent: meta_traceparent(&params),
        modern: Some(meta),
        server: Arc::clone(&server),
        session: Arc::clone(&session),
        request_id: id,
        headers: Arc::new(headers),
        out: tx,
        related_as_unsolicited: false,
    };
    spawn_ctx(ctx, method, params);
    reply(&server, session, rx).await
}

/// The validation order: version header, `_meta`, header vs `_meta`, supported
/// version, `Mcp-Method`, known method, `Mcp-Name`.
fn validate(
    server: &MockServer,
    headers: &HeaderMap,
    method: &str,
    params: &Value,
) -> Result<(Method, ModernMeta), Refusal> {
    let header_version = header_value(headers, VERSION_HEADER)?.ok_or_else(|| {
        header_mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header is required (supported versions: {})",
            super::supported_versions(server.config.protocol).join(", ")
        ))
    })?;
    let (version, meta) = read_meta(params)?;
    if header_version != version {
        return Err(header_mismatch(format!(
            "Header mismatch: MCP-Protocol-Version header '{header_version}' does not match _meta protocolVersion '{version}'"
        )));
    }
    check_version(server.config.protocol, &version)?;
    match header_value(headers, METHOD_HEADER)? {
        None => {
            return Err(header_mismatch(
                "Header mismatch: Mcp-Method header is required",
            ))
        }
        Some(h) if h != method => {
            return Err(header_mismatch(format!(
            "Header mismatch: Mcp-Method header value '{h}' does not match body value '{method}'"
        )))
        }
        Some(_) => {}
    }
    let kind = check_method(server.config.protocol, method)?;
    if let Some(field) = kind.name_field() {
        if let Some(body) = params.get(field).and_then(Value::as_str) {
            check_name(headers, body)?;
            if kind == Method::ToolsCall && body == HEADER_TOOL {
                check_params(headers, &params["arguments"])?;
            }
        }
    }
    Ok((kind, meta))
}

/// The header form of an argument: strings as they are, numbers and booleans in
/// their JSON form; `None` for absent, null or structured values (no header expected).
fn header_form(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `Mcp-Param-{Name}` of the tool's `x-mcp-header` arguments: required when the
/// argument has a value, decoded (Base64 sentinel, strict) and equal to it.
fn check_params(headers: &HeaderMap, args: &Value) -> Result<(), Refusal> {
    for (arg, suffix) in HEADER_PARAMS {
        let Some(body) = args.get(*arg).and_then(header_form) else {
            continue;
        };
        let name = format!("mcp-param-{}", suffix.to_ascii_lowercase());
        let Some(raw) = header_value(headers, &name)? else {
            return Err(header_mismatch(format!(
                "Header mismatch: Mcp-Param-{suffix} header is required when '{arg}' is given"
            )));
        };
        match decode_sentinel(raw) {
            Some(decoded) if decoded == body => {}
            Some(decoded) => {
                return Err(header_mismatch(format!(
                    "Header mismatch: Mcp-Param-{suffix} header value '{decoded}' does not match body value '{body}'"
                )))
            }
            None => {
                return Err(header_mismatch(format!(
                    "Header mismatch: Mcp-Param-{suffix} is not valid Base64 UTF-8"
                )))
            }
        }
    }
    Ok(())
}

/// A header as visible ASCII; -32020 when it has other bytes.
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::trim).map_err(|_| {
                header_mismatch(format!("Header mismatch: {name} has invalid characters"))
            })
        })
        .transpose()
}

/// A header value in its plain or `=?base64?…?=` form, decoded.
pub fn decode_sentinel(value: &str) -> Option<Cow<'_, str>> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map(Cow::Owned),
        None => Some(Cow::Borrowed(value)),
    }
}

fn check_name(headers: &HeaderMap, body: &str) -> Result<(), Refusal> {
    let Some(raw) = header_value(headers, NAME_HEADER)? else {
        return Err(header_mismatch(
            "Header mismatch: Mcp-Name header is required",
        ));
    };
    match decode_sentinel(raw) {
        Some(decoded) if decoded == body => Ok(()),
        Some(decoded) => Err(header_mismatch(format!(
            "Header mismatch: Mcp-Name header value '{decoded}' does not match body value '{body}'"
        ))),
        None => Err(header_mismatch(
            "Header mismatch: Mcp-Name is not valid Base64 UTF-8",
        )),
    }
}

/// Cancels the request's work when the reply is dropped before it finished (the
/// client closed the stream); harmless once the request has answered.
struct CancelOnDrop(Arc<Session>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn frame(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn json_reply(message: &Value) -> Response<HttpBody> {
    let code = message["error"]["code"].as_i64();
    let status = code.map_or(200, status_of_error);
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        message,
    )
}

fn event_stream(body: HttpBody) -> Response<HttpBody> {
    let mut resp = sse_response(body);
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// JSON when the response comes first (and `--sse` is off), else an SSE stream
/// carrying the request's notifications and then its response.
async fn reply(
    server: &Arc<MockServer>,
    session: Arc<Session>,
    mut rx: mpsc::UnboundedReceiver<OutMsg>,
) -> Response<HttpBody> {
    let guard = CancelOnDrop(session);
    let mut first = None;
    if server.config.reply_mode != ReplyMode::Sse {
        while let Some(message) = rx.recv().await {
            match message {
                OutMsg::Response(v) => return json_reply(&v),
                OutMsg::Related(_) if server.config.reply_mode == ReplyMode::Json => continue,
                other => {
                    first = Some(other);
                    break;
                }
            }
        }
    }
    let (tx, body_rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let _guard = guard;
        let mut next = first;
        loop {
            let message = match next.take() {
                Some(m) => Some(m),
                None => tokio::select! {
                    _ = tx.closed() => break,
                    m = rx.recv() => m,
                },
            };
            match message {
                Some(OutMsg::Related(v)) => {
                    if tx.send(frame(&v)).is_err() {
                        break;
                    }
                }
                Some(OutMsg::Response(v)) => {
                    let _ = tx.send(frame(&v));
                    break;
                }
                _ => break,
            }
        }
    });
    event_stream(sse_body(body_rx, Some(server.config.keepalive)))
}

/// `subscriptions/listen`: an SSE stream that starts with the acknowledgement and
/// stays open until the client closes it.
async fn listen(server: &Arc<MockServer>, id: Value, params: &Value) -> Response<HttpBody> {
    let filter = match Filter::parse(params) {
        Ok(f) => f,
        Err(e) => return json_reply(&jsonrpc::error_response(&id, &e)),
    };
    if !server.config.listen_delay.is_zero() {
        tokio::time::sleep(server.config.listen_delay).await;
    }
    let mut rx = server.listeners.open(id, filter);
    let (tx, body_rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                m = rx.recv() => match m {
                    Some(v) => {
                        if tx.send(frame(&v)).is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
    });
    event_stream(sse_body(body_rx, Some(server.config.keepalive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_decoding() {
        assert_eq!(decode_sentinel("plain").as_deref(), Some("plain"));
        assert_eq!(
            decode_sentinel("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_sentinel("=?base64?***?="), None);
    }
}
