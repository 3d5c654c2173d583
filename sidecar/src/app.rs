//! Everything a request handler needs, built once at start.

use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditSink;
use crate::config::Config;
use crate::google::{Google, GoogleError};
use crate::keys::{KeyError, KeyRing};
use crate::ratelimit::RateLimiter;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error("HTTP client: {0}")]
    Http(String),
}

pub struct App {
    pub cfg: Config,
    pub store: Store,
    pub keys: KeyRing,
    pub google: Google,
    pub cimd_http: reqwest::Client,
    pub audit: Arc<dyn AuditSink>,
    pub reg_limiter: RateLimiter,
    /// Unauthenticated lookups per address ([`crate::lookups`]).
    pub lookup_limiter: RateLimiter,
    /// Cookies get `Secure` and the `__Host-` prefix when the issuer is https.
    pub secure_cookies: bool,
    /// Set when the process is stopping ([`crate::drain`]).
    pub drain: crate::drain::Drain,
}

impl App {
    pub async fn new(cfg: Config, audit: Arc<dyn AuditSink>) -> Result<App, AppError> {
        let store = Store::connect(&cfg.store).await?;
        let grace = (cfg.tokens.access_token_ttl + Duration::from_secs(300)).as_secs_f64();
        let keys = KeyRing::load(store.clone(), cfg.tokens.signing_key.clone(), grace).await?;
        let google = Google::new(cfg.google.clone(), format!("{}/callback", cfg.issuer))?;
        check_google_discovery(&google).await?;
        let cimd_http = crate::clients::cimd::http_client(&cfg.clients)
            .map_err(|e| AppError::Http(e.to_string()))?;
        Ok(App {
            reg_limiter: RateLimiter::new(cfg.clients.registration_per_minute),
            lookup_limiter: RateLimiter::with_burst(
                cfg.rate_limit.lookups_burst,
                cfg.rate_limit.lookups_per_second,
            ),
            secure_cookies: cfg.issuer.as_str().starts_with("https://"),
            cfg,
            store,
            keys,
            google,
            cimd_http,
            audit,
            drain: crate::drain::Drain::default(),
        })
    }

    /// The name of cookie `base`: `__Host-{base}` when the issuer is https (the
    /// browser then insists on Secure, Path=/ and no Domain, so no sibling host can set
    /// or shadow it), plain on http (local runs, where `__Host-` cookies are refused).
    pub fn cookie_name(&self, base: &str) -> String {
        if self.secure_cookies {
            format!("__Host-{base}")
        } else {
            base.to_string()
        }
    }

    /// An absolute URL under the issuer.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.cfg.issuer, path)
    }
}

/// Fetches Google's discovery document at start-up: one naming another issuer than
/// `google.issuer` stops the start; an unreachable one is only a warning (it is fetched
/// again, and checked again, at first use).
async fn check_google_discovery(google: &Google) -> Result<(), GoogleError> {
    match tokio::time::timeout(Duration::from_secs(3), google.endpoints()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e @ GoogleError::IssuerMismatch { .. })) => Err(e),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Google discovery unavailable at start-up; tried again at first use");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "Google discovery did not answer within 3 s at start-up; tried again at first use"
            );
            Ok(())
        }
    }
}
