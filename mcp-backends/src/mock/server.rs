//! State shared by every connection of one mock process: configuration, sessions,
//! and the timed fixtures (dynamic items, watched resource).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

use super::config::MockConfig;
use super::modern::listen::Listeners;
use super::session::Session;

/// Trace contexts kept for `GET /traces`.
const TRACE_LIMIT: usize = 256;

pub struct MockServer {
    pub config: MockConfig,
    /// Sessions issued over stateful Streamable HTTP, by `Mcp-Session-Id`.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// The one session of stdio mode or of stateless HTTP mode.
    default_session: Option<Arc<Session>>,
    dynamic_added: AtomicBool,
    watched_version: AtomicU64,
    /// Open `subscriptions/listen` streams (modern era).
    pub listeners: Listeners,
    /// Key of the HMAC that protects `requestState` (random per process).
    pub state_key: [u8; 32],
    /// Requests cancelled before they answered (closed stream, notifications/cancelled).
    cancelled: AtomicU64,
    /// The last requests that carried a trace context (`traceparent` header or `_meta`).
    traces: Mutex<std::collections::VecDeque<Value>>,
}

impl MockServer {
    pub fn new(config: MockConfig, default_session: Option<Arc<Session>>) -> Arc<MockServer> {
        Arc::new(MockServer {
            config,
            sessions: Mutex::new(HashMap::new()),
            default_session,
            dynamic_added: AtomicBool::new(false),
            watched_version: AtomicU64::new(0),
            listeners: Listeners::default(),
            state_key: rand::random(),
            cancelled: AtomicU64::new(0),
            traces: Mutex::new(std::collections::VecDeque::new()),
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

    pub fn note_cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }

    pub fn cancelled_count(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Records the trace context a request carried: the `traceparent` header and
    /// `params._meta.traceparent` (either may be absent; nothing is kept without both).
    pub fn record_trace(&self, method: &str, header: Option<&Value>, meta: Option<&Value>) {
        if header.is_none() && meta.is_none() {
            return;
        }
        let mut traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        traces.push_back(json!({ "method": method, "header": header, "meta": meta }));
        while traces.len() > TRACE_LIMIT {
            traces.pop_front();
        }
    }

    /// The recorded trace contexts, oldest first.
    pub fn traces(&self) -> Vec<Value> {
        let traces = self.traces.lock().unwrap_or_else(|p| p.into_inner());
        traces.iter().cloned().collect()
    }
}
