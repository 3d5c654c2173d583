//! `subscriptions/listen` (2026-07-28): one long-lived response stream carrying the
//! change notifications a modern client opted in to, merged from every backend it may
//! use — a legacy backend's server stream (`GET`) or a modern backend's own listen
//! stream ([`Gateway::pump_server_stream`] opens whichever the backend speaks).
//!
//! The stream opens with `notifications/subscriptions/acknowledged`, sent once every
//! backend's own stream is open (a modern backend has acknowledged the gateway's
//! listen); every message on it carries the listen request's id as
//! `io.modelcontextprotocol/subscriptionId`.
//! Not here: the legacy `GET` stream ([`super::stream`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::exchange::{Caller, Response};
use super::handler::Gateway;
use super::session::SessionClaims;
use super::stream::{tokio_stream_interval, tokio_stream_receiver, Wanted, KEEPALIVE};
use crate::upstream::sse::format_event;
use crate::upstream::to_bytes;
use crate::wire::meta::SUBSCRIPTION_ID;
use std::collections::HashMap;

/// What a client opted in to, as `subscriptions/listen` names it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    fn read(n: Option<&Value>) -> Filter {
        let flag = |k: &str| n.and_then(|n| n.get(k)).and_then(Value::as_bool) == Some(true);
        Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris: n
                .and_then(|n| n.get("resourceSubscriptions"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The acknowledged filter: what was asked for (the gateway relays every type).
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (k, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                m.insert(k.into(), json!(true));
            }
        }
        if !self.uris.is_empty() {
            m.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(m)
    }

    /// Whether a backend's message is one the client opted in to.
    fn admits(&self, msg: &Value) -> bool {
        if msg.get("id").is_some_and(|i| !i.is_null()) {
            return false; // requests and answers never go on a listen stream
        }
        match msg.get("method").and_then(Value::as_str) {
            Some("notifications/tools/list_changed") => self.tools,
            Some("notifications/prompts/list_changed") => self.prompts,
            Some("notifications/resources/list_changed") => self.resources,
            Some("notifications/resources/updated") => msg
                .get("params")
                .and_then(|p| p.get("uri"))
                .and_then(Value::as_str)
                .is_some_and(|u| self.uris.iter().any(|w| w == u)),
            _ => false,
        }
    }
}

/// Tags a notification with the subscription it belongs to.
fn tagged(mut msg: Value, sub: &Value) -> Value {
    if let Value::Object(m) = &mut msg {
        let params = m.entry("params").or_insert_with(|| json!({}));
        if let Value::Object(p) = params {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                meta.insert(SUBSCRIPTION_ID.into(), sub.clone());
            }
        }
    }
    msg
}

impl Gateway {
    /// `subscriptions/listen`: acknowledged once every backend the person may use
    /// listens, then their opted-in notifications, until the client closes the stream.
    pub(super) async fn listen(
        self: &Arc<Self>,
        claims: Arc<SessionClaims>,
        caller: &Caller,
        id: Value,
        params: Option<Value>,
    ) -> Response {
        let filter = Filter::read(params.as_ref().and_then(|p| p.get("notifications")));
        let mut at_modern = self
            .subscribe_resources(&claims, caller, &filter.uris)
            .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Value>(256);
        let mut listening = Vec::new();
        let mut deadline = Duration::ZERO;
        for backend in self.backends.iter().filter(|b| self.may_use(b, caller)) {
            let (gw, claims, tx, b) = (self.clone(), claims.clone(), tx.clone(), backend.index);
            let uris = at_modern.remove(&b).unwrap_or_default();
            let (ready, ready_rx) = oneshot::channel();
            listening.push(ready_rx);
            deadline = deadline.max(backend.config.timeout);
            tokio::spawn(async move {
                gw.pump_server_stream(claims, b, tx, Wanted::Fixed(uris), Some(ready))
                    .await
            });
        }
        drop(tx);
        let ack = json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {SUBSCRIPTION_ID: id.clone()}, "notifications": filter.to_json()},
        });
        // Acknowledged once every backend listens (or failed to, or its timeout passed):
        // a change the client makes after the acknowledgement reaches it.
        let acknowledged = async move {
            let _ = tokio::time::timeout(deadline, futures::future::join_all(listening)).await;
            format_event(&to_bytes(&ack))
        };
        let notes = tokio_stream_receiver(rx)
            .filter(move |m| futures::future::ready(filter.admits(m)))
            .map(move |m| format_event(&to_bytes(&tagged(m, &id))));
        let keepalive =
            tokio_stream_interval(KEEPALIVE).map(|_| Bytes::from_static(b": keepalive\n\n"));
        let stream =
            futures::stream::once(acknowledged).chain(futures::stream::select(notes, keepalive));
        Response::Sse {
            headers: Vec::new(),
            stream: stream.boxed(),
        }
    }

    /// Asks the backend that owns each URI to send its updates: a legacy backend with
    /// `resources/subscribe` in the person's upstream session; a modern backend's own
    /// listen stream names them (returned: backend → its URIs). A URI no backend owns is
    /// left out silently.
    async fn subscribe_resources(
        &self,
        claims: &SessionClaims,
        caller: &Caller,
        uris: &[String],
    ) -> HashMap<usize, Vec<String>> {
        let mut at_modern: HashMap<usize, Vec<String>> = HashMap::new();
        for uri in uris {
            let Some((b, original)) = self.resolve_uri(claims, caller, uri) else {
                continue;
            };
            let backend = &self.backends[b];
            let r = self
                .in_session(claims, b, |s| {
                    let p = json!({"uri": original});
                    async move {
                        if crate::wire::version::is_modern(&s.version) {
                            return Ok(true);
                        }
                        backend
                            .request(&claims.sid, &s, "resources/subscribe", p)
                            .await
                            .map(|_| false)
                    }
                })
                .await;
            match r {
                Ok(true) => at_modern.entry(b).or_default().push(original),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(backend = backend.name(), uri, error = %e, "cannot subscribe upstream")
                }
            }
        }
        at_modern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_admits_only_what_was_asked() {
        let f = Filter::read(Some(
            &json!({"toolsListChanged": true, "resourceSubscriptions": ["a://x"]}),
        ));
        assert!(f.admits(&json!({"method": "notifications/tools/list_changed"})));
        assert!(!f.admits(&json!({"method": "notifications/prompts/list_changed"})));
        assert!(f.admits(
            &json!({"method": "notifications/resources/updated", "params": {"uri": "a://x"}})
        ));
        assert!(!f.admits(
            &json!({"method": "notifications/resources/updated", "params": {"uri": "a://y"}})
        ));
        assert!(!f.admits(&json!({"id": 1, "method": "elicitation/create"})));
        assert_eq!(
            f.to_json(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a://x"]})
        );
        let t = tagged(
            json!({"method": "notifications/tools/list_changed"}),
            &json!(7),
        );
        assert_eq!(t["params"]["_meta"][SUBSCRIPTION_ID], 7);
    }
}
