//! The mock MCP server's integration tests, one binary: `common` (start the built
//! `mcp-mock`, speak HTTP/1.1, read SSE) is compiled once. Run one topic with
//! `cargo test -p mcp-backends --test it -- TOPIC::`.

mod common;

mod mock_http;
mod mock_stdio;
mod modern;
