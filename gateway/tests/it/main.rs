//! The gateway's integration tests, one binary: the crate is linked once and
//! `common` (the process harness: real binaries on ephemeral ports, killed on drop)
//! is compiled once. One module per topic; run one with
//! `cargo test -p mcp-gateway --test it -- TOPIC::`.
//!
//! Tests that run the gateway and the sidecar together live elsewhere: the sign-in end
//! to end with real MCP clients in `gateway/tests/interop/test_oauth_e2e.py` (Python,
//! `ops/scripts/oauth-e2e.sh`), the production configurations in
//! `sidecar/tests/it/production_config.rs`.

mod common;

mod aggregate;
mod asks;
mod audit;
mod audit_e2e;
mod auth;
mod bridge;
mod cli;
mod drain;
mod metrics;
mod modern;
mod protocol;
mod secrets;
mod security;
mod stdio;
mod subscriptions;
mod tracing;
mod upgrade;
