//! Timed behaviours of the reference fixtures: the dynamic tool, resource and
//! prompt appear 2 s after start (with `list_changed` notifications), and
//! `test://watched-resource` changes every 3 s (`resources/updated` to subscribers).

use std::sync::Arc;
use std::time::Duration;

use super::catalog::WATCHED_URI;
use super::modern::listen::{announce, Change};
use super::server::MockServer;

pub const DYNAMIC_DELAY: Duration = Duration::from_secs(2);
pub const WATCHED_INTERVAL: Duration = Duration::from_secs(3);

/// Starts the timers, unless `--no-dynamic`.
pub fn spawn(server: Arc<MockServer>) {
    if !server.config.dynamic {
        return;
    }
    let adder = Arc::clone(&server);
    tokio::spawn(async move {
        tokio::time::sleep(DYNAMIC_DELAY).await;
        adder.add_dynamic();
        tracing::info!("dynamic tool, resource and prompt added");
        for change in [
            Change::ToolsList,
            Change::ResourcesList,
            Change::PromptsList,
        ] {
            announce(&adder, &change);
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + WATCHED_INTERVAL,
            WATCHED_INTERVAL,
        );
        loop {
            tick.tick().await;
            let version = server.bump_watched();
            tracing::debug!(version, "watched resource updated");
            announce(&server, &Change::ResourceUpdated(WATCHED_URI.to_string()));
        }
    });
}
