//! Server-Sent Event streams of one session: event ids, replay on `Last-Event-ID`,
//! standalone (GET) streams with round-robin delivery, and the HTTP body that
//! carries a stream to the client.
//!
//! Every stream has a number unique within its session; its events are numbered
//! from 0, and the SSE `id` is `"{stream}-{seq}"`, so a `Last-Event-ID` names both the
//! stream and the position in it. A stream outlives its HTTP connection: events sent
//! while no connection is attached are kept (bounded) and replayed when the client
//! resumes with `GET` + `Last-Event-ID`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

pub type HttpBody = UnsyncBoxBody<Bytes, Infallible>;

/// Events kept per stream for replay.
const HISTORY_LIMIT: usize = 512;
/// Streams kept per session; the oldest ones without a live connection go first.
const STREAM_LIMIT: usize = 64;
/// Messages kept for a session that has no GET stream open yet.
const BACKLOG_LIMIT: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The reply to one POST.
    Post,
    /// A standalone stream opened with GET.
    Get,
}

struct StreamState {
    kind: StreamKind,
    next_seq: u64,
    history: VecDeque<(u64, Bytes)>,
    conn: Option<mpsc::UnboundedSender<Bytes>>,
    finished: bool,
}

impl StreamState {
    fn live(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Numbers, records and (when connected) sends one message.
    fn push(&mut self, stream: u64, message: &Value) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bytes = encode_event(&format!("{stream}-{seq}"), &message.to_string());
        self.history.push_back((seq, bytes.clone()));
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.send_bytes(bytes);
    }

    fn send_bytes(&mut self, bytes: Bytes) {
        if let Some(conn) = &self.conn {
            if conn.send(bytes).is_err() {
                self.conn = None;
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, StreamState>,
    order: VecDeque<u64>,
    next_stream: u64,
    get_streams: Vec<u64>,
    round_robin: usize,
    backlog: VecDeque<Value>,
    closed: bool,
}

impl Inner {
    fn prune(&mut self) {
        if self.streams.len() <= STREAM_LIMIT {
            return;
        }
        let mut excess = self.streams.len() - STREAM_LIMIT;
        let mut keep = VecDeque::with_capacity(self.order.len());
        while let Some(id) = self.order.pop_front() {
            let removable = excess > 0 && self.streams.get(&id).is_none_or(|s| !s.live());
            if removable {
                self.streams.remove(&id);
                self.get_streams.retain(|g| *g != id);
                excess -= 1;
            } else {
                keep.push_back(id);
            }
        }
        self.order = keep;
    }
}

/// The SSE streams of one session.
#[derive(Default)]
pub struct StreamRegistry {
    inner: Mutex<Inner>,
}

fn encode_event(id: &str, data: &str) -> Bytes {
    Bytes::from(format!("id: {id}\nevent: message\ndata: {data}\n\n"))
}

fn priming_event(id: &str) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: \n\n"))
}

fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (stream, seq) = id.trim().split_once('-')?;
    Some((stream.parse().ok()?, seq.parse().ok()?))
}

impl StreamRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another task panicked mid-update; the data is
        // still usable for a test server.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a stream with a live connection. With `priming`, the first event is an
    /// id with empty data (2025-11-25 transports, so the client can resume from it).
    /// A GET stream receives the backlog of undelivered standalone messages.
    pub fn open(&self, kind: StreamKind, priming: bool) -> (u64, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        let mut state = StreamState {
            kind,
            next_seq: 0,
            history: VecDeque::new(),
            conn: if inner.closed { None } else { Some(tx) },
            finished: inner.closed,
        };
        if priming {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.send_bytes(priming_event(&format!("{id}-{seq}")));
        }
        if kind == StreamKind::Get && !inner.closed {
            while let Some(message) = inner.backlog.pop_front() {
                state.push(id, &message);
            }
            inner.get_streams.push(id);
        }
        inner.streams.insert(id, state);
        inner.order.push_back(id);
        inner.prune();
        (id, rx)
    }

    /// Sends one JSON-RPC message on a stream (kept for replay even if no client is
    /// connected right now).
    pub fn send(&self, stream: u64, message: &Value) {
        let mut inner = self.lock();
        if let Some(state) = inner.streams.get_mut(&stream) {
            if !state.finished {
                state.push(stream, message);
            }
        }
    }

    /// Closes the connection of a stream without ending the stream: sends a `retry`
    /// field first so that the client knows when to resume (SSE polling, SEP-1699).
    pub fn disconnect(&self, stream: u64, retry_ms: u64) {
        let mut inner = self.lock();
        if let Some(state) = inner.streams.get_mut(&stream) {
            state.send_bytes(Bytes::from(format!("retry: {retry_ms}\n\n")));
            state.conn = None;
        }
    }

    /// Ends a stream: the connection closes once it has written what is queued.
    /// A stream whose connection is still live has delivered everything and is
    /// forgotten; one without (the client went away, or `test_reconnection`) keeps
    /// its events so that a resumption can replay them.
    pub fn finish(&self, stream: u64) {
        let mut inner = self.lock();
        let delivered = match inner.streams.get_mut(&stream) {
            Some(state) => {
                let live = state.live();
                state.finished = true;
                state.conn = None;
                live
            }
            None => false,
        };
        if delivered {
            inner.streams.remove(&stream);
            inner.order.retain(|id| *id != stream);
            inner.get_streams.retain(|id| *id != stream);
        }
    }

    /// Resumes the stream named by a `Last-Event-ID`: replays what followed that event
    /// and, unless the stream has ended, attaches the new connection to it.
    /// `None` when the id names no stream this session still knows.
    pub fn resume(&self, last_event_id: &str) -> Option<mpsc::UnboundedReceiver<Bytes>> {
        let (stream, after) = parse_event_id(last_event_id)?;
        let mut inner = self.lock();
        let closed = inner.closed;
        let state = inner.streams.get_mut(&stream)?;
        let (tx, rx) = mpsc::unbounded_channel();
        for (seq, bytes) in &state.history {
            if *seq > after && tx.send(bytes.clone()).is_err() {
                break;
            }
        }
        state.conn = if state.finished || closed {
            None
        } else {
            Some(tx)
        };
        Some(rx)
    }

    /// Sends a message not tied to any request on one live GET stream (never on
    /// several). When none is connected, `keep` puts it in a bounded backlog that the
    /// next GET stream receives first; otherwise it is dropped. Returns whether it
    /// went out on a stream.
    pub fn send_standalone(&self, message: Value, keep: bool) -> bool {
        let mut inner = self.lock();
        if inner.closed {
            return false;
        }
        let live: Vec<u64> = inner
            .get_streams
            .iter()
            .copied()
            .filter(|id| {
                inner
                    .streams
                    .get(id)
                    .is_some_and(|s| s.kind == StreamKind::Get && s.live() && !s.finished)
            })
            .collect();
        if live.is_empty() {
            if keep {
                inner.backlog.push_back(message);
                while inner.backlog.len() > BACKLOG_LIMIT {
                    inner.backlog.pop_front();
                }
            }
            return false;
        }
        let pick = live[inner.round_robin % live.len()];
        inner.round_robin = inner.round_robin.wrapping_add(1);
        if let Some(state) = inner.streams.get_mut(&pick) {
            state.push(pick, &message);
        }
        true
    }

    /// Number of GET streams with a live connection.
    pub fn live_get_streams(&self) -> usize {
        let inner = self.lock();
        inner
            .get_streams
            .iter()
            .filter(|id| inner.streams.get(id).is_some_and(|s| s.live()))
            .count()
    }

    /// Ends every stream (session terminated).
    pub fn close_all(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.backlog.clear();
        for state in inner.streams.values_mut() {
            state.finished = true;
            state.conn = None;
        }
    }
}

/// The HTTP body of an SSE connection. With `keepalive`, a comment line is sent at
/// that interval so that dead connections are noticed and proxies keep them open.
pub fn sse_body(rx: mpsc::UnboundedReceiver<Bytes>, keepalive: Option<Duration>) -> HttpBody {
    let ticker = keepalive.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let stream = futures::stream::unfold((rx, ticker), |(mut rx, mut ticker)| async move {
        let next = match ticker.as_mut() {
            Some(interval) => tokio::select! {
                message = rx.recv() => message,
                _ = interval.tick() => Some(Bytes::from_static(b": keepalive\n\n")),
            },
            None => rx.recv().await,
        };
        next.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), (rx, ticker)))
    });
    StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(rx: &mut mpsc::UnboundedReceiver<Bytes>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(b) = rx.try_recv() {
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
        out
    }

    #[test]
    fn ids_priming_and_replay() {
        let reg = StreamRegistry::default();
        let (sid, mut rx) = reg.open(StreamKind::Post, true);
        reg.send(sid, &json!({"a": 1}));
        let first = drain(&mut rx);
        assert_eq!(first[0], format!("id: {sid}-0\ndata: \n\n"));
        assert!(first[1].starts_with(&format!("id: {sid}-1\nevent: message\ndata: ")));
        reg.disconnect(sid, 10);
        reg.send(sid, &json!({"b": 2}));
        let mut resumed = reg.resume(&format!("{sid}-1")).expect("known stream");
        let replay = drain(&mut resumed);
        assert_eq!(replay.len(), 1);
        assert!(replay[0].contains("\"b\":2"));
        reg.finish(sid);
        assert!(resumed.try_recv().is_err());
        assert!(
            reg.resume(&format!("{sid}-1")).is_none(),
            "delivered streams are forgotten"
        );
    }

    #[test]
    fn undelivered_streams_stay_resumable() {
        let reg = StreamRegistry::default();
        let (sid, rx) = reg.open(StreamKind::Post, true);
        drop(rx);
        reg.send(sid, &json!({"late": true}));
        reg.finish(sid);
        let mut resumed = reg.resume(&format!("{sid}-0")).expect("kept");
        assert!(drain(&mut resumed)[0].contains("late"));
    }

    #[test]
    fn standalone_round_robin_and_backlog() {
        let reg = StreamRegistry::default();
        assert!(!reg.send_standalone(json!({"n": 0}), true));
        assert!(!reg.send_standalone(json!({"n": -1}), false));
        let (_a, mut ra) = reg.open(StreamKind::Get, false);
        assert_eq!(
            drain(&mut ra).len(),
            1,
            "backlog flushed to the first GET stream"
        );
        let (_b, mut rb) = reg.open(StreamKind::Get, false);
        assert!(reg.send_standalone(json!({"n": 1}), true));
        assert!(reg.send_standalone(json!({"n": 2}), true));
        assert_eq!(drain(&mut ra).len(), 1);
        assert_eq!(drain(&mut rb).len(), 1);
        drop(ra);
        assert!(reg.send_standalone(json!({"n": 3}), true));
        assert_eq!(drain(&mut rb).len(), 1);
        assert_eq!(reg.live_get_streams(), 1);
    }
}
