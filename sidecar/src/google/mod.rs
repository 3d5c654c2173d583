//! Google as the identity provider: OIDC discovery (or explicit endpoints), the
//! authorization URL, the code exchange, ID-token validation against Google's JWKS,
//! and the Admin SDK Directory API for a user's groups.

pub mod aws;
pub mod credentials;
pub mod directory_user;
pub mod token_proxy;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;
use url::Url;

use crate::config::GoogleConfig;
use credentials::TokenSource;

#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("Google {0}")]
    Http(String),
    #[error("Google discovery: {0}")]
    Discovery(String),
    #[error("Google token exchange: {0}")]
    TokenExchange(String),
    #[error("ID token: {0}")]
    IdToken(String),
    #[error("Directory API: {0}")]
    Directory(String),
    #[error("Directory API: user not found")]
    UserNotFound,
    #[error("Google credentials: {0}")]
    Credentials(String),
    #[error(
        "Google discovery at {url} names issuer {discovered:?}, but google.issuer is \
         {configured:?}: refusing to use it; set google.issuer to the issuer that \
         discovery document belongs to, or point google.issuer at the right provider"
    )]
    IssuerMismatch {
        url: String,
        configured: String,
        discovered: String,
    },
}

#[derive(Debug, Clone)]
pub struct Endpoints {
    pub issuer: String,
    pub authorization: String,
    pub token: String,
    pub jwks: String,
}

/// The claims of a validated ID token that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<Value>,
    #[serde(default)]
    pub hd: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
}

impl IdClaims {
    /// Google sends a boolean; some tools send the string "true".
    pub fn verified(&self) -> bool {
        match &self.email_verified {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        }
    }
}

struct JwksCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

pub struct Google {
    pub cfg: GoogleConfig,
    http: reqwest::Client,
    callback_url: String,
    endpoints: RwLock<Option<Endpoints>>,
    jwks: RwLock<JwksCache>,
    pub tokens: TokenSource,
}

impl Google {
    pub fn new(cfg: GoogleConfig, callback_url: String) -> Result<Google, GoogleError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_millis(5000)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("mcp-oauth-sidecar")
            .build()
            .map_err(|e| GoogleError::Http(e.to_string()))?;
        let tokens = TokenSource::new(&cfg, http.clone())?;
        Ok(Google {
            cfg,
            http,
            callback_url,
            endpoints: RwLock::new(None),
            jwks: RwLock::new(JwksCache {
                keys: HashMap::new(),
                fetched: None,
            }),
            tokens,
        })
    }

    /// Endpoints from config, completed by discovery (fetched once, then cached). A
    /// discovery document whose `issuer` is not `google.issuer` is refused
    /// ([`GoogleError::IssuerMismatch`]) and not cached.
    pub async fn endpoints(&self) -> Result<Endpoints, GoogleError> {
        if let Some(e) = self.endpoints.read().await.as_ref() {
            return Ok(e.clone());
        }
        let c = &self.cfg;
        let e = match (&c.authorization_endpoint, &c.token_endpoint, &c.jwks_uri) {
            (Some(a), Some(t), Some(j)) => Endpoints {
                issuer: c.issuer.to_string(),
                authorization: a.to_string(),
                token: t.to_string(),
                jwks: j.to_string(),
            },
            _ => {
                let url = format!("{}/.well-known/openid-configuration", c.issuer);
                let v: Value = crate::metrics::google("discovery", self.http.get(&url).send())
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| GoogleError::Discovery(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| GoogleError::Discovery(e.to_string()))?;
                let field = |k: &str| {
                    v.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| GoogleError::Discovery(format!("no {k} in {url}")))
                };
                let discovered = field("issuer")?;
                if discovered.trim_end_matches('/') != c.issuer.as_str() {
                    return Err(GoogleError::IssuerMismatch {
                        url,
                        configured: c.issuer.to_string(),
                        discovered,
                    });
                }
                Endpoints {
                    issuer: c.issuer.to_string(),
                    authorization: match &c.authorization_endpoint {
                        Some(a) => a.to_string(),
                        None => field("authorization_endpoint")?,
                    },
                    token: match &c.token_endpoint {
                        Some(t) => t.to_string(),
                        None => field("token_endpoint")?,
                    },
                    jwks: match &c.jwks_uri {
                        Some(j) => j.to_string(),
                        None => field("jwks_uri")?,
                    },
                }
            }
        };
        *self.endpoints.write().await = Some(e.clone());
        Ok(e)
    }

    /// The `hd` hint: configured, else the only allowed domain, else `*`.
    pub fn hd_hint(&self) -> String {
        if let Some(h) = &self.cfg.hd_hint {
            return h.clone();
        }
        match self.cfg.allowed_domains.as_slice() {
            [one] => one.clone(),
            _ => "*".into(),
        }
    }

    /// Where to send the browser: Google's authorization endpoint with our own state,
    /// nonce and PKCE challenge.
    pub async fn authorization_url(
        &self,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, GoogleError> {
        let e = self.endpoints().await?;
        let mut u = Url::parse(&e.authorization)
            .map_err(|err| GoogleError::Discovery(format!("authorization_endpoint: {err}")))?;
        u.query_pairs_mut()
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.callback_url)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile")
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", code_challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("hd", &self.hd_hint())
            .append_pair("prompt", "select_account")
            .append_pair("access_type", "online");
        Ok(u.into())
    }

    /// Exchanges Google's code and validates the ID token it returns.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<IdClaims, GoogleError> {
        let e = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.callback_url.as_str()),
            ("client_id", self.cfg.client_id.as_str()),
            ("code_verifier", verifier),
        ];
        if let Some(s) = &self.cfg.client_secret {
            form.push(("client_secret", s.as_str()));
        }
        let resp = crate::metrics::google("token", self.http.post(&e.token).form(&form).send())
            .await
            .map_err(|err| GoogleError::TokenExchange(err.to_string()))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(GoogleError::TokenExchange(format!(
                "HTTP {} {}",
                status.as_u16(),
                v["error"].as_str().unwrap_or("")
            )));
        }
        let id_token = v["id_token"]
            .as_str()
            .ok_or_else(|| GoogleError::TokenExchange("no id_token in the response".into()))?;
        self.validate_id_token(id_token, nonce, &e).await
    }

    /// Checks signature (Google's JWKS, RS256 only), `iss`, `aud`, `exp`, `iat` and
    /// `nonce`.
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: &str,
        e: &Endpoints,
    ) -> Result<IdClaims, GoogleError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| GoogleError::IdToken(format!("malformed: {err}")))?;
        if header.alg != Algorithm::RS256 {
            return Err(GoogleError::IdToken(format!(
                "unexpected algorithm {:?}",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| GoogleError::IdToken("no kid".into()))?;
        let key = self.jwk(&kid, &e.jwks).await?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[self.cfg.client_id.as_str()]);
        let mut issuers = vec![e.issuer.clone()];
        if let Some(bare) = e.issuer.strip_prefix("https://") {
            issuers.push(bare.to_string()); // Google also issues `accounts.google.com`
        }
        v.set_issuer(&issuers);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        v.leeway = 60;
        let data = jsonwebtoken::decode::<IdClaims>(token, &key, &v)
            .map_err(|err| GoogleError::IdToken(err.to_string()))?;
        let claims = data.claims;
        let nonce_ok = claims
            .nonce
            .as_deref()
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
        if !nonce_ok {
            return Err(GoogleError::IdToken("nonce does not match".into()));
        }
        Ok(claims)
    }

    async fn jwk(&self, kid: &str, jwks_uri: &str) -> Result<DecodingKey, GoogleError> {
        {
            let cache = self.jwks.read().await;
            let fresh = cache
                .fetched
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3600));
            if let (true, Some(k)) = (fresh, cache.keys.get(kid)) {
                return Ok(k.clone());
            }
        }
        let mut cache = self.jwks.write().await;
        // Another task may have refreshed meanwhile; refetch at most every 10 s for an
        // unknown kid.
        if let Some(k) = cache.keys.get(kid) {
            if cache
                .fetched
                .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
            {
                return Ok(k.clone());
            }
        }
        if cache
            .fetched
            .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
            && !cache.keys.is_empty()
        {
            return cache
                .keys
                .get(kid)
                .cloned()
                .ok_or_else(|| GoogleError::IdToken(format!("unknown signing key {kid}")));
        }
        let v: Value = crate::metrics::google("jwks", self.http.get(jwks_uri).send())
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|err| GoogleError::Http(format!("JWKS: {err}")))?
            .json()
            .await
            .map_err(|err| GoogleError::Http(format!("JWKS: {err}")))?;
        let mut keys = HashMap::new();
        for k in v["keys"].as_array().into_iter().flatten() {
            let (Some(id), Some(n), Some(e)) =
                (k["kid"].as_str(), k["n"].as_str(), k["e"].as_str())
            else {
                continue;
            };
            if k["kty"] != "RSA" {
                continue;
            }
            if let Ok(dk) = DecodingKey::from_rsa_components(n, e) {
                keys.insert(id.to_string(), dk);
            }
        }
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| GoogleError::IdToken(format!("unknown signing key {kid}")))
    }

    /// The user's groups (emails, lowercase, sorted). Empty when no Directory
    /// credentials are configured.
    pub async fn groups(&self, email: &str) -> Result<Vec<String>, GoogleError> {
        if !self.tokens.enabled() {
            return Ok(Vec::new());
        }
        let mut groups = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..50 {
            let mut u = Url::parse(&format!(
                "{}/admin/directory/v1/groups",
                self.cfg.directory_api_base.as_str().trim_end_matches('/')
            ))
            .map_err(|e| GoogleError::Directory(e.to_string()))?;
            u.query_pairs_mut()
                .append_pair("userKey", email)
                .append_pair("maxResults", "200");
            if let Some(p) = &page {
                u.query_pairs_mut().append_pair("pageToken", p);
            }
            let v = self.directory_get(u, "").await?;
            for g in v["groups"].as_array().into_iter().flatten() {
                if let Some(e) = g["email"].as_str() {
                    groups.push(e.to_ascii_lowercase());
                }
            }
            match v["nextPageToken"].as_str() {
                Some(p) if !p.is_empty() => page = Some(p.to_string()),
                _ => {
                    groups.sort();
                    groups.dedup();
                    return Ok(groups);
                }
            }
        }
        Err(GoogleError::Directory("too many pages of groups".into()))
    }

    /// One Directory API GET as the service account: a token refused (401) is dropped
    /// and the call made once more with a fresh one; 404 is a user Google does not know
    /// (deleted); other failures are `Directory` errors (`what` prefixes the status).
    pub(crate) async fn directory_get(&self, url: Url, what: &str) -> Result<Value, GoogleError> {
        let mut retried = false;
        loop {
            let token = self.tokens.token().await?;
            let call = self.http.get(url.clone()).bearer_auth(&token).send();
            let resp = crate::metrics::google("directory", call)
                .await
                .map_err(|e| GoogleError::Directory(e.to_string()))?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                self.tokens.invalidate().await;
                continue;
            }
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(GoogleError::UserNotFound);
            }
            if !status.is_success() {
                return Err(GoogleError::Directory(format!(
                    "{what}HTTP {}",
                    status.as_u16()
                )));
            }
            return resp
                .json()
                .await
                .map_err(|e| GoogleError::Directory(e.to_string()));
        }
    }
}
