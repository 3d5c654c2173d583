//! A routed call on its way to one backend ([`Call`]): the id it goes with, its body and
//! headers fitted to the backend's era, and what happens if it is dropped unanswered
//! ([`InflightGuard`], [`Cancel`]).
//!
//! Why a modern client's call usually goes under an id of the gateway's: that client's
//! calls share an upstream session per person and client (a legacy backend) or a pipe (a
//! STDIO backend), where two of its requests could carry the same id. A modern HTTP
//! backend has neither: each call is an exchange of its own and keeps the client's id,
//! so its answer needs no new one ([`Call::keeps_client_id`], [`Ids`]).

use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{json, Value};

use super::exchange::{Caller, Info};
use super::handler::Gateway;
use super::session::SessionClaims;
use crate::mcp::jsonrpc::Method;
use crate::upstream::modern::{ForLegacy, ForModern};
use crate::upstream::Backend;
use crate::upstream::{request_bytes, to_bytes, Reply, UpstreamError};
use crate::wire::meta;
use crate::wire::version;

/// The headers a routed call carries upstream besides the body: who calls (as the backend
/// is configured to be told), the request id, the client's `Mcp-Param-*` and trace
/// context (the latter also into `_meta`, the 2026-07-28 convention, unless the client
/// put its own there).
pub(super) fn upstream_extra(
    backend: &Backend,
    caller: &Caller,
    info: &Info,
    params: &mut Value,
) -> Vec<(http::HeaderName, String)> {
    let mut extra = Gateway::identity_headers(backend, caller);
    if !info.request_id.is_empty() {
        extra.push((
            http::HeaderName::from_static("x-request-id"),
            info.request_id.clone(),
        ));
    }
    extra.extend(info.param_headers.iter().cloned());
    if let Some(tp) = &info.traceparent {
        extra.push((http::HeaderName::from_static("traceparent"), tp.clone()));
        if let Value::Object(p) = params {
            let meta = p.entry("_meta").or_insert_with(|| json!({}));
            if let Value::Object(m) = meta {
                m.entry("traceparent").or_insert_with(|| json!(tp));
            }
        }
    }
    extra
}

/// A routed call as it goes to its backend: what [`Call::send`] needs each time (a
/// 2025 client's call is sent again for each round of input, [`super::asks`]).
pub(super) struct Call {
    pub(super) b: usize,
    pub(super) backend: Arc<Backend>,
    pub(super) method: Method,
    /// As routed (names translated), with the trace context in `_meta`.
    pub(super) params: Value,
    /// Identity, request id, `Mcp-Param-*` and trace headers.
    pub(super) extra: Vec<(http::HeaderName, String)>,
}

impl Call {
    /// Sends the call, in the session's upstream session (made again once if it
    /// expired), fitted to the backend's era, under the id [`Call::keeps_client_id`]
    /// picks of `ids`: the reply, and whether the backend speaks 2026-07-28.
    pub(super) async fn send(
        &self,
        gw: &Gateway,
        claims: &SessionClaims,
        ids: Ids<'_>,
    ) -> Result<(Reply, bool), UpstreamError> {
        let downstream_modern = version::is_modern(&claims.v);
        gw.in_session(claims, self.b, |s| async move {
            let upstream_modern = version::is_modern(&s.version);
            let id = match self.keeps_client_id(downstream_modern, upstream_modern) {
                true => ids.client,
                false => ids.shared,
            };
            let mut mirrored = Vec::new();
            let method = self.method.as_str();
            let body = match (downstream_modern, upstream_modern) {
                // Both sides legacy: the params as routed.
                (false, false) => request_bytes(id, method, &self.params),
                // Stripped of the modern client's _meta for a legacy backend.
                (true, false) => request_bytes(id, method, ForLegacy(&self.params)),
                // Stamped for a modern backend, which also wants the mirrored headers.
                (_, true) => {
                    mirrored = meta::headers_for(&self.method, &self.params);
                    let params = ForModern {
                        params: &self.params,
                        caps: &claims.caps,
                        info: &claims.info,
                        stamped: &claims.stamped,
                    };
                    request_bytes(id, method, params)
                }
            };
            let mut headers = self.extra.clone();
            headers.extend(mirrored);
            let reply = self.backend.send(&claims.sid, &s, body, &headers).await?;
            Ok((reply, upstream_modern))
        })
        .await
    }

    /// Whether the call goes upstream under the client's own id: a 2025 client's (its
    /// upstream session is its own) and a modern client's to a modern HTTP backend (an
    /// exchange of its own); any other modern client's call under the gateway's.
    pub(super) fn keeps_client_id(&self, downstream_modern: bool, upstream_modern: bool) -> bool {
        !downstream_modern || (upstream_modern && self.backend.http().is_some())
    }
}

/// The ids a call may go upstream with ([`Call::keeps_client_id`] picks).
#[derive(Clone, Copy)]
pub(super) struct Ids<'a> {
    /// The client's.
    pub(super) client: &'a Value,
    /// The gateway's, for a call that shares its upstream session or pipe.
    pub(super) shared: &'a Value,
}

/// A call sent to its backend, with what its answer needs.
pub(super) struct Sent {
    pub(super) call: Call,
    /// The client's id.
    pub(super) id: Value,
    /// The id the backend answers with.
    pub(super) upstream_id: Value,
    pub(super) guard: InflightGuard,
}

pub(super) struct InflightGuard {
    pub(super) map: Arc<DashMap<(String, String), usize>>,
    /// The call's entry in the map (a 2025 client's calls only).
    pub(super) key: Option<(String, String)>,
    /// Whom to tell when the call is dropped before its answer (a modern client that
    /// closed its stream, a legacy backend that would otherwise go on).
    pub(super) cancel: Option<Cancel>,
    /// The answer went out: nothing to cancel.
    pub(super) answered: bool,
}

/// A modern client's call, to cancel upstream if it is dropped before its answer: closing
/// the stream is cancelling in that era. A legacy backend (or a modern STDIO one) is told
/// with `notifications/cancelled` in the upstream session the call went in (looked up
/// only then: most calls are answered); a modern HTTP backend learns of it from the
/// closed connection itself.
pub(super) struct Cancel {
    pub(super) gw: Arc<Gateway>,
    pub(super) b: usize,
    pub(super) sid: String,
    /// The id the backend knows the call by (the gateway's: a call under the client's
    /// own id goes to a modern HTTP backend, which learns of it from the closed
    /// connection).
    pub(super) id: Value,
}

impl Cancel {
    async fn send(self) {
        let backend = self.gw.backends[self.b].clone();
        let Some(session) = self
            .gw
            .overrides
            .get(&(self.sid.clone(), self.b))
            .map(|s| s.clone())
        else {
            return;
        };
        if version::is_modern(&session.version) && backend.http().is_some() {
            return;
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": self.id, "reason": "the client closed its response stream"}});
        if let Err(e) = backend
            .send(&self.sid, &session, to_bytes(&note), &[])
            .await
        {
            tracing::debug!(backend = backend.name(), error = %e, "cannot cancel upstream");
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.map.remove(key);
        }
        let (Some(c), false) = (self.cancel.take(), self.answered) else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(c.send());
        }
    }
}
