//! `subscriptions/listen` on a modern (2026-07-28) STDIO connection.
//!
//! A modern server sends its change notifications (list changes, resource updates) only
//! on the stream of a `subscriptions/listen` request, each tagged with that request's id
//! as `_meta["io.modelcontextprotocol/subscriptionId"]`; on STDIO that stream is the one
//! pipe every message shares. So while at least one gateway stream wants the server's
//! own messages ([`Channel::changes`]), the connection keeps one listen request open
//! (opted in to every list change) and the notifications tagged with its id are fanned
//! out through the same broadcast as a legacy server's unsolicited messages, with the
//! tag taken off (it names the gateway's request, not the client's).
//!
//! The listen request is kept out of the table of requests in flight: its answer comes
//! only when the subscription ends, so it has no timeout, it does not keep an idle
//! per-session process alive, and the server's own requests and log messages (routed to
//! the oldest request in flight) never land on it.
//!
//! Lifetime: sent when the first subscriber arrives, cancelled with
//! `notifications/cancelled` (the STDIO way to end it) when the last one goes; a new
//! process (restart) gets a new one from the streams re-opened on it. The server ends it
//! by answering it or by sending `notifications/cancelled` for it; it is then not sent
//! again until the subscribers have all gone and one comes back (a server that refuses
//! or ends every listen at once is not asked in a loop).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::Channel;
use crate::upstream::http::MessageStream;
use crate::upstream::{modern, to_bytes, UpstreamError};
use crate::wire::meta::SUBSCRIPTION_ID;
use crate::wire::version;

/// The listen request of one connection.
#[derive(Default)]
pub(super) struct ListenState {
    /// Streams reading the connection's own messages through [`Channel::changes`].
    subscribers: usize,
    /// The gateway id of the open listen request.
    open: Option<u64>,
    /// The listen request the server has acknowledged.
    acked: Option<u64>,
    /// Woken when a listen request is acknowledged or ends.
    settled: Arc<Notify>,
}

impl ListenState {
    /// Whether listen request `gid` needs no more waiting for: acknowledged or ended.
    fn is_settled(&self, gid: u64) -> bool {
        self.open != Some(gid) || self.acked == Some(gid)
    }
}

/// Held by each stream [`Channel::changes`] hands out; the last one dropped cancels the
/// listen request. Weak: a stream must not keep an ended connection alive (its end is
/// what tells the reader to re-open on the new process).
struct Subscriber(Weak<Channel>);

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(ch) = self.0.upgrade() {
            ch.unsubscribe();
        }
    }
}

impl Channel {
    fn is_modern(&self) -> bool {
        self.session()
            .is_some_and(|s| version::is_modern(&s.version))
    }

    /// A stream of the server's own messages (for sessions' server streams and
    /// `subscriptions/listen`): on a legacy connection what it sends unsolicited; on a
    /// modern one also the notifications of the connection's listen request, sent now
    /// if none is open, and returned once the server has acknowledged it (or ended it,
    /// or `ack_wait` has passed): from then on no change the server makes is missed.
    pub async fn changes(
        self: &Arc<Self>,
        ack_wait: Duration,
    ) -> Result<MessageStream, UpstreamError> {
        if !self.is_modern() {
            return Ok(self.subscribe());
        }
        // Subscribed before the listen goes out: nothing it carries is missed.
        let events = self.subscribe();
        let (send, wait) = match self.listen.lock() {
            Ok(mut l) => {
                l.subscribers += 1;
                if l.subscribers == 1 && l.open.is_none() {
                    let gid = self.next_id();
                    l.open = Some(gid);
                    (Some(gid), Some((gid, l.settled.clone())))
                } else {
                    let unsettled = l.open.filter(|g| !l.is_settled(*g));
                    (None, unsettled.map(|g| (g, l.settled.clone())))
                }
            }
            Err(_) => (None, None),
        };
        let guard = Subscriber(Arc::downgrade(self));
        if let Some(gid) = send {
            let req = json!({"jsonrpc": "2.0", "id": gid, "method": "subscriptions/listen",
                             "params": modern::listen_params()});
            self.send_raw(to_bytes(&req)).await?;
            tracing::debug!(backend = %self.backend, id = gid, "listening for the backend's change notifications");
        }
        if let Some((gid, settled)) = wait {
            let acknowledged = async {
                loop {
                    let woken = settled.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    if self.listen.lock().map_or(true, |l| l.is_settled(gid)) {
                        return;
                    }
                    woken.await;
                }
            };
            if tokio::time::timeout(ack_wait, acknowledged).await.is_err() {
                tracing::debug!(backend = %self.backend, id = gid, "no acknowledgement of the listen request yet");
            }
        }
        Ok(Box::pin(events.map(move |m| {
            let _held = &guard;
            m
        })))
    }

    /// One stream fewer; the last one cancels the listen request.
    fn unsubscribe(&self) {
        let cancel = self.listen.lock().ok().and_then(|mut l| {
            l.subscribers = l.subscribers.saturating_sub(1);
            if l.subscribers == 0 {
                l.open.take()
            } else {
                None
            }
        });
        if let Some(gid) = cancel {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                              "params": {"requestId": gid, "reason": "no gateway stream listens any more"}});
            let _ = self.out.try_send(to_bytes(&note));
        }
    }

    /// Ends the open listen request if `id` names it; `true` when it did.
    fn listen_ended(&self, id: Option<&Value>) -> bool {
        let Some(gid) = id.and_then(Value::as_u64) else {
            return false;
        };
        let ended = self.listen.lock().ok().and_then(|mut l| {
            (l.open == Some(gid))
                .then(|| l.open.take())
                .map(|_| l.settled.clone())
        });
        if let Some(settled) = &ended {
            settled.notify_waiters();
        }
        ended.is_some()
    }

    /// Takes the messages that belong to the listen request: its answer or the server's
    /// `notifications/cancelled` for it (the subscription ended), and the notifications
    /// tagged with a subscription id (those of the open listen are broadcast untagged,
    /// the acknowledgement and those of an ended one dropped). `true`: taken.
    pub(super) fn take_listen_message(&self, msg: &mut Value) -> bool {
        let method = msg
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = msg.get("id").filter(|i| !i.is_null()).cloned();
        match (method.as_deref(), id) {
            (None, Some(id)) => {
                if !self.listen_ended(Some(&id)) {
                    return false;
                }
                let outcome = msg.get("error").map_or_else(
                    || "ended by the server".to_string(),
                    |e| format!("refused: {e}"),
                );
                tracing::warn!(backend = %self.backend, "the backend's subscriptions/listen {outcome}; its change notifications are not relayed until the gateway's streams re-open");
                true
            }
            (Some("notifications/cancelled"), None) => {
                let rid = msg.pointer("/params/requestId");
                if !self.listen_ended(rid) {
                    return false;
                }
                tracing::warn!(backend = %self.backend, "the backend cancelled its subscriptions/listen stream");
                true
            }
            (Some(m), None) => {
                let Some(meta) = msg
                    .pointer_mut("/params/_meta")
                    .and_then(Value::as_object_mut)
                else {
                    return false;
                };
                let Some(sub) = meta.remove(SUBSCRIPTION_ID) else {
                    return false;
                };
                let is_empty = meta.is_empty();
                let current = self.listen.lock().ok().and_then(|l| l.open);
                if sub.as_u64().is_none() || sub.as_u64() != current {
                    return true; // a subscription that has ended
                }
                if m == "notifications/subscriptions/acknowledged" {
                    tracing::debug!(backend = %self.backend, "backend acknowledged the listen request");
                    if let Ok(mut l) = self.listen.lock() {
                        l.acked = current;
                        l.settled.notify_waiters();
                    }
                    return true;
                }
                if is_empty {
                    if let Some(Value::Object(p)) = msg.get_mut("params") {
                        p.remove("_meta");
                    }
                }
                let _ = self.events.send(msg.take());
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::link;
    use super::*;
    use crate::wire::{caps, UpstreamSession};
    use bytes::Bytes;
    use tokio::sync::mpsc;

    fn modern(ch: &Channel) {
        if let Ok(mut s) = ch.session.lock() {
            *s = Some(UpstreamSession {
                id: None,
                version: version::MODERN_LATEST.to_string(),
                caps: caps::Caps(0),
            });
        }
    }

    async fn sent(out: &mut mpsc::Receiver<Bytes>) -> Value {
        let b = out.recv().await.expect("a message to the server");
        serde_json::from_slice(&b).expect("JSON")
    }

    #[tokio::test]
    async fn one_listen_is_shared_tagged_messages_are_fanned_out_and_the_last_cancels() {
        let (l, mut out, server, _done) = link();
        let (ch, _) = Channel::new("b", l);
        modern(&ch);
        let a = waiting_changes(&ch);
        let listen = sent(&mut out).await;
        let b = waiting_changes(&ch);
        assert_eq!(listen["method"], "subscriptions/listen");
        assert_eq!(listen["params"]["notifications"]["toolsListChanged"], true);
        assert_eq!(
            listen["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            version::MODERN_LATEST
        );
        let gid = listen["id"].clone();
        let tag = |method: &str, sub: &Value| json!({"jsonrpc": "2.0", "method": method, "params": {"_meta": {SUBSCRIPTION_ID: sub}}});
        // Neither stream is handed out before the server acknowledges the listen.
        server
            .send(tag(
                "notifications/subscriptions/acknowledged",
                &json!(999_999),
            ))
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert!(
            !a.is_finished() && !b.is_finished(),
            "handed out unacknowledged"
        );
        server
            .send(tag("notifications/subscriptions/acknowledged", &gid))
            .await
            .unwrap();
        let (mut a, mut b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        // One acknowledged already: a third stream is handed out at once.
        let c = ch.changes(Duration::from_secs(60)).await.unwrap();
        drop(c);
        for m in [
            tag("notifications/prompts/list_changed", &json!(999_999)),
            tag("notifications/tools/list_changed", &gid),
        ] {
            server.send(m).await.unwrap();
        }
        for s in [&mut a, &mut b] {
            let n = s.next().await.unwrap().unwrap();
            assert_eq!(
                n,
                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {}})
            );
        }
        // Not in flight: the per-session reaper may stop an idle process.
        assert_eq!(ch.in_flight(), 0);
        drop(a);
        assert!(out.try_recv().is_err(), "cancelled while a stream remains");
        drop(b);
        let cancel = sent(&mut out).await;
        assert_eq!(
            (
                cancel["method"].clone(),
                cancel["params"]["requestId"].clone()
            ),
            (json!("notifications/cancelled"), gid.clone())
        );
        // A new stream: a new listen request. A server that never acknowledges it
        // keeps the stream waiting only as long as it was told to.
        let _c = ch.changes(Duration::from_millis(50)).await.unwrap();
        let again = sent(&mut out).await;
        assert_eq!(again["method"], "subscriptions/listen");
        assert_ne!(again["id"], gid);
    }

    /// `changes` of a modern channel, which waits for the listen's acknowledgement.
    fn waiting_changes(
        ch: &Arc<Channel>,
    ) -> tokio::task::JoinHandle<Result<MessageStream, UpstreamError>> {
        let ch = ch.clone();
        tokio::spawn(async move { ch.changes(Duration::from_secs(60)).await })
    }

    #[tokio::test]
    async fn a_legacy_connection_sends_no_listen_and_an_answered_listen_is_not_resent() {
        let (l, mut out, server, _done) = link();
        let (ch, _) = Channel::new("b", l);
        let _legacy = ch.changes(Duration::from_secs(60)).await.unwrap();
        assert!(out.try_recv().is_err());
        drop(_legacy);
        modern(&ch);
        let s1 = waiting_changes(&ch);
        let listen = sent(&mut out).await;
        server
            .send(json!({"jsonrpc": "2.0", "id": listen["id"], "error": {"code": -32601, "message": "no"}}))
            .await
            .unwrap();
        // The refusal ends the wait and is taken (no request waits for it); a second
        // stream sends none.
        let s1 = s1.await.unwrap().unwrap();
        let mut s2 = ch.changes(Duration::from_secs(60)).await.unwrap();
        server
            .send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
            .await
            .unwrap();
        assert_eq!(
            s2.next().await.unwrap().unwrap()["method"],
            "notifications/tools/list_changed"
        );
        assert!(out.try_recv().is_err());
        drop((s1, s2));
        assert!(out.try_recv().is_err(), "nothing to cancel");
    }
}
