//! Cursor signs in with every shipped sidecar configuration.
//!
//! Cursor's dynamic registration sends three redirect URIs in one request: its
//! private-use scheme, its hosted callback and a loopback one. A registration that
//! refuses any of them refuses the whole set, so each shipped `ops/config/sidecar.*.toml`
//! must list the two non-loopback ones in `[clients] allowed_redirect_uris` (exact
//! entries; the loopback one is always allowed). Here the allowlist is read from each
//! shipped file, a sidecar runs with it, and Cursor's body registers and signs in
//! through its `cursor://` callback.

use std::path::PathBuf;

use crate::common::*;
use serde_json::{json, Value};

const CURSOR_APP: &str = "cursor://anysphere.cursor-mcp/oauth/callback";
const CURSOR_WEB: &str = "https://www.cursor.com/agents/mcp/oauth/callback";
const CURSOR_LOOPBACK: &str = "http://localhost:8787/callback";

/// The registration body Cursor sends (RFC 7591; no `application_type`).
fn cursor_body() -> Value {
    json!({
        "client_name": "Cursor",
        "redirect_uris": [CURSOR_APP, CURSOR_WEB, CURSOR_LOOPBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    })
}

fn shipped_configs() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/config");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ops/config")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sidecar.") && n.ends_with(".toml"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "shipped sidecar configs: {out:?}");
    out
}

/// `[clients] allowed_redirect_uris` of a shipped file, as written.
fn shipped_allowlist(path: &PathBuf) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read config");
    let doc: toml::Value = toml::from_str(&text).expect("config is TOML");
    doc.get("clients")
        .and_then(|c| c.get("allowed_redirect_uris"))
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{}: no [clients] allowed_redirect_uris", path.display()))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[tokio::test]
async fn cursor_registers_and_signs_in_with_every_shipped_allowlist() {
    let google = FakeGoogle::start().await;
    for path in shipped_configs() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let mut opts = SidecarOptions::new("cursor");
        opts.allowed_redirect_uris = shipped_allowlist(&path);
        let sidecar = Sidecar::start(&google, &opts).await;

        let (status, reg) = register(&sidecar, cursor_body()).await;
        assert_eq!(status, 201, "{name}: Cursor's registration refused: {reg}");
        assert_eq!(
            reg["redirect_uris"],
            json!([CURSOR_APP, CURSOR_WEB, CURSOR_LOOPBACK]),
            "{name}"
        );
        let client = Registered {
            client_id: reg["client_id"].as_str().expect("client_id").to_string(),
            redirect_uri: CURSOR_APP.to_string(),
            body: reg.clone(),
        };

        // The desktop app's callback gets the code, and the code gets a token.
        let p = pkce();
        let code = sign_in_code(
            &browser(),
            &sidecar,
            &AuthRequest::new(&client, &p),
            "alice@example.com",
        )
        .await;
        let (status, tok) = exchange(&sidecar, &client, &code, &p).await;
        assert_eq!(status, 200, "{name}: token: {tok}");
        assert!(tok["access_token"].is_string(), "{name}: {tok}");

        // Exact entries, not a scheme or a host: a look-alike makes the set refused.
        let mut odd = cursor_body();
        odd["redirect_uris"][0] = json!("cursor://anysphere.cursor-mcp/oauth/callback/x");
        let (status, err) = register(&sidecar, odd).await;
        assert_eq!(status, 400, "{name}: {err}");
        assert_eq!(err["error"], "invalid_redirect_uri", "{name}: {err}");
        sidecar.drop_schema().await;
    }
}
