//! State shared by every connection of one mock process: configuration, sessions,
//! and the timed fixtures (dynamic items, watched resource).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::config::MockConfig;
use super::session::Session;

pub struct MockServer {
    pub config: MockConfig,
    /// Sessions issued over stateful Streamable HTTP, by `Mcp-Session-Id`.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The one session of stdio mode or of stateless HTTP mode.
    default_session: Option<Arc<Session>>,
    dynamic_added: AtomicBool,
    watched_version: AtomicU64,
}

impl MockServer {
    pub fn new(config: MockConfig, default_session: Option<Arc<Session>>) -> Arc<MockServer> {
        Arc::new(MockServer {
            config,
            sessions: Mutex::new(HashMap::new()),
            default_session,
            dynamic_added: AtomicBool::new(false),
            watched_version: AtomicU64::new(0),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn default_session(&self) -> Option<Arc<Session>> {
        self.default_session.clone()
    }

    pub fn insert_session(&self, session: Arc<Session>) {
        if let Some(id) = &session.id {
            self.sessions().insert(id.clone(), session);
        }
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().get(id).cloned()
    }

    pub fn remove_session(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions().remove(id)
    }

    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Every live session, including the default one.
    pub fn all_sessions(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        all.extend(self.default_session.iter().cloned());
        all
    }

    /// Drops sessions idle for longer than `max_idle` that have no live GET stream.
    pub fn reap_idle(&self, max_idle: std::time::Duration) -> usize {
        let mut sessions = self.sessions();
        let stale: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| {
                s.idle_for() > max_idle
                    && s.running_count() == 0
                    && s.streams().is_none_or(|r| r.live_get_streams() == 0)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            if let Some(s) = sessions.remove(id) {
                s.close();
            }
        }
        stale.len()
    }

    /// Whether the dynamic tool, resource and prompt have appeared.
    pub fn dynamic_added(&self) -> bool {
        self.dynamic_added.load(Ordering::SeqCst)
    }

    pub fn add_dynamic(&self) {
        self.dynamic_added.store(true, Ordering::SeqCst);
    }

    /// How many times `test://watched-resource` has changed.
    pub fn watched_version(&self) -> u64 {
        self.watched_version.load(Ordering::SeqCst)
    }

    pub fn bump_watched(&self) -> u64 {
        self.watched_version.fetch_add(1, Ordering::SeqCst) + 1
    }
}
