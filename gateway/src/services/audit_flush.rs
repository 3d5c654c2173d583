//! Flushes the audit queue when the server stops; what cannot be written stays in the
//! spool and is replayed at the next start.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::audit::Auditor;

/// Flushes the audit queue when the server stops (what cannot be written stays in the
/// spool and is replayed at the next start).
pub struct AuditFlush {
    pub auditor: Arc<Auditor>,
}

#[async_trait]
impl BackgroundService for AuditFlush {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        self.auditor.shutdown().await;
    }
}
