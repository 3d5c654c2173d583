//! The sidecar's integration tests, one binary: the crate is linked once and
//! `common` (the harness: real `fake-google` and `mcp-oauth-sidecar` processes, a
//! Postgres schema per test, a browser-like client) is compiled once. One module per
//! topic; run one with `cargo test -p mcp-oauth-sidecar --test it -- TOPIC::`.
//!
//! `production_config` also starts the gateway (the two production configurations
//! together); the other test of both binaries is the sign-in end to end with real MCP
//! clients, `gateway/tests/interop/test_oauth_e2e.py` (`ops/scripts/oauth-e2e.sh`).

mod common;

mod audit_log;
mod clients;
mod cursor;
mod drain;
mod flow;
mod load;
mod observe;
mod production_config;
mod refusals;
mod restart;
mod security_limits;
mod security_signin;
