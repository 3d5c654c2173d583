//! What can go wrong talking to a backend, and what a client is told of it.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use crate::wire::jsonrpc;

/// What went wrong talking to a backend. The text never contains credentials.
#[derive(Debug, Error, Clone)]
pub enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("its session ended (HTTP 404)")]
    SessionExpired,
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad reply: {0}")]
    Protocol(String),
    #[error("it closed the stream before answering")]
    Closed,
    #[error("it answered with error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// A 4xx whose body is a JSON-RPC error (a modern server refusing a request, e.g.
    /// -32021 for a capability the client lacks): relayed to the client as it is.
    #[error("HTTP {status}: {answer}")]
    Refused { status: u16, answer: Value },
}

impl UpstreamError {
    /// The JSON-RPC code a client sees for this failure.
    pub fn code(&self) -> i64 {
        let said = match self {
            UpstreamError::Timeout(_) => return jsonrpc::BACKEND_TIMEOUT,
            UpstreamError::Rpc { code, .. } => *code,
            UpstreamError::Refused { answer, .. } => answer
                .pointer("/error/code")
                .and_then(Value::as_i64)
                .unwrap_or(jsonrpc::BACKEND_UNAVAILABLE),
            _ => return jsonrpc::BACKEND_UNAVAILABLE,
        };
        // The backend refusing the gateway's own revision is the backend failing, not
        // a verdict on the client's request.
        if self.is_link_error() {
            jsonrpc::BACKEND_UNAVAILABLE
        } else {
            said
        }
    }

    /// A refusal of the gateway's own link to the backend (the protocol revision it
    /// speaks there): not to be relayed as the backend's answer to the client.
    pub fn is_link_error(&self) -> bool {
        match self {
            UpstreamError::Rpc { code, .. } => is_link_code(Some(&Value::from(*code))),
            UpstreamError::Refused { answer, .. } => is_link_code(answer.pointer("/error/code")),
            _ => false,
        }
    }

    /// A short name of the failure, for `error.type` on spans.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::SessionExpired => "session_expired",
            UpstreamError::Status { .. } => "http_status",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Closed => "closed",
            UpstreamError::Rpc { .. } => "rpc_error",
            UpstreamError::Refused { .. } => "refused",
        }
    }

    /// Whether the backend itself looks unhealthy (as opposed to refusing one request).
    pub(super) fn is_outage(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::Closed
                | UpstreamError::Status { status: 500.., .. }
        )
    }
}

/// Whether a backend's error code refuses the gateway's own link to it (the protocol
/// revision the gateway speaks to it) rather than the client's request. A
/// HeaderMismatch is the client's: the `Mcp-Param-*` headers it checks are the
/// client's, forwarded as they came.
pub fn is_link_code(code: Option<&Value>) -> bool {
    code.and_then(Value::as_i64) == Some(jsonrpc::UNSUPPORTED_PROTOCOL_VERSION)
}
