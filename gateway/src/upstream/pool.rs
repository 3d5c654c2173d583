//! Supervised connections of STDIO and legacy-SSE backends.
//!
//! - [`SharedPool`]: a fixed set of connections serving every session, each restarted
//!   with capped exponential backoff when it ends.
//! - [`SessionPool`]: one connection per downstream session, started on first use,
//!   stopped when the session ends or idles out, capped in number.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use url::Url;

use super::channel::{Channel, LinkHandle};
use super::{legacy_sse, stdio, UpstreamError};
use crate::config::StdioConfig;
use crate::wire::UpstreamSession;

/// How to open one connection.
#[derive(Clone)]
pub enum LinkSpec {
    Stdio(StdioConfig),
    Sse {
        client: reqwest::Client,
        url: Url,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
}

impl LinkSpec {
    /// The era to try first on a new connection (legacy SSE is legacy by definition).
    fn protocol(&self) -> crate::config::BackendProtocol {
        match self {
            LinkSpec::Stdio(cfg) => cfg.protocol,
            LinkSpec::Sse { .. } => crate::config::BackendProtocol::Legacy,
        }
    }

    async fn open(&self, backend: &str, timeout: Duration) -> Result<LinkHandle, UpstreamError> {
        match self {
            LinkSpec::Stdio(cfg) => stdio::start(backend, cfg).await,
            LinkSpec::Sse {
                client,
                url,
                headers,
            } => legacy_sse::connect(client.clone(), url, headers, timeout).await,
        }
    }
}

/// What the gateway declares as client when one connection serves many sessions: it
/// relays sampling, elicitation and roots to whichever client is asking.
fn shared_client_caps() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}})
}

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Slot {
    channel: RwLock<Option<Arc<Channel>>>,
}

pub struct SharedPool {
    backend: String,
    spec: LinkSpec,
    timeout: Duration,
    slots: Vec<Arc<Slot>>,
    next: AtomicUsize,
    pub restarts: AtomicU64,
    started: AtomicBool,
    last_exit: Mutex<Option<String>>,
    stopping: AtomicBool,
    up: tokio::sync::Notify,
}

impl SharedPool {
    pub fn new(backend: &str, spec: LinkSpec, size: usize, timeout: Duration) -> SharedPool {
        SharedPool {
            backend: backend.to_string(),
            spec,
            timeout,
            slots: (0..size.max(1))
                .map(|_| Arc::new(Slot::default()))
                .collect(),
            next: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            started: AtomicBool::new(false),
            last_exit: Mutex::new(None),
            stopping: AtomicBool::new(false),
            up: tokio::sync::Notify::new(),
        }
    }

    /// Starts the supervisors (once).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        for slot in &self.slots {
            let (pool, slot) = (self.clone(), slot.clone());
            tokio::spawn(async move { pool.supervise(slot).await });
        }
    }

    pub fn live(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.channel
                    .read()
                    .ok()
                    .and_then(|c| c.as_ref().map(|c| !c.is_closed()))
                    .unwrap_or(false)
            })
            .count()
    }

    async fn supervise(self: Arc<Self>, slot: Arc<Slot>) {
        let mut backoff = BACKOFF_START;
        while !self.stopping.load(Ordering::SeqCst) {
            let started = Instant::now();
            match self.spec.open(&self.backend, self.timeout).await {
                Ok(link) => {
                    let (channel, ended) = Channel::new(&self.backend, link);
                    match channel
                        .handshake(
                            self.spec.protocol(),
                            &shared_client_caps(),
                            &Value::Null,
                            self.timeout,
                        )
                        .await
                    {
                        Ok(_) => {
                            if let Ok(mut c) = slot.channel.write() {
                                *c = Some(channel.clone());
                            }
                            self.up.notify_waiters();
                            let how = ended.await.unwrap_or_else(|_| "ended".into());
                            if let Ok(mut c) = slot.channel.write() {
                                *c = None;
                            }
                            self.note_exit(&how);
                        }
                        Err(e) => {
                            channel.shutdown();
                            self.note_exit(&format!("failed to initialize: {e}"));
                        }
                    }
                }
                Err(e) => self.note_exit(&format!("failed to start: {e}")),
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > HEALTHY_AFTER {
                backoff = BACKOFF_START;
            }
            tracing::warn!(backend = %self.backend, retry_in_ms = backoff.as_millis() as u64, "restarting backend connection");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    fn note_exit(&self, how: &str) {
        tracing::warn!(backend = %self.backend, "backend connection ended: {how}");
        if let Ok(mut l) = self.last_exit.lock() {
            *l = Some(how.to_string());
        }
    }

    pub fn last_exit(&self) -> Option<String> {
        self.last_exit.lock().ok().and_then(|l| l.clone())
    }

    /// A live connection, round robin.
    pub fn pick(&self) -> Result<Arc<Channel>, UpstreamError> {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            if let Some(c) = slot.channel.read().ok().and_then(|c| c.clone()) {
                if !c.is_closed() {
                    return Ok(c);
                }
            }
        }
        Err(UpstreamError::Connect(match self.last_exit() {
            Some(how) => format!("not running, restarting (last: {how})"),
            None => "starting".to_string(),
        }))
    }

    /// Waits (up to the timeout) for a live connection: used by `initialize`, when
    /// the process may still be starting.
    pub async fn wait_live(&self) -> Result<Arc<Channel>, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let notified = self.up.notified();
            if let Ok(c) = self.pick() {
                return Ok(c);
            }
            if self.restarts.load(Ordering::Relaxed) > 0 && self.last_exit().is_some() {
                // It has failed before: do not hold the caller for a whole timeout.
                return self.pick();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pick();
            }
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for slot in &self.slots {
            if let Some(c) = slot.channel.read().ok().and_then(|c| c.clone()) {
                c.shutdown();
            }
        }
    }
}

struct SessionProc {
    channel: Arc<Channel>,
    last_used: Mutex<Instant>,
}

pub struct SessionPool {
    backend: String,
    spec: LinkSpec,
    timeout: Duration,
    idle_timeout: Duration,
    max: usize,
    procs: DashMap<String, Arc<OnceCell<Arc<SessionProc>>>>,
    count: AtomicUsize,
    reaper: AtomicBool,
    pub started_total: AtomicU64,
}

impl SessionPool {
    pub fn new(
        backend: &str,
        spec: LinkSpec,
        timeout: Duration,
        idle_timeout: Duration,
        max: usize,
    ) -> SessionPool {
        SessionPool {
            backend: backend.to_string(),
            spec,
            timeout,
            idle_timeout,
            max,
            procs: DashMap::new(),
            count: AtomicUsize::new(0),
            reaper: AtomicBool::new(false),
            started_total: AtomicU64::new(0),
        }
    }

    pub fn running(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The session's connection, if it is running.
    pub fn get(&self, sid: &str) -> Option<Arc<Channel>> {
        let cell = self.procs.get(sid)?.clone();
        let p = cell.get()?;
        if p.channel.is_closed() {
            return None;
        }
        if let Ok(mut t) = p.last_used.lock() {
            *t = Instant::now();
        }
        Some(p.channel.clone())
    }

    /// Starts the session's connection (once) and runs the handshake with the
    /// client's own capabilities.
    pub async fn start(
        self: &Arc<Self>,
        sid: &str,
        client_caps: &Value,
        client_info: &Value,
    ) -> Result<UpstreamSession, UpstreamError> {
        self.ensure_reaper();
        if let Some(c) = self.get(sid) {
            if let Some(s) = c.session() {
                return Ok(s);
            }
        }
        // A dead connection of this session is replaced.
        self.procs.remove_if(sid, |_, cell| {
            cell.get().is_some_and(|p| p.channel.is_closed())
        });
        let cell = self
            .procs
            .entry(sid.to_string())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let proc_ = cell
            .get_or_try_init(|| async {
                if self.count.fetch_add(1, Ordering::SeqCst) >= self.max {
                    self.count.fetch_sub(1, Ordering::SeqCst);
                    return Err(UpstreamError::Status {
                        status: 503,
                        body: format!(
                            "max_processes ({}) reached: every per-session process is in use; try again later",
                            self.max
                        ),
                    });
                }
                let opened = async {
                    let link = match self.spec.open(&self.backend, self.timeout).await {
                        Ok(l) => l,
                        Err(e) => {
                            self.count.fetch_sub(1, Ordering::SeqCst);
                            return Err(e);
                        }
                    };
                    let (channel, ended) = Channel::new(&self.backend, link);
                    let pool = self.clone();
                    let sid_owned = sid.to_string();
                    tokio::spawn(async move {
                        let how = ended.await.unwrap_or_default();
                        tracing::debug!(backend = %pool.backend, session = %sid_owned, "per-session process ended: {how}");
                        pool.count.fetch_sub(1, Ordering::SeqCst);
                    });
                    if let Err(e) = channel
                        .handshake(self.spec.protocol(), client_caps, client_info, self.timeout)
                        .await {
                        channel.shutdown();
                        return Err(e);
                    }
                    Ok(channel)
                }
                .await;
                match opened {
                    Ok(channel) => {
                        self.started_total.fetch_add(1, Ordering::Relaxed);
                        Ok(Arc::new(SessionProc {
                            channel,
                            last_used: Mutex::new(Instant::now()),
                        }))
                    }
                    // A started process is counted down when it ends.
                    Err(e) => Err(e),
                }
            })
            .await;
        match proc_ {
            Ok(p) => p
                .channel
                .session()
                .ok_or_else(|| UpstreamError::Protocol("no session after handshake".into())),
            Err(e) => {
                self.procs.remove(sid);
                Err(e)
            }
        }
    }

    /// Stops the session's connection (session ended).
    pub fn stop(&self, sid: &str) {
        if let Some((_, cell)) = self.procs.remove(sid) {
            if let Some(p) = cell.get() {
                p.channel.shutdown();
            }
        }
    }

    pub fn stop_all(&self) {
        for e in self.procs.iter() {
            if let Some(p) = e.value().get() {
                p.channel.shutdown();
            }
        }
        self.procs.clear();
    }

    fn ensure_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = Arc::downgrade(self);
        let every =
            (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(pool) = pool.upgrade() else { return };
                let idle: Vec<String> = pool
                    .procs
                    .iter()
                    .filter_map(|e| {
                        let p = e.value().get()?;
                        let quiet = p
                            .last_used
                            .lock()
                            .map(|t| t.elapsed() > pool.idle_timeout)
                            .unwrap_or(false);
                        (p.channel.is_closed() || (quiet && p.channel.in_flight() == 0))
                            .then(|| e.key().clone())
                    })
                    .collect();
                for sid in idle {
                    tracing::debug!(backend = %pool.backend, session = %sid, "stopping idle per-session process");
                    pool.stop(&sid);
                }
            }
        });
    }
}
