//! Health probes: every backend pinged every `server.health_interval_s`, in parallel,
//! so `/readyz` and the lists know which backends are up; the issuer's signing keys are
//! fetched ahead of the first request; shared STDIO and legacy-SSE connections are
//! started and, at shutdown, stopped.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::mcp::handler::Gateway;

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
            // Calls held for a client's input past their time: cancelled at the backend.
            self.gateway.holds.sweep();
            // Resource subscriptions of 2025 sessions no stream has read for a day.
            self.gateway.subscriptions.sweep();
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
