//! The wire vocabulary both sides speak: JSON-RPC framing and methods, protocol
//! revisions, capability bits, and the gateway's session with one backend.
//!
//! Why a module of its own: the protocol handler ([`crate::mcp`]) and the backends
//! ([`crate::upstream`]) both need these words; neither imports the other's, and this
//! imports neither.

use serde::{Deserialize, Serialize};

pub mod caps;
pub mod jsonrpc;
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
    pub caps: u16,
}
