//! `google-direct` mode: opaque Google access tokens, checked at Google's tokeninfo
//! endpoint (audience, email, expiry) and, for the Workspace domain (`hd`), which an
//! access token's tokeninfo does not carry, at the userinfo endpoint. Both URLs are
//! configurable, so tests use the fake Google.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::{AuthError, Identity};

pub struct TokenInfo {
    client: reqwest::Client,
    url: Url,
    userinfo: Url,
    client_id: String,
    allowed_domains: Vec<String>,
}

/// What tokeninfo said, with the seconds the token still lives.
pub struct Checked {
    pub identity: Identity,
    pub expires_in: Option<u64>,
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn number(v: &Value, k: &str) -> Option<u64> {
    match v.get(k)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl TokenInfo {
    pub fn new(
        client: reqwest::Client,
        url: Url,
        userinfo: Url,
        client_id: String,
        allowed_domains: Vec<String>,
    ) -> TokenInfo {
        TokenInfo {
            client,
            url,
            userinfo,
            client_id,
            allowed_domains,
        }
    }

    pub async fn check(&self, token: &str) -> Result<Checked, AuthError> {
        let resp = self
            .client
            .post(self.url.clone())
            .form(&[("access_token", token)])
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("tokeninfo: {e}")))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(AuthError::Unavailable(format!("tokeninfo: HTTP {status}")));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("tokeninfo: {e}")))?;
        if !status.is_success() || body.get("error").is_some() {
            return Err(AuthError::InvalidToken(
                "Google does not accept this token".into(),
            ));
        }
        // The token must have been issued to our client (aud) or obtained by it (azp):
        // one that another app got from an employee is not ours to accept.
        let ok =
            [field(&body, "aud"), field(&body, "azp")].contains(&Some(self.client_id.as_str()));
        if !ok {
            return Err(AuthError::InvalidToken(
                "the token was issued to another client".into(),
            ));
        }
        let verified = matches!(body.get("email_verified"), Some(Value::Bool(true)))
            || field(&body, "email_verified") == Some("true");
        let email = field(&body, "email").ok_or_else(|| {
            AuthError::InvalidToken("the token carries no email (scope email missing)".into())
        })?;
        if !verified {
            return Err(AuthError::InvalidToken(
                "the email address is not verified".into(),
            ));
        }
        // Workspace accounts carry `hd`; a consumer account whose address happens to be
        // in our domain does not, and the email's domain proves nothing.
        let hd = match field(&body, "hd") {
            Some(hd) => Some(hd.to_string()),
            None => self.workspace_domain(token).await?,
        };
        let Some(domain) = hd.map(|d| d.to_ascii_lowercase()) else {
            return Err(AuthError::InvalidToken(
                "the account is not a Google Workspace account (no hd claim)".into(),
            ));
        };
        if !self.allowed_domains.contains(&domain) {
            return Err(AuthError::InvalidToken(format!(
                "the domain {domain:?} is not allowed"
            )));
        }
        let expires_in = number(&body, "expires_in");
        if expires_in == Some(0) {
            return Err(AuthError::InvalidToken("the token has expired".into()));
        }
        Ok(Checked {
            identity: Identity {
                sub: field(&body, "sub").unwrap_or(email).to_string(),
                email: Some(email.to_string()),
                groups: Vec::new(),
                client_id: field(&body, "azp").map(str::to_string),
                scopes: field(&body, "scope")
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
            },
            expires_in,
        })
    }

    /// The account's Workspace domain from userinfo (`None`: a consumer account).
    async fn workspace_domain(&self, token: &str) -> Result<Option<String>, AuthError> {
        let resp = self
            .client
            .get(self.userinfo.clone())
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("userinfo: {e}")))?;
        let status = resp.status();
        if status.is_server_error() {
            return Err(AuthError::Unavailable(format!("userinfo: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(AuthError::InvalidToken(
                "Google does not accept this token".into(),
            ));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("userinfo: {e}")))?;
        Ok(field(&body, "hd").map(str::to_string))
    }
}
