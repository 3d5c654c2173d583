//! `/healthz`, `/readyz` and the background probes that keep backend states fresh.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};

use crate::mcp::handler::Gateway;
use crate::upstream::Health;

/// The `/readyz` document and its HTTP status: 503 only when every backend is down.
pub fn readiness(gw: &Gateway, auth: Option<&crate::auth::bearer::Authenticator>) -> (u16, Value) {
    let backends: Vec<Value> = gw
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name(),
                "state": b.health().as_str(),
                "since_s": b.state_age().as_secs(),
                "last_error": b.last_error(),
                "requests": b.requests.load(Ordering::Relaxed),
                "failures": b.failures.load(Ordering::Relaxed),
                "omitted_from_lists": b.omitted.load(Ordering::Relaxed),
                "transport": b.transport_status(),
            })
        })
        .collect();
    let all_down =
        !gw.backends.is_empty() && gw.backends.iter().all(|b| b.health() == Health::Down);
    let status = if all_down { 503 } else { 200 };
    let mut doc = json!({"ready": !all_down, "backends": backends});
    if let Some(a) = auth.filter(|a| a.mode() != crate::config::AuthMode::None) {
        doc["auth"] = json!({
            "cache_hits": a.hits.load(Ordering::Relaxed),
            "cache_misses": a.misses.load(Ordering::Relaxed),
        });
    }
    (status, doc)
}

/// The public `/readyz`: the status alone. Backend names and their last errors tell a
/// stranger what runs behind the gateway and how it fails; they are served on the
/// metrics/admin listener ([`crate::admin`]).
pub fn public_readiness(gw: &Gateway) -> (u16, Value) {
    let all_down =
        !gw.backends.is_empty() && gw.backends.iter().all(|b| b.health() == Health::Down);
    (
        if all_down { 503 } else { 200 },
        json!({"ready": !all_down}),
    )
}

/// Pings every backend every `server.health_interval`, in parallel.
pub struct Probes {
    pub gateway: Arc<Gateway>,
    /// Its signing keys are fetched ahead of the first request.
    pub auth: Option<Arc<crate::auth::bearer::Authenticator>>,
}

#[async_trait]
impl BackgroundService for Probes {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let every = self.gateway.config.server.health_interval;
        // Shared STDIO and legacy-SSE connections start now, supervised on this runtime.
        for b in &self.gateway.backends {
            b.start();
        }
        if let Some(a) = &self.auth {
            a.warm().await;
        }
        loop {
            futures::future::join_all(self.gateway.backends.iter().map(|b| async move {
                // probe() records its own outcome; only a hang is recorded here.
                if tokio::time::timeout(b.config.timeout, b.probe())
                    .await
                    .is_err()
                {
                    b.record::<()>(&Err(crate::upstream::UpstreamError::Timeout(
                        b.config.timeout,
                    )));
                }
            }))
            .await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {
                    for b in &self.gateway.backends {
                        b.stop();
                    }
                    return;
                }
            }
        }
    }
}
