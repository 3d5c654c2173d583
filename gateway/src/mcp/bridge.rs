//! Bridging a 2025 backend's server-to-client requests to a 2026-07-28 client.
//!
//! A 2025 backend asks for input (`elicitation/create`, `sampling/createMessage`,
//! `roots/list`) by sending a request on the call's SSE stream and waiting for the
//! answer; a 2026-07-28 client takes no such request, it takes an input-required result
//! (MRTR) and retries the call with `inputResponses`. The gateway holds the backend's
//! call open ([`Holds`]), answers the client with an `InputRequiredResult` carrying the
//! backend's requests under keys of its own and a sealed `requestState`; on the retry
//! it opens the state ([`Gateway::resume_held`]), checks it is this person's, this
//! call's, in time and held here, answers the backend's requests with the client's
//! responses and relays the rest of the call: its result, or the next round.
//!
//! Bounds: at most `server.held_calls_max` calls held at once, each for
//! `server.held_call_ttl_s`; a call past either is cancelled at the backend
//! (`notifications/cancelled`, through its [`InflightGuard`]). A request the client
//! declared no capability for is answered `-32601` at the backend (the spec forbids
//! sending it), as is every request when the bounds are reached. Held calls live in
//! this process: a fleet routes a person's retries to the same replica (docs/).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::call::InflightGuard;
use super::exchange::{Caller, Info, Response};
use super::forward::{relayed_events, Modern};
use super::handler::Gateway;
use super::jsonrpc::{self, Method};
use super::session::{now_secs, HELD_PREFIX};
use crate::upstream::http::MessageStream;
use crate::upstream::{to_bytes, Backend, UpstreamError};
use crate::wire::UpstreamSession;

/// A backend call held open while its client answers input requests.
pub(super) struct Held {
    /// The rest of the backend's answer (messages already read first). In a mutex
    /// only so that the registry is `Sync`: it is never locked twice.
    stream: std::sync::Mutex<MessageStream>,
    guard: InflightGuard,
    /// Input request key → the backend's request id.
    pending: Vec<(String, Value)>,
    /// The id the backend will answer the call with.
    upstream_id: Value,
    backend: Arc<Backend>,
    sid: String,
    session: UpstreamSession,
    expires: Instant,
}

/// The calls held by this process.
pub struct Holds {
    map: DashMap<u64, Held>,
    next: AtomicU64,
    /// This process, in every state it seals: a retry on another replica is told so.
    replica: u64,
    max: usize,
    ttl: Duration,
}

impl Holds {
    pub fn new(max: usize, ttl: Duration) -> Holds {
        Holds {
            map: DashMap::new(),
            next: AtomicU64::new(1),
            replica: rand::random(),
            max,
            ttl,
        }
    }

    /// Drops the held calls past their time (each is cancelled at its backend): at every
    /// new hold, and every `server.health_interval_s` ([`crate::services::probes`]).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.map.retain(|_, h| h.expires > now);
    }

    /// Whether another call may be held (expired ones dropped first).
    fn has_room(&self) -> bool {
        self.sweep();
        let room = self.map.len() < self.max;
        if !room {
            tracing::warn!(
                max = self.max,
                "held calls at server.held_calls_max: an input request is refused"
            );
        }
        room
    }

    fn insert(&self, h: Held) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.insert(n, h);
        n
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a held call's `requestState` says (sealed: [`super::session::Sealer::seal_held`]).
#[derive(Debug, Serialize, Deserialize)]
struct HeldState {
    /// The hold.
    h: u64,
    replica: u64,
    /// The person.
    sub: String,
    /// The call ([`binding`]).
    call: String,
    /// Expiry, seconds since the epoch.
    exp: u64,
}

/// What a call is, for its state: method, backend, target and arguments.
pub(super) fn binding(method: &Method, backend: &str, params: &Value) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_str(),
        backend,
        params
            .get("name")
            .or_else(|| params.get("uri"))
            .and_then(Value::as_str)
            .unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(params.get("arguments").unwrap_or(&Value::Null).to_string());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a request's `requestState` is one of the gateway's held calls (anything
/// else is a modern backend's own, passed through).
pub(super) fn is_held_state(params: &Value) -> bool {
    params
        .get("requestState")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(HELD_PREFIX))
}

/// The client capability an input request needs.
pub(super) fn capability_for(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// What the relay of a modern client's call to a legacy backend needs to hold it.
#[derive(Clone)]
pub(super) struct BridgeCtx {
    pub(super) gw: Arc<Gateway>,
    pub(super) sub: String,
    pub(super) call: String,
    /// The client's `clientCapabilities`.
    pub(super) caps: Value,
}

impl BridgeCtx {
    /// Whether the client can be asked `msg` (a server-to-client request).
    pub(super) fn can_ask(&self, msg: &Value) -> bool {
        msg.get("method")
            .and_then(Value::as_str)
            .and_then(capability_for)
            .is_some_and(|c| self.caps.get(c).is_some_and(|v| !v.is_null()))
    }

    /// Holds the call whose backend just sent `first` (a request the client can be
    /// asked): the requests the backend sent with it join the round. The
    /// input-required answer to the client; `Err` gives the stream and guard back when
    /// `server.held_calls_max` calls are held already (the caller refuses `first`).
    pub(super) fn hold(
        &self,
        first: Value,
        mut stream: MessageStream,
        guard: InflightGuard,
        relay: &Modern,
        upstream_id: &Value,
        id: &Value,
    ) -> Result<Value, Box<(MessageStream, InflightGuard)>> {
        let holds = &self.gw.holds;
        if !holds.has_room() {
            return Err(Box::new((stream, guard)));
        }
        let mut asks = vec![first];
        let mut replay: Vec<Result<Value, UpstreamError>> = Vec::new();
        // What the backend sent at once with the first request belongs to this round.
        while let Some(Some(item)) = stream.next().now_or_never() {
            match item {
                Ok(m) if super::forward::is_server_request(&m) => asks.push(m),
                other => {
                    replay.push(other);
                    break;
                }
            }
        }
        let (asked, refused): (Vec<Value>, Vec<Value>) =
            asks.into_iter().partition(|m| self.can_ask(m));
        for m in refused {
            relay.refuse_later(m);
        }
        let stream: MessageStream = if replay.is_empty() {
            stream
        } else {
            futures::stream::iter(replay).chain(stream).boxed()
        };
        let mut requests = Map::new();
        let mut pending = Vec::new();
        for (i, m) in asked.iter().enumerate() {
            let key = format!("r{i}");
            let params = m.get("params").cloned().unwrap_or_else(|| json!({}));
            requests.insert(
                key.clone(),
                json!({"method": m["method"], "params": params}),
            );
            pending.push((key, m.get("id").cloned().unwrap_or(Value::Null)));
        }
        let h = holds.insert(Held {
            stream: std::sync::Mutex::new(stream),
            guard,
            pending,
            upstream_id: upstream_id.clone(),
            backend: relay.backend.clone(),
            sid: relay.sid.clone(),
            session: relay.session.clone(),
            expires: Instant::now() + holds.ttl,
        });
        let state = HeldState {
            h,
            replica: holds.replica,
            sub: self.sub.clone(),
            call: self.call.clone(),
            exp: now_secs() + holds.ttl.as_secs(),
        };
        let sealed = self
            .gw
            .sealer
            .seal_held(&serde_json::to_vec(&state).unwrap_or_default());
        tracing::debug!(
            backend = relay.backend.name(),
            requests = requests.len(),
            "backend asks for input: call held"
        );
        Ok(json!({"jsonrpc": "2.0", "id": id, "result": {
            "resultType": "input_required",
            "inputRequests": requests,
            "requestState": sealed,
        }}))
    }
}

/// A held call's retry refused: `-32602` with the reason.
fn refuse(id: &Value, info: &mut Info, why: String) -> Response {
    info.rpc_error = Some(jsonrpc::INVALID_PARAMS);
    info.detail = Some(why.clone());
    Response::json(
        200,
        &jsonrpc::error(
            id,
            jsonrpc::INVALID_PARAMS,
            format!("Invalid params: {why}"),
        ),
    )
}

impl Gateway {
    /// A 2026-07-28 client's retry of a held call: the state checked, the backend's
    /// requests answered with the client's `inputResponses`, the rest of the call
    /// relayed (its result, or the next round).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resume_held(
        self: &Arc<Self>,
        caller: &Caller,
        caps: &Value,
        backend: &Backend,
        id: Value,
        method: &Method,
        params: &Value,
        info: &mut Info,
    ) -> Response {
        let token = params
            .get("requestState")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(state) = self
            .sealer
            .open_held(token)
            .and_then(|b| serde_json::from_slice::<HeldState>(&b).ok())
        else {
            return refuse(&id, info, "requestState is not one this gateway issued (altered, or sealed under another session key)".into());
        };
        if state.sub != caller.sub {
            return refuse(&id, info, "requestState belongs to another person".into());
        }
        if state.call != binding(method, backend.name(), params) {
            return refuse(
                &id,
                info,
                "requestState belongs to another call (retry with the same method, name and arguments)".into(),
            );
        }
        if state.replica != self.holds.replica {
            return refuse(&id, info, "requestState names a call held by another gateway replica: route a person's retries to the replica that answered (sticky sessions), or call again from the start".into());
        }
        if state.exp < now_secs() {
            self.holds.map.remove(&state.h);
            return refuse(
                &id,
                info,
                "requestState has expired (server.held_call_ttl_s): call again from the start"
                    .into(),
            );
        }
        let Some((_, held)) = self.holds.map.remove(&state.h) else {
            return refuse(&id, info, "the call is no longer held (answered, expired or cancelled): call again from the start".into());
        };
        let responses = params.get("inputResponses").and_then(Value::as_object);
        if let Some((key, _)) = held
            .pending
            .iter()
            .find(|(k, _)| responses.and_then(|r| r.get(k)).is_none())
        {
            let why = format!("inputResponses lacks {key:?}, one of the input requests");
            self.holds.map.insert(state.h, held);
            return refuse(&id, info, why);
        }
        let answers: Vec<Value> = held
            .pending
            .iter()
            .filter_map(|(k, upstream)| {
                let v = responses?.get(k)?;
                Some(json!({"jsonrpc": "2.0", "id": upstream, "result": v}))
            })
            .collect();
        let Held {
            stream,
            guard,
            upstream_id,
            backend,
            sid,
            session,
            ..
        } = held;
        let relay = Modern {
            backend: backend.clone(),
            sid,
            session,
            bridge: Some(BridgeCtx {
                gw: self.clone(),
                sub: caller.sub.clone(),
                call: state.call,
                caps: caps.clone(),
            }),
        };
        let stream = match stream.into_inner() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stream = answer_then(relay.clone(), answers, stream);
        Response::Sse {
            headers: Vec::new(),
            stream: relayed_events(stream, id, upstream_id, backend, guard, Some(relay)),
        }
    }
}

/// The stream of a resumed call: the backend's requests are answered first (when the
/// client reads the stream), then its messages follow.
fn answer_then(relay: Modern, answers: Vec<Value>, stream: MessageStream) -> MessageStream {
    let send = async move {
        for a in answers {
            if let Err(e) = relay
                .backend
                .send(&relay.sid, &relay.session, to_bytes(&a), &[])
                .await
            {
                tracing::warn!(backend = relay.backend.name(), error = %e, "cannot answer a held call's request");
            }
        }
        futures::stream::empty::<Result<Value, UpstreamError>>()
    };
    futures::stream::once(send).flatten().chain(stream).boxed()
}
