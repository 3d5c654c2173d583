//! RFC 8414 authorization server metadata and OpenID Connect discovery.
//!
//! In `mode = "google-direct"`, a standard client (one whose User-Agent is not a
//! known loopback client such as Claude Code, mcp-remote or an SDK) is given Google's
//! authorization endpoint and the sidecar's token endpoint (which adds the Google
//! client secret and forwards to Google); loopback clients always get the sidecar's.

use serde_json::{json, Value};

use crate::app::App;
use crate::clients::detect_client;
use crate::config::Mode;
use crate::http::{json_cacheable, Req, Resp};

/// Clients that receive the answer on this computer's loopback interface.
pub fn is_loopback_user_agent(ua: &str) -> bool {
    matches!(
        detect_client(ua, None, None).as_str(),
        "claude-code" | "mcp-remote" | "python-sdk" | "node-sdk"
    )
}

pub async fn document(app: &App, req: &Req, oidc: bool) -> Resp {
    let i = &app.cfg.issuer;
    let methods = ["none", "client_secret_basic", "client_secret_post"];
    let mut doc = json!({
        "issuer": i.as_str(),
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "registration_endpoint": format!("{i}/register"),
        "revocation_endpoint": format!("{i}/revoke"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": methods,
        "revocation_endpoint_auth_methods_supported": methods,
        "scopes_supported": app.cfg.authorization.scopes_supported,
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "resource_indicators_supported": true,
    });
    if oidc {
        doc["subject_types_supported"] = json!(["public"]);
        doc["id_token_signing_alg_values_supported"] = json!(["ES256"]);
        doc["claims_supported"] = json!([
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "email",
            "groups",
            "client_id",
            "scope"
        ]);
    }
    let mut vary = false;
    if app.cfg.server.mode == Mode::GoogleDirect {
        vary = true;
        if !is_loopback_user_agent(req.user_agent()) {
            match app.google.endpoints().await {
                Ok(e) => doc["authorization_endpoint"] = Value::String(e.authorization),
                Err(e) => {
                    tracing::warn!(error = %e, "google-direct: Google endpoints unavailable; serving the sidecar's")
                }
            }
        }
    }
    let mut r = json_cacheable(&doc, 300);
    if vary {
        r.headers_mut().insert(
            http::header::VARY,
            http::HeaderValue::from_static("User-Agent"),
        );
    }
    r
}
