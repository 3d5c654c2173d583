//! `mcp-gateway`: one MCP endpoint in front of many MCP servers, on Pingora.
// The proxy phase futures nest the MCP handler's, the upstream clients' and the audit
// log's async blocks deeper than the default layout query depth (128).
#![recursion_limit = "256"]

pub mod admin;
pub mod auth;
pub mod config;
pub mod connections;
pub mod drain;
pub mod health;
pub mod mcp;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod services;
pub mod telemetry;
pub mod upstream;
pub mod wire;

// The audit log and configuration references are leaf crates of the workspace (the
// sidecar uses them too); these paths keep `crate::audit` and `crate::secrets` working.
pub use config_refs::secrets;
pub use mcp_audit as audit;

#[cfg(test)]
pub(crate) mod proptest_support;
