//! What a client sends that is not a request: notifications (cancellation, roots
//! changed) and its answers to a backend's server-to-client requests.
//!
//! Not here: the backend's own requests, relayed by [`super::forward`] and [`super::stream`].

use super::exchange::{Caller, Info, Response};
use super::handler::Gateway;
use super::jsonrpc::Method;
use super::jsonrpc::{self};
use super::relay;
use super::session::SessionClaims;
use crate::upstream::to_bytes;
use serde_json::{json, Value};
use std::sync::Arc;

impl Gateway {
    pub(super) async fn notification(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        method: &Method,
        params: Option<Value>,
    ) {
        let targets: Vec<usize> = match method {
            Method::NotificationsInitialized => return,
            Method::NotificationsCancelled => {
                let rid = params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .map(Value::to_string);
                match rid.and_then(|r| {
                    self.inflight
                        .get(&(claims.sid.clone(), r))
                        .map(|e| *e.value())
                }) {
                    Some(b) => vec![b],
                    None => self
                        .backends
                        .iter()
                        .filter(|b| self.may_use(b, caller))
                        .map(|b| b.index)
                        .collect(),
                }
            }
            Method::NotificationsRootsListChanged => self
                .backends
                .iter()
                .filter(|b| self.may_use(b, caller))
                .map(|b| b.index)
                .collect(),
            _ => return,
        };
        let mut note = json!({"jsonrpc": "2.0", "method": method.as_str()});
        if let Some(p) = params {
            note["params"] = p;
        }
        let body = to_bytes(&note);
        futures::future::join_all(targets.into_iter().map(|b| {
            let body = body.clone();
            async move {
                let backend = &self.backends[b];
                if let Ok(s) = self.upstream(claims, b).await {
                    if let Err(e) = backend.send(&claims.sid, &s, body, &[]).await {
                        tracing::debug!(backend = backend.name(), error = %e, "notification not delivered");
                    }
                }
            }
        }))
        .await;
    }

    /// The client answers a request that a backend sent through the gateway.
    pub(super) async fn client_answer(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        id: Value,
        mut body: Value,
        info: &mut Info,
    ) -> Response {
        if super::asks::Asks::is_ask_id(&id) {
            // The gateway's own request (a modern backend's input request).
            return match self.asks.answer(&claims.sid, &id, body) {
                Ok(()) => Response::accepted(),
                Err(_) => Response::refuse(
                    400,
                    jsonrpc::INVALID_REQUEST,
                    format!("Bad Request: response id {id} answers no request waiting in this session (answered already, timed out, or asked in another session)"),
                ),
            };
        }
        let Some((name, original)) = relay::unwrap_id(&id) else {
            return Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                format!("Bad Request: response id {id} answers no request of this gateway"),
            );
        };
        let Some(backend) = self.backend(name).cloned() else {
            return Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                format!("Bad Request: response id {id} names no backend"),
            );
        };
        info.backend = Some(backend.name().to_string());
        if !self.may_use(&backend, caller) {
            return Response::refuse(403, jsonrpc::FORBIDDEN, "Forbidden: not your backend");
        }
        body["id"] = original;
        let bytes = to_bytes(&body);
        let r = self
            .in_session(claims, backend.index, |s| {
                let (backend, bytes) = (&backend, bytes.clone());
                async move { backend.send(&claims.sid, &s, bytes, &[]).await }
            })
            .await;
        match r {
            Ok(_) => Response::accepted(),
            Err(e) => Response::refuse(
                502,
                e.code(),
                format!(
                    "backend {:?} did not take the response: {e}",
                    backend.name()
                ),
            ),
        }
    }
}
