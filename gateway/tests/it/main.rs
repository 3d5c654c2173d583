//! The gateway's integration tests, one binary: the crate is linked once and
//! `common` (the process harness: real binaries on ephemeral ports, killed on drop)
//! is compiled once. One module per topic; run one with
//! `cargo test -p mcp-gateway --test it -- TOPIC::`.

mod common;

mod aggregate;
mod audit;
mod audit_e2e;
mod auth;
mod cli;
mod metrics;
mod protocol;
mod secrets;
mod security;
mod stdio;
mod upgrade;
