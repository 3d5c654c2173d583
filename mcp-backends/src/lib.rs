//! Test kit for the MCP gateway.
//!
//! - [`mock`]: `mcp-mock`, a complete MCP server (Streamable HTTP and stdio) with the
//!   conformance fixtures and tools for the gateway's integration tests.

pub mod mock;
