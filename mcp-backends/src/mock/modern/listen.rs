//! `subscriptions/listen`: long-lived notification streams of the modern era.
//! A stream starts with `notifications/subscriptions/acknowledged` and then gets
//! the change notifications its filter asked for, each tagged with the
//! subscription id (the JSON-RPC id of the listen request). Legacy sessions get
//! the same changes as today (GET stream, stdout).

use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::mock::jsonrpc::{self, RpcError};
use crate::mock::protocol::META_SUBSCRIPTION_ID;
use crate::mock::server::MockServer;
use crate::mock::session::Session;

/// A change the server announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    ToolsList,
    PromptsList,
    ResourcesList,
    ResourceUpdated(String),
}

impl Change {
    fn method(&self) -> &'static str {
        match self {
            Change::ToolsList => "notifications/tools/list_changed",
            Change::PromptsList => "notifications/prompts/list_changed",
            Change::ResourcesList => "notifications/resources/list_changed",
            Change::ResourceUpdated(_) => "notifications/resources/updated",
        }
    }

    fn params(&self) -> Map<String, Value> {
        let mut params = Map::new();
        if let Change::ResourceUpdated(uri) = self {
            params.insert("uri".into(), json!(uri));
        }
        params
    }
}

/// The notification types one stream opted in to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    /// `params.notifications` of a listen request.
    pub fn parse(params: &Value) -> Result<Filter, RpcError> {
        let Some(Value::Object(n)) = params.get("notifications") else {
            return Err(RpcError::invalid_params(
                "subscriptions/listen requires 'notifications' (object)",
            ));
        };
        let flag = |key: &str| n.get(key).and_then(Value::as_bool).unwrap_or(false);
        let uris = match n.get("resourceSubscriptions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|u| u.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    RpcError::invalid_params("'resourceSubscriptions' must be an array of strings")
                })?,
            Some(_) => {
                return Err(RpcError::invalid_params(
                    "'resourceSubscriptions' must be an array of strings",
                ))
            }
        };
        Ok(Filter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            uris,
        })
    }

    /// The subset honoured, as the acknowledgement echoes it (all of it).
    pub fn honoured(&self) -> Value {
        let mut n = Map::new();
        for (key, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                n.insert(key.into(), json!(true));
            }
        }
        if !self.uris.is_empty() {
            n.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(n)
    }

    fn wants(&self, change: &Change) -> bool {
        match change {
            Change::ToolsList => self.tools,
            Change::PromptsList => self.prompts,
            Change::ResourcesList => self.resources,
            Change::ResourceUpdated(uri) => self.uris.iter().any(|u| u == uri),
        }
    }
}

/// A notification tagged with the subscription id.
pub fn tagged(method: &str, mut params: Map<String, Value>, subscription: &Value) -> Value {
    params.insert(
        "_meta".into(),
        json!({ META_SUBSCRIPTION_ID: subscription }),
    );
    jsonrpc::notification(method, Value::Object(params))
}

struct Listener {
    id: Value,
    filter: Filter,
    tx: mpsc::UnboundedSender<Value>,
}

/// The open listen streams of the process.
#[derive(Default)]
pub struct Listeners {
    inner: Mutex<Vec<Listener>>,
}

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, Vec<Listener>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a stream: its receiver yields the acknowledgement first, then changes.
    /// The stream ends for the server when the receiver is dropped.
    pub fn open(&self, id: Value, filter: Filter) -> mpsc::UnboundedReceiver<Value> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut params = Map::new();
        params.insert("notifications".into(), filter.honoured());
        let _ = tx.send(tagged(
            "notifications/subscriptions/acknowledged",
            params,
            &id,
        ));
        let mut all = self.lock();
        all.retain(|l| !l.tx.is_closed());
        all.push(Listener { id, filter, tx });
        rx
    }

    /// Sends a change to every stream that asked for it; returns how many got it.
    pub fn announce(&self, change: &Change) -> usize {
        let mut all = self.lock();
        all.retain(|l| !l.tx.is_closed());
        all.iter()
            .filter(|l| l.filter.wants(change))
            .filter(|l| {
                l.tx.send(tagged(change.method(), change.params(), &l.id))
                    .is_ok()
            })
            .count()
    }

    /// Streams still open.
    pub fn count(&self) -> usize {
        let mut all = self.lock();
        all.retain(|l| !l.tx.is_closed());
        all.len()
    }
}

/// A stdio client gets no legacy notifications before it has sent `initialize`.
fn legacy_ready(session: &Session) -> bool {
    !session.is_stdio() || session.initialize_seen()
}

/// Announces a change to modern listen streams and to legacy sessions (list
/// changes to every session, resource updates to subscribers). Returns the number
/// of listen streams reached.
pub fn announce(server: &MockServer, change: &Change) -> usize {
    let reached = server.listeners.announce(change);
    if server.config.protocol.speaks_legacy() {
        for session in server.all_sessions() {
            let wanted = match &change {
                Change::ResourceUpdated(uri) => session.is_subscribed(uri),
                _ => true,
            };
            if wanted && legacy_ready(&session) {
                let params = Value::Object(change.params());
                let params = if params.as_object().is_some_and(Map::is_empty) {
                    Value::Null
                } else {
                    params
                };
                session.send_unsolicited(jsonrpc::notification(change.method(), params), true);
            }
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_ack_and_tags() {
        let listeners = Listeners::default();
        let filter = Filter::parse(&json!({ "notifications": { "promptsListChanged": true } }))
            .expect("filter");
        let mut rx = listeners.open(json!(7), filter);
        let ack = rx.try_recv().expect("ack");
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        assert_eq!(
            ack["params"]["notifications"],
            json!({ "promptsListChanged": true })
        );
        assert_eq!(listeners.announce(&Change::ToolsList), 0);
        assert_eq!(listeners.announce(&Change::PromptsList), 1);
        let n = rx.try_recv().expect("prompts changed");
        assert_eq!(n["method"], "notifications/prompts/list_changed");
        assert_eq!(n["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        drop(rx);
        assert_eq!(listeners.count(), 0);
    }
}
