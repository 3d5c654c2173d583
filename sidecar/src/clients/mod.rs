//! OAuth clients: redirect-URI rules, client detection, lookup of registered clients
//! and of Client ID Metadata Documents.

pub mod cimd;
pub mod register;

use url::Url;

use crate::app::App;
use crate::store::{ClientRecord, StoreError};

/// Why a redirect URI is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `http://localhost`, `http://127.0.0.1` or `http://[::1]`, any port (RFC 8252 §7.3).
    Loopback,
    /// An exact entry of `[clients] allowed_redirect_uris`.
    Allowlisted,
}

pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// Checks one redirect URI against the rules; the error is the sentence shown to the
/// client.
pub fn check_redirect_uri(uri: &str, allowlist: &[String]) -> Result<RedirectKind, String> {
    let parsed =
        Url::parse(uri).map_err(|_| format!("redirect_uri {uri:?} is not an absolute URI"))?;
    if parsed.fragment().is_some() {
        return Err(format!("redirect_uri {uri:?} must not contain a fragment"));
    }
    if is_loopback_uri(&parsed) {
        return Ok(RedirectKind::Loopback);
    }
    if allowlist.iter().any(|a| a == uri) {
        return Ok(RedirectKind::Allowlisted);
    }
    Err(format!(
        "redirect_uri {uri:?} is not allowed: use a loopback URI (http://127.0.0.1:PORT/…, \
         http://localhost:PORT/… or http://[::1]:PORT/…) or one listed in the server's \
         [clients] allowed_redirect_uris"
    ))
}

fn is_loopback_uri(u: &Url) -> bool {
    u.scheme() == "http"
        && u.host_str()
            .is_some_and(|h| LOOPBACK_HOSTS.iter().any(|l| l.eq_ignore_ascii_case(h)))
}

/// Whether `requested` is one of `registered`: exactly, or for loopback URIs, equal
/// but for the port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(req) = Url::parse(requested) else {
        return false;
    };
    if !is_loopback_uri(&req) || req.fragment().is_some() {
        return false;
    }
    registered.iter().any(|r| {
        Url::parse(r).is_ok_and(|reg| {
            is_loopback_uri(&reg)
                && reg.host_str() == req.host_str()
                && reg.path() == req.path()
                && reg.query() == req.query()
        })
    })
}

/// Names the client program from its User-Agent and registration data.
pub fn detect_client(
    user_agent: &str,
    client_name: Option<&str>,
    software_id: Option<&str>,
) -> String {
    let ua = user_agent.to_ascii_lowercase();
    let name = client_name.unwrap_or("").to_ascii_lowercase();
    let sw = software_id.unwrap_or("").to_ascii_lowercase();
    let either = |needle: &str| ua.contains(needle) || name.contains(needle);
    let kind = if ua.starts_with("claude-code/") || name.contains("claude code") {
        "claude-code"
    } else if either("claude") {
        "claude"
    } else if ua.contains("mcp-remote")
        || name.contains("mcp cli")
        || sw == "2e6dc280-f3c3-4e01-99a7-8181dbd1d23d"
    {
        "mcp-remote"
    } else if either("visual studio code") || either("vscode") {
        "vscode"
    } else if either("cursor") {
        "cursor"
    } else if either("chatgpt") || either("openai") {
        "chatgpt"
    } else if ua.contains("python-httpx") || ua.contains("python") {
        "python-sdk"
    } else if ua.contains("node") || ua.contains("undici") {
        "node-sdk"
    } else {
        "unknown"
    };
    kind.to_string()
}

/// Whether a client only ever redirects to this computer (shown on the consent page).
pub fn is_loopback_client(c: &ClientRecord) -> bool {
    !c.redirect_uris.is_empty()
        && c.redirect_uris
            .iter()
            .all(|u| Url::parse(u).is_ok_and(|p| is_loopback_uri(&p)))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown client_id")]
    Unknown,
    #[error("{0}")]
    Metadata(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Finds a client: a registered one, or a Client ID Metadata Document (fetched,
/// validated and cached).
pub async fn find_client(app: &App, client_id: &str) -> Result<ClientRecord, ClientError> {
    if client_id.is_empty() || client_id.len() > 2048 {
        return Err(ClientError::Unknown);
    }
    if cimd::looks_like_cimd(client_id, app.cfg.clients.allow_http_cimd) {
        return cimd::resolve(app, client_id).await;
    }
    match app.store.client(client_id).await? {
        // An unused registration past its time is gone, even before the sweep.
        Some(c)
            if c.kind == "dcr"
                && c.expires_at
                    .is_none_or(|e| e > std::time::SystemTime::now()) =>
        {
            Ok(c)
        }
        _ => Err(ClientError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_uris_are_allowed_on_any_port() {
        for u in [
            "http://127.0.0.1:3000/callback",
            "http://localhost/cb",
            "http://[::1]:8080/oauth/callback",
        ] {
            assert_eq!(
                check_redirect_uri(u, &[]),
                Ok(RedirectKind::Loopback),
                "{u}"
            );
        }
    }

    #[test]
    fn other_uris_need_the_allowlist() {
        let allow = vec!["https://claude.ai/api/mcp/auth_callback".to_string()];
        assert_eq!(
            check_redirect_uri("https://claude.ai/api/mcp/auth_callback", &allow),
            Ok(RedirectKind::Allowlisted)
        );
        let err = check_redirect_uri("https://evil.example/cb", &allow).unwrap_err();
        assert!(err.contains("is not allowed"), "{err}");
        assert!(
            check_redirect_uri("https://localhost/cb", &allow).is_err(),
            "https loopback is not RFC 8252 loopback"
        );
        assert!(check_redirect_uri("http://127.0.0.1/cb#frag", &allow).is_err());
        assert!(check_redirect_uri("/relative", &allow).is_err());
        assert!(check_redirect_uri("http://127.0.0.2/cb", &allow).is_err());
    }

    #[test]
    fn loopback_matching_ignores_only_the_port() {
        let reg = vec!["http://127.0.0.1:3000/callback".to_string()];
        assert!(redirect_matches(&reg, "http://127.0.0.1:3000/callback"));
        assert!(redirect_matches(&reg, "http://127.0.0.1:49152/callback"));
        assert!(!redirect_matches(&reg, "http://127.0.0.1:49152/other"));
        assert!(!redirect_matches(&reg, "http://localhost:3000/callback"));
        let web = vec!["https://vscode.dev/redirect".to_string()];
        assert!(redirect_matches(&web, "https://vscode.dev/redirect"));
        assert!(!redirect_matches(&web, "https://vscode.dev/redirect/"));
    }

    #[test]
    fn clients_are_detected() {
        assert_eq!(
            detect_client("claude-code/1.0.3", None, None),
            "claude-code"
        );
        assert_eq!(
            detect_client("node", Some("MCP CLI Client"), None),
            "mcp-remote"
        );
        assert_eq!(detect_client("python-httpx/0.28", None, None), "python-sdk");
        assert_eq!(
            detect_client("", Some("Visual Studio Code"), None),
            "vscode"
        );
        assert_eq!(detect_client("curl/8", None, None), "unknown");
    }
}
