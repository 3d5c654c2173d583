//! What the MCP handler takes and gives back: a [`Request`], a [`Response`] (a full body
//! or an SSE stream), and the [`Info`] it records about the request for the audit log,
//! the access log and the metrics. Nothing of Pingora.

use super::jsonrpc::{self};
use crate::upstream::to_bytes;
use bytes::Bytes;
use futures::stream::BoxStream;
use http::{HeaderMap, Method};
use serde_json::Value;

/// A request as the handler sees it.
pub struct Request {
    pub method: Method,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// What a modern request's head said, checked before the body was read
    /// ([`Gateway::precheck`](super::handler::Gateway::precheck)): its Host and Origin
    /// passed, its method and name are compared with the body's.
    pub head: Option<super::early::Head>,
}

/// Who is calling (anonymous without authentication).
pub type Caller = crate::auth::Identity;

/// The MCP facts of a request, filled by the handler: the MCP part of the request's one
/// record ([`crate::record::RequestRecord`]).
#[derive(Debug, Default, Clone)]
pub struct Info {
    pub rpc_method: Option<super::jsonrpc::Method>,
    pub backend: Option<String>,
    pub target: Option<String>,
    pub rpc_error: Option<i64>,
    pub session: Option<String>,
    /// Request id, sent upstream as `x-request-id`.
    pub request_id: String,
    /// The client's W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// The client's `Mcp-Param-*` headers (2026-07-28), forwarded to the backend as
    /// they came: an intermediary passes on those it does not interpret.
    pub param_headers: Vec<(http::HeaderName, String)>,
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
    pub(super) fn answering(self, id: &Value) -> Response {
        self.map_full_body(|body| match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) if v.get("error").is_some() => {
                v["id"] = id.clone();
                to_bytes(&v)
            }
            _ => body,
        })
    }

    /// A full answer with its body rewritten by `f` (status and headers kept); a stream
    /// as it is.
    pub(super) fn map_full_body(self, f: impl FnOnce(Bytes) -> Bytes) -> Response {
        match self {
            Response::Full {
                status,
                content_type,
                headers,
                body,
            } => Response::Full {
                status,
                content_type,
                headers,
                body: f(body),
            },
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
