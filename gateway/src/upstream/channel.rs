//! One JSON-RPC connection (a STDIO child, or a legacy HTTP+SSE connection) shared by
//! many downstream sessions.
//!
//! Requests get a gateway id on the way in and their own id back on the way out;
//! progress tokens likewise. Replies, progress and request-scoped messages reach the
//! request that caused them; everything else the server says on its own (list
//! changes, resource updates) is broadcast to every session's server stream. A modern
//! server says those only on a `subscriptions/listen` request's stream: [`listen`] keeps
//! one open while anybody reads them. When the connection ends, every request in flight
//! fails at once.

mod listen;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::BackendProtocol;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::http::MessageStream;

/// How long a STDIO server may take to answer the `server/discover` probe before it is
/// taken for a legacy server that ignores unknown methods.
const DISCOVER_PROBE: Duration = Duration::from_secs(3);
use super::{to_bytes, UpstreamError};
use crate::wire::version;
use crate::wire::{caps, UpstreamSession};

/// A live connection as the transports hand it over.
pub struct LinkHandle {
    /// Serialized messages to send (one per item).
    pub out: mpsc::Sender<Bytes>,
    /// Messages received.
    pub incoming: mpsc::Receiver<Value>,
    /// Fires once with a description when the connection has ended.
    pub done: oneshot::Receiver<String>,
    /// Ask the transport to end the connection.
    pub stop: Option<oneshot::Sender<()>>,
}

struct Pending {
    tx: mpsc::Sender<Result<Value, UpstreamError>>,
    original_id: Value,
    original_token: Option<Value>,
}

/// Capacity of one request's message queue; beyond it notifications are dropped.
const PER_REQUEST_QUEUE: usize = 256;

pub struct Channel {
    backend: String,
    out: mpsc::Sender<Bytes>,
    pending: Mutex<BTreeMap<u64, Pending>>,
    next: AtomicU64,
    events: broadcast::Sender<Value>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    session: Mutex<Option<UpstreamSession>>,
    closed: Mutex<Option<String>>,
    listen: Mutex<listen::ListenState>,
}

impl Channel {
    /// Takes over a link; returns the channel and a receiver that fires when it ends.
    pub fn new(backend: &str, link: LinkHandle) -> (Arc<Channel>, oneshot::Receiver<String>) {
        let (events, _) = broadcast::channel(256);
        let ch = Arc::new(Channel {
            backend: backend.to_string(),
            out: link.out,
            pending: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            events,
            stop: Mutex::new(link.stop),
            session: Mutex::new(None),
            closed: Mutex::new(None),
            listen: Mutex::new(listen::ListenState::default()),
        });
        let (ended_tx, ended_rx) = oneshot::channel();
        let reader = ch.clone();
        let mut incoming = link.incoming;
        let done = link.done;
        tokio::spawn(async move {
            while let Some(msg) = incoming.recv().await {
                reader.dispatch(msg);
            }
            let how = done.await.unwrap_or_else(|_| "connection ended".into());
            reader.fail_all(&how);
            let _ = ended_tx.send(how);
        });
        (ch, ended_rx)
    }

    pub fn session(&self) -> Option<UpstreamSession> {
        self.session.lock().ok().and_then(|s| s.clone())
    }

    /// Requests waiting for their reply.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.lock().map(|c| c.is_some()).unwrap_or(true)
    }

    /// Asks the transport to end the connection (the child is stopped).
    pub fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }

    fn fail_all(&self, how: &str) {
        if let Ok(mut c) = self.closed.lock() {
            *c = Some(how.to_string());
        }
        let drained: Vec<Pending> = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p).into_values().collect(),
            Err(_) => Vec::new(),
        };
        for p in drained {
            let _ = p.tx.try_send(Err(UpstreamError::Connect(format!(
                "its process {how} during the request"
            ))));
        }
    }

    fn closed_error(&self) -> UpstreamError {
        let how = self
            .closed
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| "connection ended".into());
        UpstreamError::Connect(format!("not running ({how})"))
    }

    /// Routes one message from the server.
    fn dispatch(&self, mut msg: Value) {
        if self.take_listen_message(&mut msg) {
            return;
        }
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = msg.get("id").cloned().filter(|i| !i.is_null());
        match (method, id) {
            // A reply to one of our requests.
            (None, Some(id)) => {
                let Some(gid) = id.as_u64() else { return };
                let entry = self.pending.lock().ok().and_then(|mut p| p.remove(&gid));
                if let Some(p) = entry {
                    msg["id"] = p.original_id;
                    if let Err(mpsc::error::TrySendError::Full(m)) = p.tx.try_send(Ok(msg)) {
                        let tx = p.tx.clone();
                        tokio::spawn(async move {
                            let _ = tx.send(m).await;
                        });
                    }
                }
            }
            // Progress: by token.
            (Some(m), None) if m == "notifications/progress" => {
                let token = msg
                    .get("params")
                    .and_then(|p| p.get("progressToken"))
                    .and_then(Value::as_str)
                    .and_then(|t| t.strip_prefix("gw-"))
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(gid) = token {
                    if let Ok(p) = self.pending.lock() {
                        if let Some(entry) = p.get(&gid) {
                            if let Some(orig) = &entry.original_token {
                                msg["params"]["progressToken"] = orig.clone();
                            }
                            let _ = entry.tx.try_send(Ok(msg));
                        }
                    }
                    return;
                }
                let _ = self.events.send(msg);
            }
            // Requests from the server and log messages belong to a request in flight
            // when there is one (the oldest); otherwise to the sessions' streams.
            (Some(m), id) if id.is_some() || m == "notifications/message" => {
                let delivered = self
                    .pending
                    .lock()
                    .ok()
                    .and_then(|p| p.values().next().map(|e| e.tx.clone()))
                    .map(|tx| tx.try_send(Ok(msg.clone())).is_ok())
                    .unwrap_or(false);
                if !delivered {
                    if let Some(id) = id {
                        // Nobody can answer: refuse it so the server does not wait.
                        let err = json!({"jsonrpc": "2.0", "id": id, "error": {
                            "code": -32603,
                            "message": "mcp-gateway: no client request in flight to ask"}});
                        let _ = self.out.try_send(to_bytes(&err));
                    } else {
                        let _ = self.events.send(msg);
                    }
                }
            }
            // Everything else the server says on its own goes to every session.
            (Some(_), _) => {
                let _ = self.events.send(msg);
            }
            (None, None) => {}
        }
    }

    /// Writes a message to the server.
    pub async fn send_raw(&self, bytes: Bytes) -> Result<(), UpstreamError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        self.out.send(bytes).await.map_err(|_| self.closed_error())
    }

    /// Sends a request; the stream yields everything that belongs to it and ends with
    /// its reply (with the caller's id restored).
    pub async fn request(&self, mut msg: Value) -> Result<(u64, MessageStream), UpstreamError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let gid = self.next_id();
        let original_id = msg.get("id").cloned().unwrap_or(Value::Null);
        msg["id"] = json!(gid);
        let original_token = msg
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"))
            .map(|t| std::mem::replace(t, json!(format!("gw-{gid}"))));
        let (tx, rx) = mpsc::channel(PER_REQUEST_QUEUE);
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                gid,
                Pending {
                    tx,
                    original_id,
                    original_token,
                },
            );
        }
        if let Err(e) = self.send_raw(to_bytes(&msg)).await {
            self.forget(gid);
            return Err(e);
        }
        Ok((
            gid,
            Box::pin(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            })),
        ))
    }

    /// A fresh gateway id for a request to the server.
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Drops a request that will not be waited for any more, telling the server.
    pub fn forget(&self, gid: u64) {
        let removed = self.pending.lock().ok().and_then(|mut p| p.remove(&gid));
        if removed.is_some() {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": gid, "reason": "timed out at the gateway"}});
            let _ = self.out.try_send(to_bytes(&note));
        }
    }

    /// The gateway id of the in-flight request whose caller id is `id`, if unique.
    pub fn gateway_id_of(&self, id: &Value) -> Option<u64> {
        let p = self.pending.lock().ok()?;
        let mut found = p
            .iter()
            .filter(|(_, e)| &e.original_id == id)
            .map(|(g, _)| *g);
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// A stream of the server's own unsolicited messages (see [`Channel::changes`]).
    pub fn subscribe(&self) -> MessageStream {
        let rx = self.events.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(v) => return Some((Ok(v), rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }

    /// Runs the MCP handshake on a fresh connection: `server/discover` first when the
    /// backend may be modern (a 2026-07-28 server then needs nothing more), else, or
    /// when it answers anything but a `DiscoverResult`, `initialize`.
    pub async fn handshake(
        &self,
        protocol: BackendProtocol,
        client_caps: &Value,
        client_info: &Value,
        timeout: Duration,
    ) -> Result<UpstreamSession, UpstreamError> {
        if protocol != BackendProtocol::Legacy {
            match self.discover(timeout.min(DISCOVER_PROBE)).await {
                Ok(Some(session)) => {
                    if let Ok(mut s) = self.session.lock() {
                        *s = Some(session.clone());
                    }
                    tracing::info!(backend = %self.backend, "upstream connection speaks protocol 2026-07-28");
                    return Ok(session);
                }
                Ok(None) | Err(UpstreamError::Timeout(_)) if protocol == BackendProtocol::Auto => {}
                Ok(None) => {
                    return Err(UpstreamError::Protocol(
                        "it is configured with protocol = \"2026-07-28\" but does not answer server/discover".into(),
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        self.initialize(client_caps, client_info, timeout).await
    }

    /// The `server/discover` probe: `Ok(Some)` for a modern server, `Ok(None)` for any
    /// other answer.
    async fn discover(&self, timeout: Duration) -> Result<Option<UpstreamSession>, UpstreamError> {
        let mut params = json!({});
        super::modern::stamp_own(&mut params);
        let req = json!({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": params});
        let work = async {
            let (_, mut stream) = self.request(req).await?;
            while let Some(item) = stream.next().await {
                let v = item?;
                if v.get("method").is_some() {
                    continue;
                }
                let Some(result) = v.get("result") else {
                    return Ok(None);
                };
                let speaks = result
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(version::MODERN_LATEST)));
                return Ok(speaks.then(|| UpstreamSession {
                    id: None,
                    version: version::MODERN_LATEST.to_string(),
                    caps: caps::from_json(result.get("capabilities").unwrap_or(&Value::Null)),
                }));
            }
            Err(UpstreamError::Closed)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    /// The legacy handshake: `initialize`, then `notifications/initialized`.
    async fn initialize(
        &self,
        client_caps: &Value,
        client_info: &Value,
        timeout: Duration,
    ) -> Result<UpstreamSession, UpstreamError> {
        let info = if client_info.is_object() {
            client_info.clone()
        } else {
            crate::wire::meta::gateway_info()
        };
        let req = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version::LATEST, "capabilities": client_caps, "clientInfo": info}});
        let work = async {
            let (_, mut stream) = self.request(req).await?;
            while let Some(item) = stream.next().await {
                let v = item?;
                if v.get("method").is_some() {
                    continue;
                }
                let Some(result) = v.get("result") else {
                    let msg = v
                        .get("error")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("no result")
                        .to_string();
                    return Err(UpstreamError::Protocol(format!("initialize failed: {msg}")));
                };
                let negotiated = result
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or(version::LATEST)
                    .to_string();
                if !version::is_supported(&negotiated) {
                    return Err(UpstreamError::Protocol(format!(
                        "it speaks protocol version {negotiated:?}, which the gateway does not"
                    )));
                }
                return Ok(UpstreamSession {
                    id: None,
                    version: negotiated,
                    caps: caps::from_json(result.get("capabilities").unwrap_or(&Value::Null)),
                });
            }
            Err(UpstreamError::Closed)
        };
        let session = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))??;
        self.send_raw(to_bytes(
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        ))
        .await?;
        if let Ok(mut s) = self.session.lock() {
            *s = Some(session.clone());
        }
        tracing::info!(backend = %self.backend, version = %session.version, "upstream connection initialized");
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn link() -> (
        LinkHandle,
        mpsc::Receiver<Bytes>,
        mpsc::Sender<Value>,
        oneshot::Sender<String>,
    ) {
        let (out_tx, out_rx) = mpsc::channel(16);
        let (in_tx, in_rx) = mpsc::channel(16);
        let (done_tx, done_rx) = oneshot::channel();
        (
            LinkHandle {
                out: out_tx,
                incoming: in_rx,
                done: done_rx,
                stop: None,
            },
            out_rx,
            in_tx,
            done_tx,
        )
    }

    #[tokio::test]
    async fn ids_and_tokens_are_rewritten_and_restored() {
        let (l, mut out, server, _done) = link();
        let (ch, _) = Channel::new("b", l);
        let (_, mut s1) = ch
            .request(json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"_meta":{"progressToken":"t"}}}))
            .await
            .unwrap();
        let (_, mut s2) = ch
            .request(json!({"jsonrpc":"2.0","id":7,"method":"tools/call"}))
            .await
            .unwrap();
        let sent1: Value = serde_json::from_slice(&out.recv().await.unwrap()).unwrap();
        let sent2: Value = serde_json::from_slice(&out.recv().await.unwrap()).unwrap();
        assert_ne!(sent1["id"], sent2["id"]);
        let token = sent1["params"]["_meta"]["progressToken"].clone();
        assert_ne!(token, json!("t"));
        server
            .send(json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":1}}))
            .await
            .unwrap();
        server
            .send(json!({"jsonrpc":"2.0","id":sent2["id"],"result":{"n":2}}))
            .await
            .unwrap();
        server
            .send(json!({"jsonrpc":"2.0","id":sent1["id"],"result":{"n":1}}))
            .await
            .unwrap();
        let p = s1.next().await.unwrap().unwrap();
        assert_eq!(p["params"]["progressToken"], "t");
        let r1 = s1.next().await.unwrap().unwrap();
        assert_eq!(r1, json!({"jsonrpc":"2.0","id":7,"result":{"n":1}}));
        assert!(s1.next().await.is_none());
        let r2 = s2.next().await.unwrap().unwrap();
        assert_eq!(r2["result"]["n"], 2);
    }

    #[tokio::test]
    async fn requests_in_flight_fail_when_the_link_ends() {
        let (l, _out, server, done) = link();
        let (ch, ended) = Channel::new("b", l);
        let (_, mut s) = ch
            .request(json!({"jsonrpc":"2.0","id":1,"method":"x"}))
            .await
            .unwrap();
        drop(server);
        let _ = done.send("killed by signal 9".into());
        let err = s.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("killed by signal 9"), "{err}");
        assert_eq!(ended.await.unwrap(), "killed by signal 9");
        assert!(ch
            .request(json!({"jsonrpc":"2.0","id":2,"method":"x"}))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn unsolicited_messages_are_broadcast() {
        let (l, _out, server, _done) = link();
        let (ch, _) = Channel::new("b", l);
        let mut events = ch.subscribe();
        server
            .send(json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"}))
            .await
            .unwrap();
        let e = events.next().await.unwrap().unwrap();
        assert_eq!(e["method"], "notifications/tools/list_changed");
    }
}
