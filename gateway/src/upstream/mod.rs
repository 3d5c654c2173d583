//! Upstream MCP servers: one [`Backend`] per configured server, with its transport,
//! its health state and its counters.

pub mod channel;
mod error;
pub mod http;
pub mod legacy_sse;
pub mod modern;
pub mod pool;
pub mod sse;
pub mod stdio;
mod trace;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::config::{BackendConfig, Sharing, Transport};
use crate::wire::jsonrpc;
use crate::wire::version;
use crate::wire::{caps, UpstreamSession};

pub use self::error::{is_link_code, UpstreamError};
pub use self::http::{MessageStream, Opened, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

enum Link {
    Http(Box<http::HttpUpstream>),
    Shared(Arc<pool::SharedPool>),
    PerSession(Arc<pool::SessionPool>),
}

/// One upstream MCP server.
pub struct Backend {
    pub index: usize,
    pub config: BackendConfig,
    link: Link,
    health: AtomicU8,
    last_error: Mutex<Option<String>>,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Times the backend was left out of a merged list.
    pub omitted: AtomicU64,
    since: Mutex<Instant>,
    /// The gateway's own session used by health probes.
    probe: tokio::sync::Mutex<Option<UpstreamSession>>,
    stream_idle: Duration,
    /// The era it is spoken to in ([`modern`]): unknown, legacy or modern.
    era: AtomicU8,
    /// Capability bits a modern backend reported in `server/discover`.
    modern_caps: AtomicU32,
}

impl Backend {
    pub fn new(
        index: usize,
        config: BackendConfig,
        client: reqwest::Client,
        connector: Arc<http::Connector>,
        stream_idle: Duration,
    ) -> Backend {
        let link =
            match &config.transport {
                Transport::Http { url } => Link::Http(Box::new(http::HttpUpstream::new(
                    connector,
                    url.clone(),
                    &config.headers,
                    config.timeout,
                    stream_idle,
                ))),
                Transport::Sse { url } => Link::Shared(Arc::new(pool::SharedPool::new(
                    &config.name,
                    pool::LinkSpec::Sse {
                        client,
                        url: url.clone(),
                        headers: config.headers.clone(),
                    },
                    1,
                    config.timeout,
                ))),
                Transport::Stdio(s) => {
                    let spec = pool::LinkSpec::Stdio(s.clone());
                    match s.sharing {
                        Sharing::Shared { processes } => Link::Shared(Arc::new(
                            pool::SharedPool::new(&config.name, spec, processes, config.timeout),
                        )),
                        Sharing::PerSession {
                            idle_timeout,
                            max_processes,
                        } => Link::PerSession(Arc::new(pool::SessionPool::new(
                            &config.name,
                            spec,
                            config.timeout,
                            idle_timeout,
                            max_processes,
                        ))),
                    }
                }
            };
        let era = AtomicU8::new(modern::initial_era(config.protocol));
        Backend {
            index,
            config,
            link,
            health: AtomicU8::new(Health::Unknown as u8),
            last_error: Mutex::new(None),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            omitted: AtomicU64::new(0),
            since: Mutex::new(Instant::now()),
            probe: tokio::sync::Mutex::new(None),
            stream_idle,
            era,
            modern_caps: AtomicU32::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }

    pub fn state_age(&self) -> Duration {
        self.since.lock().map(|s| s.elapsed()).unwrap_or_default()
    }

    fn set_health(&self, h: Health) {
        let old = self.health.swap(h as u8, Ordering::Relaxed);
        if old != h as u8 {
            if let Ok(mut s) = self.since.lock() {
                *s = Instant::now();
            }
            match h {
                Health::Up => tracing::info!(backend = self.name(), "backend is up"),
                Health::Down => tracing::warn!(
                    backend = self.name(),
                    error = self.last_error().unwrap_or_default(),
                    "backend is down"
                ),
                Health::Unknown => {}
            }
        }
    }

    /// Records the outcome of an exchange in the health state and counters.
    pub fn record<T>(&self, r: &Result<T, UpstreamError>) {
        match r {
            Ok(_) => self.set_health(Health::Up),
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if e.is_outage() {
                    if let Ok(mut l) = self.last_error.lock() {
                        *l = Some(e.to_string());
                    }
                    self.set_health(Health::Down);
                }
            }
        }
    }

    /// Sends one serialized JSON-RPC message in the given upstream session of the
    /// downstream session `sid`.
    pub async fn send(
        &self,
        sid: &str,
        session: &UpstreamSession,
        body: Bytes,
        extra: &[(::http::HeaderName, String)],
    ) -> Result<Reply, UpstreamError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let span = self.span(|| trace::method_of(&body));
        let (body, extra) = trace::propagate(&span, body, extra);
        let started = Instant::now();
        let r = mcp_telemetry::in_span!(span, async {
            match &self.link {
                Link::Http(h) => h
                    .post(session.id.as_deref(), &session.version, body, &extra)
                    .await
                    .map(|o| o.reply)
                    .map_err(|e| self.era_failure(session, e)),
                Link::Shared(_) | Link::PerSession(_) => match self.channel_for(sid) {
                    Ok(ch) => self.send_on_channel(&ch, body).await,
                    Err(e) => Err(e),
                },
            }
        });
        trace::finish(&span, self.name(), started, &r);
        self.record(&r);
        r
    }

    /// The span of one exchange with this backend (`method` asked only when it exports).
    fn span(&self, method: impl FnOnce() -> Option<String>) -> tracing::Span {
        trace::exchange_span(
            self.name(),
            trace::transport(&self.config.transport),
            method,
        )
    }

    /// The connection serving `sid` on a STDIO/SSE backend.
    fn channel_for(&self, sid: &str) -> Result<Arc<channel::Channel>, UpstreamError> {
        match &self.link {
            Link::Shared(p) => p.pick(),
            Link::PerSession(p) => p.get(sid).ok_or(UpstreamError::SessionExpired),
            Link::Http(_) => Err(UpstreamError::Protocol("not a connection backend".into())),
        }
    }

    async fn send_on_channel(
        &self,
        ch: &channel::Channel,
        body: Bytes,
    ) -> Result<Reply, UpstreamError> {
        let mut msg: Value = serde_json::from_slice(&body)
            .map_err(|e| UpstreamError::Protocol(format!("not JSON: {e}")))?;
        let is_request = msg.get("method").is_some() && msg.get("id").is_some_and(|i| !i.is_null());
        if !is_request {
            // Notifications and the client's answers go straight through; a
            // cancellation names the request by the id the server knows.
            if msg.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
                let rid = msg.get("params").and_then(|p| p.get("requestId")).cloned();
                match rid.and_then(|r| ch.gateway_id_of(&r)) {
                    Some(gid) => msg["params"]["requestId"] = json!(gid),
                    None => return Ok(Reply::Accepted),
                }
            }
            ch.send_raw(to_bytes(&msg)).await?;
            return Ok(Reply::Accepted);
        }
        let (gid, mut stream) = ch.request(msg).await?;
        let first = match tokio::time::timeout(self.config.timeout, stream.next()).await {
            Err(_) => {
                ch.forget(gid);
                return Err(UpstreamError::Timeout(self.config.timeout));
            }
            Ok(None) => return Err(UpstreamError::Closed),
            Ok(Some(first)) => first?,
        };
        if first.get("method").is_none() {
            // The reply came first: a plain JSON answer.
            return Ok(Reply::Json(to_bytes(&first)));
        }
        let idle = self.stream_idle;
        let rest = futures::stream::unfold(stream, move |mut s| async move {
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(item)) => Some((item, s)),
                Ok(None) => None,
                Err(_) => Some((Err(UpstreamError::Timeout(idle)), s)),
            }
        });
        Ok(Reply::Stream(Box::pin(
            futures::stream::once(async move { Ok(first) }).chain(rest),
        )))
    }

    /// A failure of a request in `session`: for a modern backend, one that says it is
    /// not modern any more becomes `SessionExpired` (asked again, then retried).
    fn era_failure(&self, session: &UpstreamSession, e: UpstreamError) -> UpstreamError {
        if version::is_modern(&session.version) {
            self.modern_failed(e)
        } else {
            e
        }
    }

    /// Opens an upstream session. A modern backend has none: its capabilities (from
    /// `server/discover`) in a session without id. A legacy one: `initialize`, then
    /// `notifications/initialized`, in `version` (a legacy revision; a modern client's
    /// calls use the latest legacy one).
    pub async fn initialize(
        &self,
        sid: &str,
        version: &str,
        client_caps: &Value,
        client_info: &Value,
    ) -> Result<UpstreamSession, UpstreamError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let span = self.span(|| Some("initialize".into()));
        let started = Instant::now();
        let r = match self.modern_session().await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => {
                let version = version::upstream_legacy(version);
                self.initialize_legacy(sid, version, client_caps, client_info)
                    .await
            }
            Err(e) => Err(e),
        };
        trace::finish(&span, self.name(), started, &r);
        self.record(&r);
        r
    }

    async fn initialize_legacy(
        &self,
        sid: &str,
        version: &str,
        client_caps: &Value,
        client_info: &Value,
    ) -> Result<UpstreamSession, UpstreamError> {
        match &self.link {
            Link::Http(_) => {
                self.initialize_inner(version, client_caps, client_info)
                    .await
            }
            Link::Shared(p) => {
                p.start();
                match p.wait_live().await {
                    Ok(ch) => ch
                        .session()
                        .ok_or_else(|| UpstreamError::Protocol("not initialized".into())),
                    Err(e) => Err(e),
                }
            }
            Link::PerSession(p) => p.start(sid, client_caps, client_info).await,
        }
    }

    async fn initialize_inner(
        &self,
        version: &str,
        client_caps: &Value,
        client_info: &Value,
    ) -> Result<UpstreamSession, UpstreamError> {
        let Link::Http(h) = &self.link else {
            return Err(UpstreamError::Protocol("not an HTTP backend".into()));
        };
        let info = if client_info.is_object() {
            client_info.clone()
        } else {
            crate::wire::meta::gateway_info()
        };
        let req = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version,
            "capabilities": client_caps,
            "clientInfo": info,
        }});
        let opened = h.post(None, version, to_bytes(&req), &[]).await?;
        let reply = final_response(opened.reply, &json!(0)).await?;
        let result = reply.get("result").ok_or_else(|| rpc_error(&reply))?;
        let negotiated = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(version)
            .to_string();
        if !version::is_supported(&negotiated) {
            return Err(UpstreamError::Protocol(format!(
                "it speaks protocol version {negotiated:?}, which the gateway does not"
            )));
        }
        let session = UpstreamSession {
            id: opened.session_id,
            version: negotiated,
            caps: caps::from_json(result.get("capabilities").unwrap_or(&Value::Null)),
        };
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        h.post(
            session.id.as_deref(),
            &session.version,
            to_bytes(&note),
            &[],
        )
        .await?;
        Ok(session)
    }

    /// Sends a request and waits for its response, ignoring anything else the backend
    /// streams meanwhile. Returns the `result`, or the backend's error as `Rpc`.
    pub async fn request(
        &self,
        sid: &str,
        session: &UpstreamSession,
        method: &str,
        params: Value,
    ) -> Result<Value, UpstreamError> {
        let id = json!("gw-1");
        let mut params = params;
        let mut mirrored = Vec::new();
        if version::is_modern(&session.version) {
            modern::stamp_own(&mut params);
            mirrored = crate::wire::meta::headers_for(&jsonrpc::Method::parse(method), &params);
        }
        let mut req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.requests.fetch_add(1, Ordering::Relaxed);
        let span = self.span(|| Some(method.to_string()));
        let mut extra = mirrored;
        if let Some(tp) = mcp_telemetry::propagate::traceparent(&span) {
            trace::set_meta_traceparent(&mut req, &tp);
            extra.push((::http::HeaderName::from_static("traceparent"), tp));
        }
        let started = Instant::now();
        let r = async {
            let reply = match &self.link {
                Link::Http(h) => {
                    h.post(
                        session.id.as_deref(),
                        &session.version,
                        to_bytes(&req),
                        &extra,
                    )
                    .await
                    .map_err(|e| self.era_failure(session, e))?
                    .reply
                }
                Link::Shared(_) | Link::PerSession(_) => {
                    let ch = self.channel_for(sid)?;
                    self.send_on_channel(&ch, to_bytes(&req)).await?
                }
            };
            let mut resp = final_response(reply, &id).await?;
            match resp.get_mut("result") {
                Some(r) => Ok(r.take()),
                None => Err(rpc_error(&resp)),
            }
        }
        .instrument(span.clone())
        .await;
        trace::finish(&span, self.name(), started, &r);
        // A JSON-RPC error is an answer: the backend is up.
        match &r {
            Err(UpstreamError::Rpc { .. } | UpstreamError::Refused { .. }) => {
                self.record::<()>(&Ok(()))
            }
            other => self.record(other),
        }
        r
    }

    /// The backend's stream of change notifications: a legacy backend's `GET` stream,
    /// a modern one's `subscriptions/listen` (HTTP: with `uris` as its
    /// `resourceSubscriptions`; STDIO: list changes only, on the pipe's one listen).
    pub async fn open_stream(
        &self,
        sid: &str,
        session: &UpstreamSession,
        uris: &[String],
    ) -> Result<Option<MessageStream>, UpstreamError> {
        match &self.link {
            Link::Http(_) if version::is_modern(&session.version) => {
                self.listen_upstream(session, uris).await
            }
            Link::Http(h) => h.open_stream(session.id.as_deref(), &session.version).await,
            Link::Shared(_) | Link::PerSession(_) => Ok(Some(
                self.channel_for(sid)?.changes(self.config.timeout).await?,
            )),
        }
    }

    pub async fn end_session(
        &self,
        sid: &str,
        session: &UpstreamSession,
    ) -> Result<(), UpstreamError> {
        match &self.link {
            Link::Http(h) => match &session.id {
                Some(id) => h.delete(id, &session.version).await,
                None => Ok(()),
            },
            Link::Shared(_) => Ok(()),
            Link::PerSession(p) => {
                p.stop(sid);
                Ok(())
            }
        }
    }

    /// Starts supervised connections (shared STDIO/SSE backends) at start-up.
    pub fn start(&self) {
        if let Link::Shared(p) = &self.link {
            p.start();
        }
    }

    /// Stops every child process (gateway shutdown).
    pub fn stop(&self) {
        match &self.link {
            Link::Shared(p) => p.stop(),
            Link::PerSession(p) => p.stop_all(),
            Link::Http(_) => {}
        }
    }

    /// Transport-specific facts for `/readyz`.
    pub fn transport_status(&self) -> Value {
        match &self.link {
            Link::Http(_) => json!({"transport": "http"}),
            Link::Shared(p) => json!({
                "transport": if matches!(self.config.transport, Transport::Sse { .. }) { "sse" } else { "stdio" },
                "sharing": "shared",
                "live_connections": p.live(),
                "restarts": p.restarts.load(Ordering::Relaxed),
                "last_exit": p.last_exit(),
            }),
            Link::PerSession(p) => json!({
                "transport": "stdio",
                "sharing": "per_session",
                "processes": p.running(),
                "started_total": p.started_total.load(Ordering::Relaxed),
            }),
        }
    }

    /// Health probe: ping in the probe session, (re)initializing it when needed.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        if let Link::PerSession(_) = &self.link {
            return Ok(());
        }
        let mut guard = self.probe.lock().await;
        let session = match guard.as_ref() {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .initialize(PROBE_SID, version::LATEST, &json!({}), &Value::Null)
                    .await?;
                *guard = Some(s.clone());
                s
            }
        };
        // A modern backend has no ping: its answer to it (method not found) shows it up.
        match self.request(PROBE_SID, &session, "ping", json!({})).await {
            Ok(_) => Ok(()),
            Err(UpstreamError::Rpc { .. } | UpstreamError::Refused { .. }) => Ok(()),
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    /// The configured request headers now (for HTTP backends; others: as configured).
    pub fn current_headers(&self) -> Vec<(::http::HeaderName, ::http::HeaderValue)> {
        match &self.link {
            Link::Http(h) => h
                .headers()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            _ => self.config.headers.clone(),
        }
    }

    /// Re-resolves the header templates after a secret rotation.
    pub fn refresh_headers(&self, resolve: &dyn Fn(&str) -> Result<String, String>) {
        let Link::Http(h) = &self.link else { return };
        let mut fresh = Vec::new();
        for (name, template) in &self.config.header_templates {
            match resolve(template).map(|v| ::http::HeaderValue::from_str(&v)) {
                Ok(Ok(v)) => fresh.push((name.clone(), v)),
                _ => {
                    tracing::warn!(backend = self.name(), header = %name, "cannot re-resolve header after a secret change; keeping the old value");
                    return;
                }
            }
        }
        h.set_headers(&fresh);
        tracing::info!(
            backend = self.name(),
            "backend credentials updated from rotated secrets"
        );
    }

    /// The pass-through route's target, for HTTP backends.
    pub fn http_url(&self) -> Option<&url::Url> {
        self.http().map(|h| h.url())
    }

    /// The Streamable HTTP client of an HTTP backend (the pass-through route relays
    /// through it, on its pooled connections and cached addresses).
    pub fn http(&self) -> Option<&http::HttpUpstream> {
        match &self.link {
            Link::Http(h) => Some(&**h),
            _ => None,
        }
    }
}

/// The downstream-session id used by health probes.
const PROBE_SID: &str = "health-probe";

pub fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A JSON-RPC request's bytes, its params serialized where they are (not copied into a
/// new `Value` first, as `json!` would).
pub fn request_bytes(id: &Value, method: &str, params: impl serde::Serialize) -> Bytes {
    #[derive(serde::Serialize)]
    struct Request<'a, P> {
        jsonrpc: &'static str,
        id: &'a Value,
        method: &'a str,
        params: P,
    }
    let r = Request {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    Bytes::from(serde_json::to_vec(&r).unwrap_or_default())
}

fn rpc_error(resp: &Value) -> UpstreamError {
    let err = resp.get("error");
    UpstreamError::Rpc {
        code: err
            .and_then(|e| e.get("code"))
            .and_then(Value::as_i64)
            .unwrap_or(jsonrpc::INTERNAL_ERROR),
        message: err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("no result and no error")
            .to_string(),
    }
}

/// Waits for the response with `id` in a reply, skipping notifications and requests.
pub async fn final_response(reply: Reply, id: &Value) -> Result<Value, UpstreamError> {
    match reply {
        Reply::Accepted => Err(UpstreamError::Protocol(
            "it answered a request with 202 and no body".into(),
        )),
        Reply::Json(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| UpstreamError::Protocol(format!("reply is not JSON: {e}"))),
        Reply::Stream(mut s) => {
            while let Some(item) = s.next().await {
                let v = item?;
                if v.get("id") == Some(id) && v.get("method").is_none() {
                    return Ok(v);
                }
            }
            Err(UpstreamError::Closed)
        }
    }
}
