//! RFC 9728 protected-resource metadata and the `WWW-Authenticate` challenges.

use serde_json::{json, Value};

use super::AuthError;
use crate::config::{AuthConfig, ServerConfig};

/// Path of the path-suffixed metadata document for `/mcp`.
pub const PATH_MCP: &str = "/.well-known/oauth-protected-resource/mcp";
/// Path of the root metadata document.
pub const PATH_ROOT: &str = "/.well-known/oauth-protected-resource";

pub fn metadata_url(server: &ServerConfig) -> String {
    format!(
        "{}{PATH_MCP}",
        server.public_url.as_str().trim_end_matches('/')
    )
}

/// The metadata document.
pub fn document(server: &ServerConfig, auth: &AuthConfig) -> Value {
    let servers: Vec<String> = auth
        .issuer
        .iter()
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .collect();
    let mut doc = json!({
        "resource": auth.audience,
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": auth.resource_name,
    });
    if !auth.scopes_supported.is_empty() {
        doc["scopes_supported"] = json!(auth.scopes_supported);
    }
    let _ = server;
    doc
}

fn quote(s: &str) -> String {
    s.replace(['"', '\\'], "'")
}

/// The `WWW-Authenticate` value for a refusal, and its status (401 or 403).
pub fn challenge(server: &ServerConfig, auth: &AuthConfig, err: &AuthError) -> (u16, String) {
    let mut v = format!("Bearer resource_metadata=\"{}\"", metadata_url(server));
    let scope = if auth.required_scopes.is_empty() {
        auth.scopes_supported.join(" ")
    } else {
        auth.required_scopes.join(" ")
    };
    if !scope.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", quote(&scope)));
    }
    match err {
        AuthError::Missing => (401, v),
        AuthError::InvalidToken(d) => (
            401,
            format!(
                "{v}, error=\"invalid_token\", error_description=\"{}\"",
                quote(d)
            ),
        ),
        AuthError::InsufficientScope(s) => (
            403,
            format!(
                "{v}, error=\"insufficient_scope\", error_description=\"{}\"",
                quote(&format!("the token lacks scope {s}"))
            ),
        ),
        AuthError::Unavailable(_) => (
            503,
            format!(
                "{v}, error=\"temporarily_unavailable\", error_description=\"{}\"",
                quote(&err.to_string())
            ),
        ),
    }
}
