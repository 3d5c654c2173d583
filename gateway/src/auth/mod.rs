//! The gateway as an OAuth 2.1 resource server: who is calling, and what they may use.
//!
//! - [`bearer`]: the `Authorization: Bearer` check, cached by token digest.
//! - [`jwks`]: the issuer's signing keys, fetched from its metadata and refreshed on an
//!   unknown `kid` (rate-limited), kept while the issuer is briefly down.
//! - [`google`]: `google-direct` mode, opaque Google tokens checked at tokeninfo.
//! - [`metadata`]: RFC 9728 protected-resource metadata and the 401/403 challenges.
//! - [`policy`]: backend and tool rules, evaluated from token claims only.

pub mod bearer;
pub mod google;
pub mod jwks;
pub mod metadata;
pub mod policy;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Identity {
        Identity {
            sub: "anonymous".into(),
            email: None,
            groups: Vec::new(),
            client_id: None,
            scopes: Vec::new(),
        }
    }

    /// The domain of the email address, lowercased.
    pub fn domain(&self) -> Option<String> {
        self.email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase())
    }
}

/// Why a request is not authenticated. The text goes to the client in
/// `error_description`, so it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials at all: 401 without `error=` (RFC 6750 §3.1).
    #[error("authentication required")]
    Missing,
    #[error("{0}")]
    InvalidToken(String),
    #[error("the token lacks scope {0:?}")]
    InsufficientScope(String),
    /// The token could not be checked now (issuer unreachable and no cached keys). The
    /// cause (which URL, which error) is for the log and the audit record only: it names
    /// internal addresses, so the client is told no more than to try again.
    #[error("cannot validate tokens right now; try again shortly")]
    Unavailable(String),
}

impl AuthError {
    /// What went wrong, in full, for the log and the audit record (never for the client).
    pub fn detail(&self) -> String {
        match self {
            AuthError::Unavailable(cause) => format!("{self}: {cause}"),
            other => other.to_string(),
        }
    }
}
