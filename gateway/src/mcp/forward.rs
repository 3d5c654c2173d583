//! Calls routed to one backend (`tools/call`, `prompts/get`, `resources/read`, …): the
//! request forwarded, its answer (JSON or a relayed SSE stream) returned.
//!
//! Why ids are rewritten: backends pick colliding ids ([`super::relay`]). Not here: which
//! backend (that is [`super::routing`]).

use super::call::{upstream_extra, Call, Cancel, Ids, InflightGuard, Sent};
use super::exchange::{Caller, Info, Response};
use super::handler::Gateway;
use super::jsonrpc::{self};
use super::relay;
use super::session::SessionClaims;
use crate::mcp::jsonrpc::Method;
use crate::upstream::sse::format_event;
use crate::upstream::Backend;
use crate::upstream::{to_bytes, Reply, UpstreamError};
use crate::wire::version;
use crate::wire::UpstreamSession;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;

impl Gateway {
    /// `tools/call`, `prompts/get`: the public name resolved to a backend and its own
    /// name (`route`: as the request's head resolved the same name already); the
    /// arguments digested for the audit log.
    pub(super) async fn call_by_name(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        mut call: Routed,
        route: Option<(usize, String)>,
        info: &mut Info,
    ) -> Response {
        let name = match call.required("name") {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        info.target = Some(name.clone());
        if let (Some(args), Some(audit)) = (call.params.get("arguments"), self.audit.as_deref()) {
            // Digest of the redacted arguments; the arguments themselves only when the
            // audit log keeps them.
            let (digest, kept) = audit.arguments(args);
            info.args_digest = Some(digest);
            info.args = kept;
        }
        let what = if call.method == Method::ToolsCall {
            "tool"
        } else {
            "prompt"
        };
        let Some((b, original)) = route.or_else(|| self.resolve_name(&name)) else {
            return call.refuse(jsonrpc::INVALID_PARAMS, format!("unknown {what} {name:?}"));
        };
        call.params["name"] = Value::String(original);
        self.forward(claims, caller, b, call, info).await
    }

    /// `resources/read`, `resources/subscribe`, `resources/unsubscribe`: routed by URI.
    pub(super) async fn call_by_uri(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        mut call: Routed,
        info: &mut Info,
    ) -> Response {
        let uri = match call.required("uri") {
            Ok(v) => v,
            Err(refused) => return refused,
        };
        info.target = Some(uri.clone());
        let Some((b, original)) = self.resolve_uri(claims, caller, &uri) else {
            return Response::json(
                200,
                &jsonrpc::error_with_data(
                    &call.id,
                    jsonrpc::INVALID_PARAMS,
                    format!("unknown resource {uri:?}"),
                    json!({"uri": uri}),
                ),
            );
        };
        call.params["uri"] = Value::String(original);
        self.forward(claims, caller, b, call, info).await
    }

    /// `completion/complete`: routed by the prompt or resource it completes.
    pub(super) async fn complete(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        mut call: Routed,
        info: &mut Info,
    ) -> Response {
        let r = call.params.get("ref").cloned().unwrap_or(Value::Null);
        let target = match r.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => r
                .get("name")
                .and_then(Value::as_str)
                .and_then(|n| self.resolve_name(n).map(|(b, o)| (b, "name", o))),
            Some("ref/resource") => r.get("uri").and_then(Value::as_str).and_then(|u| {
                self.resolve_uri(claims, caller, u)
                    .map(|(b, o)| (b, "uri", o))
            }),
            _ => {
                return call.refuse(
                    jsonrpc::INVALID_PARAMS,
                    "completion/complete needs params.ref of type ref/prompt or ref/resource"
                        .into(),
                )
            }
        };
        let Some((b, field, original)) = target else {
            return call.refuse(
                jsonrpc::INVALID_PARAMS,
                format!("unknown completion reference {r}"),
            );
        };
        call.params["ref"][field] = Value::String(original);
        self.forward(claims, caller, b, call, info).await
    }

    /// Forwards a request to one backend and relays its answer (JSON or a stream).
    pub(super) async fn forward(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        b: usize,
        call: Routed,
        info: &mut Info,
    ) -> Response {
        let Routed { id, method, params } = call;
        let backend = self.backends[b].clone();
        info.backend = Some(backend.name().to_string());
        if let Some(refused) = self.refuse_by_policy(&backend, caller, &id, &method, &params, info)
        {
            return refused;
        }
        let downstream_modern = version::is_modern(&claims.v);
        if let Some(kept) = self
            .keep_subscription(claims, b, &id, &method, &params)
            .await
        {
            return kept;
        }
        if downstream_modern && super::bridge::is_held_state(&params) {
            return self.resume_held(caller, &claims.caps, &backend, id, &method, &params, info);
        }
        // A modern client's calls may share an upstream session or pipe: there, each goes
        // with an id of the gateway's, so that two never collide ([`Call::send`]).
        let shared_id = match downstream_modern {
            true => json!(self.next_upstream_id()),
            false => id.clone(),
        };
        let mut params = params;
        let extra = upstream_extra(&backend, caller, info, &mut params);
        let call = Call {
            b,
            backend,
            method,
            params,
            extra,
        };
        // A 2025 client's notifications/cancelled finds its call here; a modern client
        // cancels by closing the stream (its `Cancel`), so its calls need no entry.
        let key = (!downstream_modern).then(|| (claims.sid.clone(), id.to_string()));
        if let Some(key) = &key {
            self.inflight.insert(key.clone(), b);
        }
        let cancel = downstream_modern.then(|| Cancel {
            gw: self.clone(),
            b,
            sid: claims.sid.clone(),
            id: shared_id.clone(),
        });
        let guard = InflightGuard {
            map: self.inflight.clone(),
            key,
            cancel,
            answered: false,
        };
        let ids = Ids {
            client: &id,
            shared: &shared_id,
        };
        let r = call.send(self, claims, ids).await;
        let upstream_id = match &r {
            Ok((_, modern)) if call.keeps_client_id(downstream_modern, *modern) => id.clone(),
            _ => shared_id,
        };
        let sent = Sent {
            call,
            id,
            upstream_id,
            guard,
        };
        self.answer_sent(claims, caller, sent, r, info).await
    }

    /// A 2025 client's `resources/subscribe`/`unsubscribe` at a modern backend, which has
    /// neither: kept by the gateway ([`super::subscriptions`]). `None` for anything else.
    async fn keep_subscription(
        &self,
        claims: &SessionClaims,
        b: usize,
        id: &Value,
        method: &Method,
        params: &Value,
    ) -> Option<Response> {
        let subscribing = matches!(
            method,
            Method::ResourcesSubscribe | Method::ResourcesUnsubscribe
        );
        if !subscribing || version::is_modern(&claims.v) {
            return None;
        }
        let s = self.upstream(claims, b).await.ok()?;
        if !version::is_modern(&s.version) {
            return None;
        }
        let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
        let at = (claims.sid.as_str(), b);
        Some(super::subscriptions::answer(
            &self.subscriptions,
            at,
            id,
            method,
            uri,
        ))
    }

    /// The client's answer from the backend's reply to a sent call.
    async fn answer_sent(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        sent: Sent,
        r: Result<(Reply, bool), UpstreamError>,
        info: &mut Info,
    ) -> Response {
        let downstream_modern = version::is_modern(&claims.v);
        let Sent {
            call,
            id,
            upstream_id,
            mut guard,
        } = sent;
        // A 2025 client cannot take a modern backend's input-required result: the
        // gateway asks it the input requests itself ([`super::asks`]).
        let r = match r {
            Ok((reply, true)) if !downstream_modern && call.method.may_need_input() => {
                match reply {
                    Reply::Json(b) if !super::asks::may_be_input_required(&b) => Ok(Reply::Json(b)),
                    Reply::Accepted => Ok(Reply::Accepted),
                    first => {
                        let asking = super::asks::Asking {
                            gw: self.clone(),
                            claims: claims.clone(),
                            call,
                            id,
                            upstream_id,
                            guard,
                        };
                        return Response::Sse {
                            headers: Vec::new(),
                            stream: asking.rounds(first),
                        };
                    }
                }
            }
            other => other.map(|(reply, _)| reply),
        };
        if !matches!(r, Ok(Reply::Stream(_))) {
            guard.answered = true;
        }
        let backend = call.backend.clone();
        match r {
            // A modern client's answer gets its id back where it is shaped
            // (shape.rs, Shape::finish).
            Ok(Reply::Json(bytes)) => Response::json_bytes(200, bytes),
            Ok(Reply::Accepted) => backend_error(
                &id,
                backend.name(),
                &UpstreamError::Protocol("it answered a request with no body".into()),
            ),
            Ok(Reply::Stream(stream)) => {
                let modern = match downstream_modern {
                    true => self.modern_relay(claims, caller, &call).await,
                    false => None,
                };
                Response::Sse {
                    headers: Vec::new(),
                    stream: relayed_events(stream, id, upstream_id, backend, guard, modern),
                }
            }
            Err(UpstreamError::Refused { status, answer })
                if !crate::upstream::is_link_code(answer.pointer("/error/code")) =>
            {
                relay_refusal(status, answer, id, downstream_modern, info)
            }
            Err(e) => {
                info.rpc_error = Some(e.code());
                info.detail = Some(format!("backend {:?}: {e}", backend.name()));
                tracing::warn!(backend = backend.name(), error = %e, "routed request failed");
                backend_error(&id, backend.name(), &e)
            }
        }
    }

    /// How a modern client's streamed call relays the backend's server-to-client
    /// requests, which that client takes none of: held for it as input requests (a
    /// legacy backend, [`super::bridge`]), or answered here in the backend's session so
    /// that its call can go on.
    async fn modern_relay(
        self: &Arc<Self>,
        claims: &SessionClaims,
        caller: &Caller,
        call: &Call,
    ) -> Option<Modern> {
        let s = self.upstream(claims, call.b).await.ok()?;
        let bridge = (!version::is_modern(&s.version)).then(|| super::bridge::BridgeCtx {
            gw: self.clone(),
            sub: caller.sub.clone(),
            // Only _meta was added to the params since they were routed, and it is not
            // part of the binding.
            call: super::bridge::binding(&call.method, call.backend.name(), &call.params),
            caps: claims.caps.clone(),
        });
        Some(Modern {
            backend: call.backend.clone(),
            sid: claims.sid.clone(),
            session: s,
            bridge,
        })
    }

    /// The policy refusal of a routed call, or `None` when the caller may make it.
    fn refuse_by_policy(
        &self,
        backend: &Backend,
        caller: &Caller,
        id: &Value,
        method: &Method,
        params: &Value,
        info: &mut Info,
    ) -> Option<Response> {
        let tool = params.get("name").and_then(Value::as_str);
        let message = self.policy_refusal(backend, caller, method, tool)?;
        info.rpc_error = Some(jsonrpc::FORBIDDEN);
        info.detail = Some(format!("refused by policy: {message}"));
        Some(super::early::policy_answer(id, &message, backend.name()))
    }
}

/// A modern client's call to a legacy backend, as its relay needs it: the backend's
/// requests to the client are held for the client ([`super::bridge`]) or refused in
/// the backend's session.
#[derive(Clone)]
pub(super) struct Modern {
    pub(super) backend: Arc<Backend>,
    pub(super) sid: String,
    pub(super) session: UpstreamSession,
    /// `None`: every request refused (the bridge needs a caller to bind the state to).
    pub(super) bridge: Option<super::bridge::BridgeCtx>,
}

impl Modern {
    /// Refuses a backend's request in the background (the relay goes on meanwhile).
    pub(super) fn refuse_later(&self, msg: Value) {
        let me = self.clone();
        tokio::spawn(async move {
            refuse_server_request(&me.backend, &me.sid, &me.session, &msg).await;
        });
    }
}

/// A backend's SSE answer to a routed call, relayed event by event: its server-to-client
/// requests get ids the gateway can route back ([`relay`]), or, for a modern client,
/// are held for it as an input-required result ([`super::bridge`]); the stream ends
/// after the answer (`upstream_id` is what the backend answers with, `id` what the
/// client asked with), or with an error answer if the backend fails or closes first.
pub(super) fn relayed_events(
    stream: crate::upstream::http::MessageStream,
    id: Value,
    upstream_id: Value,
    backend: Arc<Backend>,
    guard: InflightGuard,
    modern: Option<Modern>,
) -> BoxStream<'static, Bytes> {
    let name = backend.name().to_string();
    let start = (Some((stream, guard)), false);
    futures::stream::unfold(start, move |(state, done)| {
        let (id, upstream_id) = (id.clone(), upstream_id.clone());
        let (name, backend, modern) = (name.clone(), backend.clone(), modern.clone());
        async move {
            let (mut s, mut guard) = match (state, done) {
                (Some(x), false) => x,
                _ => return None,
            };
            loop {
                let item = s.next().await;
                let event = match item {
                    Some(Ok(msg)) if modern.is_some() && is_server_request(&msg) => {
                        let Some(m) = &modern else { continue };
                        match &m.bridge {
                            Some(b) if b.can_ask(&msg) => {
                                match b.hold(msg.clone(), s, guard, m, &upstream_id, &id) {
                                    // The call is held: this stream ends with the round.
                                    Ok(round) => return Some((sse(&round), (None, true))),
                                    Err(back) => {
                                        (s, guard) = *back;
                                        refuse_server_request(&backend, &m.sid, &m.session, &msg)
                                            .await;
                                    }
                                }
                            }
                            _ => refuse_server_request(&backend, &m.sid, &m.session, &msg).await,
                        }
                        continue;
                    }
                    Some(Ok(mut msg)) => {
                        relay::rewrite_server_request(&name, &mut msg);
                        let is_answer =
                            msg.get("id") == Some(&upstream_id) && msg.get("method").is_none();
                        if is_answer {
                            guard.answered = true;
                            msg["id"] = id.clone();
                        }
                        (sse(&msg), is_answer)
                    }
                    Some(Err(e)) => {
                        guard.answered = true; // the backend side is gone
                        backend.record::<()>(&Err(e.clone()));
                        (sse(&backend_error_value(&id, &name, &e)), true)
                    }
                    None => {
                        guard.answered = true;
                        let err = backend_error_value(&id, &name, &UpstreamError::Closed);
                        (sse(&err), true)
                    }
                };
                return Some((event.0, (Some((s, guard)), event.1)));
            }
        }
    })
    .boxed()
}

/// One JSON-RPC message as an SSE event.
pub(super) fn sse(msg: &Value) -> Bytes {
    format_event(&to_bytes(msg))
}

/// A modern backend's refusal (e.g. -32021): relayed with its status to a modern client,
/// as a JSON-RPC error (HTTP 200) to a legacy one.
fn relay_refusal(
    status: u16,
    mut answer: Value,
    id: Value,
    modern: bool,
    info: &mut Info,
) -> Response {
    answer["id"] = id;
    info.rpc_error = answer.pointer("/error/code").and_then(Value::as_i64);
    Response::json(if modern { status } else { 200 }, &answer)
}

pub(super) fn is_server_request(msg: &Value) -> bool {
    msg.get("method").is_some() && msg.get("id").is_some_and(|i| !i.is_null())
}

/// Answers a backend's request to a client that cannot take it (a modern client: it
/// would be an input request of an input-required result in its era).
async fn refuse_server_request(
    backend: &Backend,
    sid: &str,
    session: &UpstreamSession,
    msg: &Value,
) {
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let answer = jsonrpc::error(
        msg.get("id").unwrap_or(&Value::Null),
        jsonrpc::METHOD_NOT_FOUND,
        format!("{method} is not available: the client speaks protocol 2026-07-28, which takes no server-to-client requests"),
    );
    if let Err(e) = backend.send(sid, session, to_bytes(&answer), &[]).await {
        tracing::debug!(backend = backend.name(), error = %e, "cannot refuse a server request");
    }
}

/// A request routed to one backend, with its names already translated: its id, method
/// and (rewritten) params.
pub(super) struct Routed {
    pub(super) id: Value,
    pub(super) method: Method,
    pub(super) params: Value,
}

impl Routed {
    /// A string parameter the method needs, or the error saying so.
    pub(super) fn required(&self, key: &str) -> Result<String, Response> {
        match self.params.get(key).and_then(Value::as_str) {
            Some(v) => Ok(v.to_string()),
            None => Err(self.refuse(
                jsonrpc::INVALID_PARAMS,
                format!("{} needs params.{key}", self.method),
            )),
        }
    }

    /// A JSON-RPC error answering this request (HTTP 200).
    pub(super) fn refuse(&self, code: i64, message: String) -> Response {
        Response::json(200, &jsonrpc::error(&self.id, code, message))
    }
}

pub(super) fn backend_error_value(id: &Value, backend: &str, e: &UpstreamError) -> Value {
    jsonrpc::error_with_data(
        id,
        e.code(),
        format!("backend {backend:?} failed: {e}"),
        json!({"backend": backend}),
    )
}

pub(super) fn backend_error(id: &Value, backend: &str, e: &UpstreamError) -> Response {
    Response::json(200, &backend_error_value(id, backend, e))
}

/// Reduces a reply to the JSON-RPC answer with `id` (for batches).
pub(super) async fn collect_answer(resp: Response, id: &Value) -> Value {
    match resp {
        Response::Full { body, .. } => serde_json::from_slice(&body)
            .unwrap_or_else(|_| jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "no answer")),
        Response::Sse { mut stream, .. } => {
            let mut parser = crate::upstream::sse::Parser::new(crate::upstream::http::MAX_MESSAGE);
            while let Some(chunk) = stream.next().await {
                parser.push(&chunk);
                while let Ok(Some(ev)) = parser.next_event() {
                    if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                        if v.get("id") == Some(id) && v.get("method").is_none() {
                            return v;
                        }
                    }
                }
            }
            jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "no answer")
        }
    }
}
