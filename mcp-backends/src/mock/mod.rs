//! `mcp-mock`: a real MCP server for the gateway's tests and the official
//! conformance suite, over Streamable HTTP or stdio.
//!
//! Layout: [`config`] (settings), [`protocol`] (revisions, log levels),
//! [`jsonrpc`] (messages), [`session`] (per-session state), [`sse`] (event streams),
//! [`catalog`] (resources, prompts, completions), [`tools`], [`handler`] (dispatch),
//! [`http`] and [`stdio`] (transports), [`dynamic`] (timed fixtures).

pub mod catalog;
pub mod config;
pub mod dynamic;
pub mod handler;
pub mod http;
pub mod jsonrpc;
pub mod modern;
pub mod protocol;
pub mod server;
pub mod session;
pub mod sse;
pub mod stdio;
pub mod tools;

use std::io::Write;
use std::sync::Arc;

pub use config::{MockConfig, ProtocolMode, ReplyMode};
pub use server::MockServer;

use session::{Outlet, Session};
use sse::StreamRegistry;

/// Listens on `addr` and serves Streamable HTTP at `/mcp` forever. Prints
/// `listening on http://ADDR/mcp` on stdout once the socket is bound.
pub async fn run_http(config: MockConfig, addr: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let default_session = config
        .stateless
        .then(|| Session::new(None, Outlet::Http(StreamRegistry::default())));
    let server = MockServer::new(config, default_session);
    dynamic::spawn(Arc::clone(&server));
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on http://{local}{}", http::MCP_PATH)?;
        stdout.flush()?;
    }
    tracing::info!(%local, name = %server.config.name, "mcp-mock serving Streamable HTTP");
    http::serve(listener, server).await
}

/// Serves MCP on stdin/stdout until stdin closes.
pub async fn run_stdio(config: MockConfig) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    stdio::spawn_writer(rx);
    let session = Session::new(None, Outlet::Stdio(tx.clone()));
    let server = MockServer::new(config, Some(session));
    dynamic::spawn(Arc::clone(&server));
    tracing::info!(name = %server.config.name, "mcp-mock serving stdio");
    stdio::serve(server, tx).await
}
