//! The sidecar's integration tests, one binary: the crate is linked once and
//! `common` (the harness: real `fake-google` and `mcp-oauth-sidecar` processes, a
//! Postgres schema per test, a browser-like client) is compiled once. One module per
//! topic; run one with `cargo test -p mcp-oauth-sidecar --test it -- TOPIC::`.

mod common;

mod audit_log;
mod clients;
mod flow;
mod load;
mod production_config;
mod refusals;
mod restart;
mod security_limits;
mod security_signin;
