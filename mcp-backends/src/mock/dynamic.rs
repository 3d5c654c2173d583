//! Timed behaviours of the reference fixtures: the dynamic tool, resource and
//! prompt appear 2 s after start (with `list_changed` notifications), and
//! `test://watched-resource` changes every 3 s (`resources/updated` to subscribers).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::catalog::WATCHED_URI;
use super::jsonrpc;
use super::server::MockServer;
use super::session::Session;

pub const DYNAMIC_DELAY: Duration = Duration::from_secs(2);
pub const WATCHED_INTERVAL: Duration = Duration::from_secs(3);

/// A stdio client gets no notifications before it has sent `initialize`.
fn ready(session: &Session) -> bool {
    !session.is_stdio() || session.initialize_seen()
}

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
        for session in adder.all_sessions().into_iter().filter(|s| ready(s)) {
            for method in [
                "notifications/tools/list_changed",
                "notifications/resources/list_changed",
                "notifications/prompts/list_changed",
            ] {
                session.send_unsolicited(jsonrpc::notification(method, Value::Null), true);
            }
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
            for session in server.all_sessions() {
                if ready(&session) && session.is_subscribed(WATCHED_URI) {
                    session.send_unsolicited(
                        jsonrpc::notification(
                            "notifications/resources/updated",
                            json!({ "uri": WATCHED_URI }),
                        ),
                        true,
                    );
                }
            }
        }
    });
}
