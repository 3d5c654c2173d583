//! The MCP protocol side of the gateway.

pub mod cursor;
pub mod handler;
pub mod index;
pub mod jsonrpc;
pub mod names;
pub mod passthrough;
pub mod relay;
pub mod session;
pub mod version;
