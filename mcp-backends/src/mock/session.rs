//! One MCP session: what the client negotiated, its subscriptions and log level,
//! the requests it is running (for cancellation), the requests the server sent it
//! (matched by id when the answer comes back), and where messages not tied to a
//! request go (the GET streams over HTTP, stdout over stdio).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::jsonrpc::id_key;
use super::protocol::{LogLevel, DEFAULT_HTTP_VERSION};
use super::sse::StreamRegistry;

/// What a request handler emits, in order, for the transport to deliver.
#[derive(Debug)]
pub enum OutMsg {
    /// A notification or server-to-client request related to the request being handled.
    Related(Value),
    /// The final response (result or error) of one request.
    Response(Value),
    /// The request ended without a response (it was cancelled).
    NoResponse,
    /// End the reply stream now, without the response (`close_stream`).
    CloseStream,
    /// Close the reply connection but keep the stream resumable (`test_reconnection`).
    Disconnect,
}

/// Where messages not tied to a request leave the server.
pub enum Outlet {
    /// Streamable HTTP: the session's SSE streams.
    Http(StreamRegistry),
    /// stdio: the stdout writer.
    Stdio(mpsc::UnboundedSender<OutMsg>),
}

struct Negotiated {
    protocol: String,
    client_capabilities: Option<Value>,
    client_info: Option<Value>,
    initialize_seen: bool,
    initialized: bool,
    log_level: Option<LogLevel>,
}

type PendingMap = HashMap<String, oneshot::Sender<Result<Value, Value>>>;

pub struct Session {
    /// The `Mcp-Session-Id`; `None` for stdio and stateless HTTP.
    pub id: Option<String>,
    negotiated: Mutex<Negotiated>,
    subscriptions: Mutex<HashSet<String>>,
    pending: Mutex<PendingMap>,
    running: Mutex<HashMap<String, CancellationToken>>,
    next_server_request: AtomicU64,
    closed: CancellationToken,
    outlet: Outlet,
    last_active: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a pending server-to-client request when the waiting handler goes away
/// (answered, timed out or cancelled).
pub struct PendingGuard {
    session: Arc<Session>,
    key: String,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.session.pending).remove(&self.key);
    }
}

impl Session {
    pub fn new(id: Option<String>, outlet: Outlet) -> Arc<Session> {
        Arc::new(Session {
            id,
            negotiated: Mutex::new(Negotiated {
                protocol: DEFAULT_HTTP_VERSION.to_string(),
                client_capabilities: None,
                client_info: None,
                initialize_seen: false,
                initialized: false,
                log_level: None,
            }),
            subscriptions: Mutex::new(HashSet::new()),
            pending: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            next_server_request: AtomicU64::new(1),
            closed: CancellationToken::new(),
            outlet,
            last_active: Mutex::new(Instant::now()),
        })
    }

    /// A new random session id: 32 lowercase hex digits (visible ASCII).
    pub fn new_id() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    pub fn protocol(&self) -> String {
        lock(&self.negotiated).protocol.clone()
    }

    /// Records the outcome of `initialize`.
    pub fn set_initialize(&self, protocol: &str, capabilities: Option<Value>, info: Option<Value>) {
        let mut n = lock(&self.negotiated);
        n.protocol = protocol.to_string();
        n.client_capabilities = capabilities;
        n.client_info = info;
        n.initialize_seen = true;
    }

    /// Notes that an `initialize` request arrived (stdio lets later requests in
    /// while it is still being answered).
    pub fn note_initialize(&self) {
        lock(&self.negotiated).initialize_seen = true;
    }

    pub fn initialize_seen(&self) -> bool {
        lock(&self.negotiated).initialize_seen
    }

    pub fn mark_initialized(&self) {
        lock(&self.negotiated).initialized = true;
    }

    pub fn client_info(&self) -> Option<Value> {
        lock(&self.negotiated).client_info.clone()
    }

    /// Whether the client declared a capability (`sampling`, `elicitation`, `roots`).
    /// Without an `initialize` (stateless HTTP), capabilities are unknown and assumed.
    pub fn client_supports(&self, capability: &str) -> bool {
        match &lock(&self.negotiated).client_capabilities {
            None => true,
            Some(caps) => caps.get(capability).is_some_and(|c| !c.is_null()),
        }
    }

    pub fn set_log_level(&self, level: LogLevel) {
        lock(&self.negotiated).log_level = Some(level);
    }

    /// Messages are sent when no level was set, or at or above the level set.
    pub fn should_log(&self, level: LogLevel) -> bool {
        lock(&self.negotiated)
            .log_level
            .is_none_or(|min| level >= min)
    }

    pub fn subscribe(&self, uri: &str) {
        lock(&self.subscriptions).insert(uri.to_string());
    }

    pub fn unsubscribe(&self, uri: &str) {
        lock(&self.subscriptions).remove(uri);
    }

    pub fn is_subscribed(&self, uri: &str) -> bool {
        lock(&self.subscriptions).contains(uri)
    }

    /// Allocates an id for a server-to-client request (`"srv-1"`, `"srv-2"`, … per
    /// session) and a receiver for the client's answer.
    pub fn begin_server_request(
        self: &Arc<Self>,
    ) -> (Value, oneshot::Receiver<Result<Value, Value>>, PendingGuard) {
        let n = self.next_server_request.fetch_add(1, Ordering::Relaxed);
        let id = json!(format!("srv-{n}"));
        let key = id_key(&id);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(key.clone(), tx);
        let guard = PendingGuard {
            session: Arc::clone(self),
            key,
        };
        (id, rx, guard)
    }

    /// Delivers the client's answer to a server-to-client request. False when no
    /// request with that id is waiting.
    pub fn resolve_server_request(&self, id: &Value, outcome: Result<Value, Value>) -> bool {
        match lock(&self.pending).remove(&id_key(id)) {
            Some(tx) => tx.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Registers a running client request; the token fires on cancellation or when
    /// the session ends.
    pub fn register_running(&self, id: &Value) -> CancellationToken {
        let token = self.closed.child_token();
        lock(&self.running).insert(id_key(id), token.clone());
        token
    }

    pub fn unregister_running(&self, id: &Value) {
        lock(&self.running).remove(&id_key(id));
    }

    pub fn running_count(&self) -> usize {
        lock(&self.running).len()
    }

    /// `notifications/cancelled`: stops the request if it is still running.
    pub fn cancel(&self, id: &Value) -> bool {
        match lock(&self.running).remove(&id_key(id)) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Sends a message not tied to any client request: on one GET stream over HTTP
    /// (kept in a small backlog until one opens when `keep`), on stdout over stdio.
    pub fn send_unsolicited(&self, message: Value, keep: bool) -> bool {
        match &self.outlet {
            Outlet::Http(streams) => streams.send_standalone(message, keep),
            Outlet::Stdio(tx) => tx.send(OutMsg::Related(message)).is_ok(),
        }
    }

    pub fn streams(&self) -> Option<&StreamRegistry> {
        match &self.outlet {
            Outlet::Http(streams) => Some(streams),
            Outlet::Stdio(_) => None,
        }
    }

    pub fn is_stdio(&self) -> bool {
        matches!(self.outlet, Outlet::Stdio(_))
    }

    /// Ends the session: running requests are cancelled, streams closed, pending
    /// server-to-client requests dropped.
    pub fn close(&self) {
        self.closed.cancel();
        if let Outlet::Http(streams) = &self.outlet {
            streams.close_all();
        }
        lock(&self.pending).clear();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    pub fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        lock(&self.last_active).elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_requests_round_trip() {
        let s = Session::new(None, Outlet::Http(StreamRegistry::default()));
        let (id, rx, guard) = s.begin_server_request();
        assert_eq!(id, json!("srv-1"));
        assert!(s.resolve_server_request(&id, Ok(json!({"ok": true}))));
        assert_eq!(rx.await.ok(), Some(Ok(json!({"ok": true}))));
        drop(guard);
        assert!(!s.resolve_server_request(&id, Ok(json!({}))));
        let (id2, _rx2, guard2) = s.begin_server_request();
        assert_eq!(id2, json!("srv-2"));
        drop(guard2);
        assert!(!s.resolve_server_request(&id2, Ok(json!({}))));
    }

    #[test]
    fn capabilities_and_levels() {
        let s = Session::new(None, Outlet::Http(StreamRegistry::default()));
        assert!(
            s.client_supports("sampling"),
            "unknown capabilities are assumed"
        );
        s.set_initialize("2025-11-25", Some(json!({"elicitation": {}})), None);
        assert!(!s.client_supports("sampling"));
        assert!(s.client_supports("elicitation"));
        assert!(s.should_log(LogLevel::Debug));
        s.set_log_level(LogLevel::Warning);
        assert!(!s.should_log(LogLevel::Info));
        assert!(s.should_log(LogLevel::Error));
    }

    #[test]
    fn cancellation() {
        let s = Session::new(None, Outlet::Http(StreamRegistry::default()));
        let token = s.register_running(&json!(5));
        assert!(s.cancel(&json!(5)));
        assert!(token.is_cancelled());
        assert!(!s.cancel(&json!(5)));
        let other = s.register_running(&json!("x"));
        s.close();
        assert!(other.is_cancelled());
    }
}
