//! Fetches the `${secret:…}` values a config refers to again, every
//! `server.secrets_refresh_s`, and gives backends their new credentials: a rotated
//! secret takes effect without a restart.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::expand_refs;
use crate::mcp::handler::Gateway;
use crate::secrets::SecretStore;

/// Fetches the referenced secrets again every `server.secrets_refresh_s` and gives
/// backends their new credentials.
pub struct SecretRefresh {
    pub store: Arc<SecretStore>,
    pub names: std::collections::BTreeSet<String>,
    pub gateway: Arc<Gateway>,
    pub every: std::time::Duration,
}

#[async_trait]
impl BackgroundService for SecretRefresh {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            match self.store.load(&self.names).await {
                Ok(changed) if !changed.is_empty() => {
                    tracing::info!(secrets = ?changed, "secrets rotated");
                    let env = |n: &str| std::env::var(n).ok();
                    let secret = |r: &str| self.store.resolve(r).map_err(|e| e.to_string());
                    let resolve = |t: &str| expand_refs(t, &env, &secret);
                    for b in &self.gateway.backends {
                        b.refresh_headers(&resolve);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot refresh secrets; keeping the values known")
                }
            }
        }
    }
}
