//! The MCP gateway's OAuth 2.1 authorization server: RFC 8414 metadata and OIDC
//! discovery, RFC 7591 registration and Client ID Metadata Documents, PKCE (S256
//! only), RFC 8707 resources, RFC 9207 `iss`, sign-in with Google Workspace (groups
//! from the Directory API), its own ES256 access tokens and rotating refresh tokens
//! kept in Postgres.

pub mod app;
pub mod audit;
pub mod authorize;
pub mod callback;
pub mod clients;
pub mod config;
pub mod connection;
pub mod drain;
pub mod google;
pub mod google_direct;
pub mod http;
pub mod keys;
pub mod lookups;
pub mod metadata;
pub mod metrics;
pub mod pages;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod token;
