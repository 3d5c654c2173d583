//! `mcp-gateway`: one MCP endpoint in front of many MCP servers, on Pingora.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
pub mod connections;
pub mod health;
pub mod mcp;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod secrets;
pub mod services;
pub mod upstream;
pub mod wire;

#[cfg(test)]
pub(crate) mod proptest_support;
