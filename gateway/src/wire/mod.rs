//! The wire vocabulary both sides speak: JSON-RPC framing and methods, protocol
//! revisions, capability bits, and the gateway's session with one backend.
//!
//! Why a module of its own: the protocol handler ([`crate::mcp`]) and the backends
//! ([`crate::upstream`]) both need these words; neither imports the other's, and this
//! imports neither.

use serde::{Deserialize, Serialize};

pub mod caps;
pub mod jsonrpc;
pub mod meta;
pub mod request;
pub mod version;

/// The gateway's session with one backend.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamSession {
    /// The backend's `Mcp-Session-Id`, absent for stateless backends.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Revision negotiated with the backend.
    #[serde(rename = "v")]
    pub version: String,
    /// Capability bits of the backend.
    #[serde(rename = "c")]
    pub caps: caps::Caps,
}

/// A log level of `logging/setLevel` (RFC 5424's severities, as MCP names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    pub fn parse(name: &str) -> Option<LogLevel> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}
