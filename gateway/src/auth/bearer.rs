//! The bearer check: the token from `Authorization`, validated once and then served
//! from a cache keyed by the token itself (an exact match, so no collision can stand in
//! for a valid token), for at most `cache_ttl_s` and never past the token's own
//! expiry. The cache is bounded: when full, expired entries are dropped, and if that
//! is not enough it starts again empty (tokens are then validated anew).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use http::HeaderMap;
use jsonwebtoken::{decode, decode_header, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::google::TokenInfo;
use super::jwks::Jwks;
use super::{AuthError, Identity};
use crate::config::{AuthConfig, AuthMode};

#[derive(Clone)]
struct Cached {
    identity: Arc<Identity>,
    /// Unix seconds after which the entry must not be used.
    until: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Value>,
}

pub struct Authenticator {
    cfg: AuthConfig,
    jwks: Option<Jwks>,
    google: Option<TokenInfo>,
    cache: dashmap::DashMap<Box<str>, Cached>,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The bearer token of a request. Tokens anywhere else (query string, body) are not
/// looked at.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Err(AuthError::Missing);
    };
    if values.next().is_some() {
        return Err(AuthError::InvalidToken(
            "several Authorization headers".into(),
        ));
    }
    let v = v
        .to_str()
        .map_err(|_| AuthError::InvalidToken("malformed Authorization header".into()))?;
    let (scheme, token) = v.split_once(' ').ok_or_else(|| {
        AuthError::InvalidToken("Authorization must be \"Bearer <token>\"".into())
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::InvalidToken(
            "Authorization must be \"Bearer <token>\"".into(),
        ));
    }
    Ok(token.trim())
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig, client: reqwest::Client) -> Authenticator {
        let jwks = match (cfg.mode, &cfg.issuer) {
            (AuthMode::OAuth, Some(issuer)) => Some(Jwks::new(
                client.clone(),
                issuer.clone(),
                cfg.jwks_url.clone(),
                cfg.jwks_refresh_min,
            )),
            _ => None,
        };
        // Config validation makes google_client_id required in google-direct mode.
        let google = match (cfg.mode, &cfg.google_client_id) {
            (AuthMode::GoogleDirect, Some(id)) => Some(TokenInfo::new(
                client,
                cfg.tokeninfo_url.clone(),
                cfg.userinfo_url.clone(),
                id.clone(),
                cfg.allowed_domains.clone(),
            )),
            _ => None,
        };
        Authenticator {
            cfg: cfg.clone(),
            jwks,
            google,
            cache: dashmap::DashMap::new(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.cfg.mode
    }

    /// Fetches the issuer's keys ahead of the first request (best effort).
    pub async fn warm(&self) {
        if let Some(j) = &self.jwks {
            let _ = j.refresh().await;
        }
    }

    /// Who sent this request. `mode = "none"`: everyone is anonymous.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, AuthError> {
        if self.cfg.mode == AuthMode::None {
            return Ok(Arc::new(Identity::anonymous()));
        }
        let token = bearer_token(headers)?;
        if let Some(c) = self.cache.get(token).map(|c| c.clone()) {
            if c.until > now() {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.check_scopes(&c.identity)?;
                return Ok(c.identity);
            }
            self.cache.remove(token);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // A span for a validation only (a cache hit costs nothing worth tracing).
        let span = mcp_telemetry::child_span!("auth.validate_token", otel.kind = "internal");
        let (identity, expires_at) = async {
            Ok::<_, AuthError>(match self.cfg.mode {
                AuthMode::GoogleDirect => {
                    let g = self
                        .google
                        .as_ref()
                        .ok_or_else(|| AuthError::Unavailable("no tokeninfo".into()))?;
                    let checked = g.check(token).await?;
                    let exp = now() + checked.expires_in.unwrap_or(self.cfg.cache_ttl.as_secs());
                    (checked.identity, exp)
                }
                _ => self.verify_jwt(token).await?,
            })
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| mcp_telemetry::fail(&span, e.to_string()))?;
        let identity = Arc::new(identity);
        let until = expires_at.min(now() + self.cfg.cache_ttl.as_secs());
        if self.cache.len() as u64 >= self.cfg.cache_max_entries {
            let t = now();
            self.cache.retain(|_, c| c.until > t);
            if self.cache.len() as u64 >= self.cfg.cache_max_entries {
                self.cache.clear();
            }
        }
        self.cache.insert(
            token.into(),
            Cached {
                identity: identity.clone(),
                until,
            },
        );
        self.check_scopes(&identity)?;
        Ok(identity)
    }

    fn check_scopes(&self, who: &Identity) -> Result<(), AuthError> {
        match self
            .cfg
            .required_scopes
            .iter()
            .find(|s| !who.scopes.contains(s))
        {
            Some(missing) => Err(AuthError::InsufficientScope(missing.clone())),
            None => Ok(()),
        }
    }

    async fn verify_jwt(&self, token: &str) -> Result<(Identity, u64), AuthError> {
        let jwks = self
            .jwks
            .as_ref()
            .ok_or_else(|| AuthError::Unavailable("no issuer configured".into()))?;
        let header = decode_header(token)
            .map_err(|_| AuthError::InvalidToken("the token is not a well-formed JWT".into()))?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        // RFC 9068 §4: an access token says so in its header; an ID token or any other
        // JWT signed by the same issuer is not one.
        if !header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        }) {
            return Err(AuthError::InvalidToken(
                "the token is not an access token (header typ must be \"at+jwt\")".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::InvalidToken("the token names no key (kid)".into()))?;
        let key = jwks.key(&kid).await?;
        let issuer = self
            .cfg
            .issuer
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[issuer.clone(), format!("{issuer}/")]);
        v.set_audience(&[self.cfg.audience.as_str()]);
        v.leeway = self.cfg.clock_skew.as_secs();
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::InvalidToken(
                match e.kind() {
                    K::ExpiredSignature => "the token has expired",
                    K::ImmatureSignature => "the token is not valid yet",
                    K::InvalidAudience => "the token was issued for another resource",
                    K::InvalidIssuer => "the token was issued by another issuer",
                    K::InvalidSignature => "the token's signature does not verify",
                    K::MissingRequiredClaim(_) => "the token lacks a required claim",
                    _ => "the token is not valid",
                }
                .to_string(),
            )
        })?;
        let c = data.claims;
        if !self.cfg.allowed_domains.is_empty() {
            let domain = c
                .email
                .as_deref()
                .and_then(|e| e.rsplit_once('@'))
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            if !self.cfg.allowed_domains.contains(&domain) {
                return Err(AuthError::InvalidToken(format!(
                    "the domain {domain:?} is not allowed"
                )));
            }
        }
        if c.iat
            .is_some_and(|iat| iat > now() + self.cfg.clock_skew.as_secs())
        {
            return Err(AuthError::InvalidToken("the token is not valid yet".into()));
        }
        let scopes = match (&c.scope, &c.scp) {
            (Some(s), _) => s.split_whitespace().map(str::to_string).collect(),
            (None, Some(Value::Array(a))) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            (None, Some(Value::String(s))) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let exp = c.exp.unwrap_or(0) + self.cfg.clock_skew.as_secs().min(5);
        Ok((
            Identity {
                sub: c.sub,
                email: c.email,
                groups: c.groups,
                client_id: c.client_id,
                scopes,
            },
            exp,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for x in v {
            m.append(http::header::AUTHORIZATION, x.parse().unwrap());
        }
        m
    }

    #[test]
    fn token_extraction() {
        assert_eq!(bearer_token(&h(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&h(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&h(&[])), Err(AuthError::Missing));
        assert!(matches!(
            bearer_token(&h(&["Basic abc"])),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            bearer_token(&h(&["Bearer a", "Bearer b"])),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            bearer_token(&h(&["Bearer "])),
            Err(AuthError::InvalidToken(_))
        ));
    }
}
