//! The issuer's signing keys: found through its metadata (`jwks_uri`), cached, refreshed
//! when a token names an unknown `kid` (at most every `jwks_refresh_min_s`, or every
//! second after a failed fetch), and kept while the issuer is unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::Instrument;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use url::Url;

use super::AuthError;

const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
const MAX_DOC: usize = 256 * 1024;

#[derive(Default)]
struct FetchState {
    last_ok: Option<Instant>,
    last_failure: Option<Instant>,
}

pub struct Jwks {
    client: reqwest::Client,
    issuer: Url,
    min_interval: Duration,
    keys: RwLock<HashMap<String, Arc<DecodingKey>>>,
    jwks_uri: RwLock<Option<Url>>,
    state: Mutex<FetchState>,
    fetching: tokio::sync::Mutex<()>,
}

impl Jwks {
    /// `jwks_url`: fetch keys there instead of finding them through the metadata.
    pub fn new(
        client: reqwest::Client,
        issuer: Url,
        jwks_url: Option<Url>,
        min_interval: Duration,
    ) -> Jwks {
        Jwks {
            client,
            issuer,
            min_interval,
            keys: RwLock::new(HashMap::new()),
            jwks_uri: RwLock::new(jwks_url),
            state: Mutex::new(FetchState::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn known_keys(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    fn cached(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.read().ok().and_then(|k| k.get(kid).cloned())
    }

    /// The key for `kid`, refreshing the set once if it is unknown.
    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AuthError> {
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        self.refresh().await?;
        self.cached(kid).ok_or_else(|| {
            AuthError::InvalidToken("the token is signed with an unknown key".into())
        })
    }

    /// Fetches the key set unless that was done too recently.
    pub async fn refresh(&self) -> Result<(), AuthError> {
        let _one = self.fetching.lock().await;
        {
            let st = self
                .state
                .lock()
                .map_err(|_| AuthError::Unavailable("lock".into()))?;
            if st.last_ok.is_some_and(|t| t.elapsed() < self.min_interval) {
                return Ok(());
            }
            if st
                .last_failure
                .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
            {
                // Not again so soon; with no key known, the token cannot be checked
                // (it is not therefore invalid: the client must not sign in again).
                return if self.known_keys() > 0 {
                    Ok(())
                } else {
                    Err(AuthError::Unavailable(
                        "the issuer's keys could not be fetched moments ago".into(),
                    ))
                };
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(issuer = %self.issuer, keys = keys.len(), "fetched signing keys");
                if let Ok(mut k) = self.keys.write() {
                    *k = keys;
                }
                if let Ok(mut st) = self.state.lock() {
                    st.last_ok = Some(Instant::now());
                }
                Ok(())
            }
            Err(e) => {
                if let Ok(mut st) = self.state.lock() {
                    st.last_failure = Some(Instant::now());
                }
                if self.known_keys() > 0 {
                    tracing::warn!(issuer = %self.issuer, error = %e, "cannot refresh signing keys; keeping the ones known");
                    Ok(())
                } else {
                    tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch signing keys");
                    Err(AuthError::Unavailable(format!(
                        "cannot fetch the issuer's keys: {e}"
                    )))
                }
            }
        }
    }

    async fn get_json(&self, url: &Url) -> Result<Value, String> {
        let resp = self
            .client
            .get(url.clone())
            .header("accept", "application/json")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{url}: HTTP {}", resp.status()));
        }
        let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if body.len() > MAX_DOC {
            return Err(format!("{url}: document too large"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    }

    async fn discover(&self) -> Result<Url, String> {
        if let Some(u) = self.jwks_uri.read().ok().and_then(|u| u.clone()) {
            return Ok(u);
        }
        let base = self.issuer.as_str().trim_end_matches('/');
        let mut last = String::new();
        for suffix in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/openid-configuration",
        ] {
            let Ok(url) = Url::parse(&format!("{base}{suffix}")) else {
                continue;
            };
            match self.get_json(&url).await {
                Ok(doc) => {
                    let Some(uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
                        last = format!("{url}: no jwks_uri");
                        continue;
                    };
                    let uri = Url::parse(uri).map_err(|e| format!("jwks_uri: {e}"))?;
                    if let Ok(mut u) = self.jwks_uri.write() {
                        *u = Some(uri.clone());
                    }
                    return Ok(uri);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let span = mcp_telemetry::span!("auth.jwks_fetch", otel.kind = "client");
        let r = self.fetch_inner().instrument(span.clone()).await;
        if let Err(e) = &r {
            mcp_telemetry::fail(&span, e.clone());
        }
        r
    }

    async fn fetch_inner(&self) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let uri = self.discover().await?;
        let doc = self.get_json(&uri).await?;
        let set: JwkSet =
            serde_json::from_value(doc).map_err(|e| format!("{uri}: not a JWK set: {e}"))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    keys.insert(kid, Arc::new(k));
                }
                Err(e) => tracing::warn!(kid, error = %e, "skipping unusable key"),
            }
        }
        Ok(keys)
    }
}
