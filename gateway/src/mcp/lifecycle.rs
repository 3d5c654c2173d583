//! Sessions: `initialize`, the sealed session of each request, upstream sessions
//! opened, re-opened and ended, and `DELETE`.
//!
//! Why sealed: any replica serves any session with no store (see [`super::session`]).
//! Not here: what is done inside a session (dispatch in [`super::handler`]).

use super::exchange::{Caller, Info, Request, Response};
use super::handler::Gateway;
use super::jsonrpc::{self};
use super::session::{caps, now_secs, SessionClaims, UpstreamSession};
use super::version;
use crate::upstream::UpstreamError;
use crate::wire::caps::Caps;
use crate::wire::meta::{MCP_PROTOCOL_VERSION, MCP_SESSION_ID};
use bytes::Bytes;
use futures::Future;
use http::HeaderMap;
use serde_json::{json, Value};
use std::sync::Arc;

impl Gateway {
    /// Opens and checks the session named by `Mcp-Session-Id`.
    pub(super) fn open_session(
        &self,
        headers: &HeaderMap,
        caller: &Caller,
    ) -> Result<Arc<SessionClaims>, Response> {
        let Some(token) = headers.get(MCP_SESSION_ID) else {
            return Err(Response::refuse(
                400,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: missing Mcp-Session-Id header; send initialize first",
            ));
        };
        let not_found = || {
            Response::refuse(
                404,
                jsonrpc::INVALID_REQUEST,
                "Not Found: session is unknown or has ended; send initialize to start a new one",
            )
        };
        let token = token.to_str().map_err(|_| not_found())?;
        // Opening a sealed id costs a decryption and a parse: keep recent ones.
        let cached = self.opened.get(token).map(|c| c.clone());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = Arc::new(self.sealer.open(token).ok_or_else(not_found)?);
                if self.opened.len() >= 100_000 {
                    self.opened.clear();
                }
                self.opened.insert(token.into(), c.clone());
                c
            }
        };
        if claims.sub != caller.sub
            || self.ended.contains_key(&claims.sid)
            || claims.iat + self.config.server.session_ttl.as_secs() < now_secs()
        {
            return Err(not_found());
        }
        if let Some(v) = headers.get(MCP_PROTOCOL_VERSION) {
            let v = v.to_str().unwrap_or("");
            if !version::is_supported(v) {
                return Err(Response::refuse(
                    400,
                    jsonrpc::INVALID_REQUEST,
                    format!(
                        "Bad Request: unsupported MCP-Protocol-Version {v:?}; supported: {}",
                        version::SUPPORTED.join(", ")
                    ),
                ));
            }
        }
        Ok(claims)
    }

    pub(super) async fn initialize(
        self: &Arc<Self>,
        id: &Value,
        params: Option<&Value>,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let empty = json!({});
        let params = params.unwrap_or(&empty);
        let requested = params.get("protocolVersion").and_then(Value::as_str);
        let negotiated = version::negotiate(requested);
        let client_caps = params
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let client_info = params.get("clientInfo").cloned().unwrap_or(Value::Null);
        let mut claims = SessionClaims::new(
            caller.sub.clone(),
            negotiated.to_string(),
            client_caps.clone(),
            client_info.clone(),
        );
        info.session = Some(claims.sid.clone());
        let allowed = self.backends.iter().filter(|b| self.may_use(b, caller));
        let results = futures::future::join_all(allowed.map(|b| {
            let (caps_v, info_v, sid) = (&client_caps, &client_info, claims.sid.as_str());
            async move {
                let r = tokio::time::timeout(
                    b.config.timeout,
                    b.initialize(sid, negotiated, caps_v, info_v),
                )
                .await
                .unwrap_or(Err(UpstreamError::Timeout(b.config.timeout)));
                (b, r)
            }
        }))
        .await;
        let mut bits = Caps::default();
        for (b, r) in results {
            match r {
                Ok(s) => {
                    bits |= s.caps;
                    self.known_caps[b.index].store(s.caps.0, std::sync::atomic::Ordering::Relaxed);
                    claims.up.insert(b.name().to_string(), s);
                }
                Err(e) => {
                    b.omitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    bits |=
                        Caps(self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed));
                    tracing::warn!(backend = b.name(), error = %e, "backend left out of new session; will retry on use");
                }
            }
        }
        let mut capabilities = caps::to_json(bits);
        if let Value::Object(m) = &mut capabilities {
            // logging/setLevel is answered by the gateway whatever the backends do.
            m.entry("logging").or_insert_with(|| json!({}));
        }
        let result = json!({
            "protocolVersion": negotiated,
            "capabilities": capabilities,
            "serverInfo": {"name": "mcp-gateway", "title": "MCP Gateway", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!(
                "This MCP gateway aggregates {} servers; tool and prompt names are prefixed with the server name and \"__\".",
                self.backends.len()
            ),
        });
        let token = self.sealer.seal(&claims);
        Response::json(200, &jsonrpc::result(id, result)).with_header("mcp-session-id", token)
    }

    /// Backend indexes of the session that have `cap` (or whose capabilities are not
    /// known yet), in config order.
    pub(super) fn session_backends(
        &self,
        claims: &SessionClaims,
        caller: &Caller,
        cap: Caps,
    ) -> Vec<usize> {
        self.backends
            .iter()
            .filter(|b| {
                let bits = self
                    .overrides
                    .get(&(claims.sid.clone(), b.index))
                    .map(|s| s.caps)
                    .or_else(|| claims.up.get(b.name()).map(|s| s.caps))
                    .unwrap_or_else(|| {
                        Caps(self.known_caps[b.index].load(std::sync::atomic::Ordering::Relaxed))
                    });
                (bits.is_empty() || bits.contains(cap)) && self.may_use(b, caller)
            })
            .map(|b| b.index)
            .collect()
    }

    /// The upstream session of backend `b` in this downstream session, created on
    /// first use when the backend was not reachable at `initialize`.
    pub(super) async fn upstream(
        &self,
        claims: &SessionClaims,
        b: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        if let Some(s) = self.overrides.get(&(claims.sid.clone(), b)) {
            return Ok(s.clone());
        }
        if let Some(s) = claims.up.get(self.backends[b].name()) {
            return Ok(s.clone());
        }
        self.reinit(claims, b).await
    }

    pub(super) async fn reinit(
        &self,
        claims: &SessionClaims,
        b: usize,
    ) -> Result<UpstreamSession, UpstreamError> {
        let backend = &self.backends[b];
        let s = tokio::time::timeout(
            backend.config.timeout,
            backend.initialize(&claims.sid, &claims.v, &claims.caps, &claims.info),
        )
        .await
        .unwrap_or(Err(UpstreamError::Timeout(backend.config.timeout)))?;
        self.known_caps[b].store(s.caps.0, std::sync::atomic::Ordering::Relaxed);
        if self.overrides.len() > 100_000 {
            self.overrides.clear();
        }
        self.overrides.insert((claims.sid.clone(), b), s.clone());
        Ok(s)
    }

    /// Runs `f` in the upstream session, re-creating it once if the backend forgot it.
    pub(super) async fn in_session<T, F, Fut>(
        &self,
        claims: &SessionClaims,
        b: usize,
        f: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(UpstreamSession) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let s = self.upstream(claims, b).await?;
        match f(s).await {
            Err(UpstreamError::SessionExpired) => {
                let s = self.reinit(claims, b).await?;
                f(s).await
            }
            other => other,
        }
    }

    /// Resolves when session `sid` is ended with DELETE on this replica.
    pub(super) async fn session_end(
        self: Arc<Self>,
        sid: String,
        mut ended: tokio::sync::broadcast::Receiver<Arc<str>>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match ended.recv().await {
                Ok(s) if *s == *sid => return,
                Ok(_) => {}
                // Missed some: the map says whether this one was among them.
                Err(RecvError::Lagged(_)) if self.ended.contains_key(&sid) => return,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return std::future::pending().await,
            }
        }
    }

    pub(super) async fn delete(
        self: &Arc<Self>,
        req: Request,
        caller: &Caller,
        info: &mut Info,
    ) -> Response {
        let claims = match self.open_session(&req.headers, caller) {
            Ok(c) => c,
            Err(r) => return r,
        };
        info.session = Some(claims.sid.clone());
        futures::future::join_all(self.backends.iter().map(|b| {
            let claims = &claims;
            async move {
                let s = self
                    .overrides
                    .remove(&(claims.sid.clone(), b.index))
                    .map(|(_, s)| s)
                    .or_else(|| claims.up.get(b.name()).cloned());
                if let Some(s) = s {
                    let _ = tokio::time::timeout(b.config.timeout, b.end_session(&claims.sid, &s))
                        .await;
                }
            }
        }))
        .await;
        let expiry = claims.iat + self.config.server.session_ttl.as_secs();
        if self.ended.len() > 100_000 {
            let now = now_secs();
            self.ended.retain(|_, e| *e > now);
        }
        self.ended.insert(claims.sid.clone(), expiry);
        self.subscriptions.end_session(&claims.sid);
        let _ = self.session_ended.send(claims.sid.as_str().into());
        Response::Full {
            status: 200,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}
