//! Bridging a 2026-07-28 backend's input requests to a 2025 client (the other way
//! round from [`super::bridge`]).
//!
//! A modern backend asks for input by answering `tools/call`, `prompts/get` or
//! `resources/read` with an input-required result (multi round-trip requests); a 2025
//! client knows only server-to-client requests on the call's stream. For such a client
//! the gateway answers the call with a stream ([`Asking::rounds`]): each input request
//! goes on it as a request under an id of the gateway's ([`Asks`]); the client's
//! answers, POSTed like any answer ([`Gateway::client_answer`]), become the
//! `inputResponses` of a retry of the call that the gateway sends with the backend's
//! `requestState`, for as many rounds as the backend asks (at most [`MAX_ROUNDS`]). The
//! backend's final result ends the stream under the client's id: the client sees one
//! call with one result.
//!
//! Bounds and refusals: at most `server.held_calls_max` input requests wait at once,
//! each answered within `server.held_call_ttl_s`, or the call ends with an error; an
//! answer is taken only in the session it was asked in. An input request the client
//! declared no capability for ends the call with `MissingRequiredClientCapability`
//! (`-32021`, `data.requiredCapabilities`), the error a 2026-07-28 server gives (a
//! conforming backend never sends one: it is told the client's capabilities). A client
//! that answers an input request with an error ends the call with that error. The
//! waiting call lives in this process: a fleet routes a session's POSTs to one replica
//! (docs/protocol-eras.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::call::{Call, Ids, InflightGuard};
use super::forward::{backend_error_value, sse};
use super::guards::Needle;
use super::handler::Gateway;
use super::jsonrpc;
use super::relay;
use super::session::SessionClaims;
use crate::upstream::{Reply, UpstreamError};

/// The ids of the gateway's own requests to a client start with this.
const ASK_PREFIX: &str = "mcpgw-ask:";

/// The most input rounds one call may take: a backend that asks again and again (a
/// bug, or a client whose answers never satisfy it) ends the call instead.
pub const MAX_ROUNDS: usize = 32;

/// The input requests this process waits on: id → the session it was asked in, and
/// where its answer goes.
pub struct Asks {
    map: DashMap<String, Asked>,
    next: AtomicU64,
    max: usize,
    ttl: Duration,
}

struct Asked {
    sid: String,
    answer: oneshot::Sender<Value>,
}

/// Why a client's answer to an input request is not taken.
#[derive(Debug, PartialEq)]
pub(super) enum AskError {
    /// No request of this session waits under that id (never asked, answered already,
    /// timed out, asked in another session or on another replica).
    Unknown,
}

impl Asks {
    pub fn new(max: usize, ttl: Duration) -> Asks {
        Asks {
            map: DashMap::new(),
            next: AtomicU64::new(1),
            max,
            ttl,
        }
    }

    /// Whether `id` is one of the gateway's own requests to a client.
    pub(super) fn is_ask_id(id: &Value) -> bool {
        id.as_str().is_some_and(|s| s.starts_with(ASK_PREFIX))
    }

    /// Hands a client's answer (its whole JSON-RPC response) to the call waiting for it.
    pub(super) fn answer(&self, sid: &str, id: &Value, body: Value) -> Result<(), AskError> {
        let key = id.as_str().ok_or(AskError::Unknown)?;
        let (_, asked) = self
            .map
            .remove_if(key, |_, a| a.sid == sid)
            .ok_or(AskError::Unknown)?;
        // The call may have ended meanwhile (its client went away): nothing to do.
        let _ = asked.answer.send(body);
        Ok(())
    }

    /// A new id asked in session `sid`, and where its answer arrives; `None` when
    /// `server.held_calls_max` requests wait already.
    fn open(&self, sid: &str) -> Option<(String, oneshot::Receiver<Value>)> {
        if self.map.len() >= self.max {
            tracing::warn!(
                max = self.max,
                "input requests at server.held_calls_max: a call that needs input is refused"
            );
            return None;
        }
        let id = format!("{ASK_PREFIX}{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.map.insert(
            id.clone(),
            Asked {
                sid: sid.to_string(),
                answer: tx,
            },
        );
        Some((id, rx))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Ids opened for one round, forgotten when the round ends (answered or not).
struct Opened<'a> {
    asks: &'a Asks,
    ids: Vec<String>,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.asks.map.remove(id);
        }
    }
}

/// Whether a JSON answer may be an input-required result (a cheap look first: most
/// are not, and need not be parsed).
pub(super) fn may_be_input_required(body: &[u8]) -> bool {
    static INPUT_REQUIRED: Needle = Needle::new(b"input_required");
    super::guards::contains(body, &INPUT_REQUIRED)
}

fn is_input_required(answer: &Value) -> bool {
    answer.pointer("/result/resultType").and_then(Value::as_str) == Some("input_required")
}

/// A 2025 client's call to a modern backend whose answer may ask for input.
pub(super) struct Asking {
    pub(super) gw: Arc<Gateway>,
    pub(super) claims: SessionClaims,
    pub(super) call: Call,
    /// The client's id: the final answer carries it.
    pub(super) id: Value,
    /// The id the backend answers the first round with.
    pub(super) upstream_id: Value,
    pub(super) guard: InflightGuard,
}

/// How a round ends when the call cannot go on: the answer the client gets.
type Ended = Value;

impl Asking {
    /// The client's stream of the call, starting from the backend's first reply: its
    /// notifications, the gateway's input requests, and the final answer. Dropping the
    /// stream (the client went away) drops the call and whatever waits in it.
    pub(super) fn rounds(self, first: Reply) -> BoxStream<'static, Bytes> {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            let id = self.id.clone();
            tokio::select! {
                end = self.run(first, &tx) => {
                    let mut end = end;
                    end["id"] = id;
                    let _ = tx.send(sse(&end)).await;
                }
                _ = tx.closed() => {}
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .boxed()
    }

    /// Rounds until the backend's final answer (or the error that ends the call).
    async fn run(mut self, first: Reply, tx: &mpsc::Sender<Bytes>) -> Value {
        let mut reply = first;
        let mut upstream_id = self.upstream_id.clone();
        let mut round = 0;
        loop {
            let answer = match self.answer_of(reply, &upstream_id, tx).await {
                Ok(a) => a,
                Err(ended) => return ended,
            };
            if !is_input_required(&answer) {
                self.guard.answered = true;
                return answer;
            }
            round += 1;
            if round > MAX_ROUNDS {
                return self.failed(&UpstreamError::Protocol(format!(
                    "it asked for input more than {MAX_ROUNDS} times in one call"
                )));
            }
            let responses = match self.ask(&answer, tx).await {
                Ok(r) => r,
                Err(ended) => return ended,
            };
            if let Value::Object(p) = &mut self.call.params {
                p.insert("inputResponses".into(), Value::Object(responses));
                match answer.pointer("/result/requestState") {
                    Some(state) => p.insert("requestState".into(), state.clone()),
                    None => p.remove("requestState"),
                };
            }
            // The retry is a request of its own: an id of its own (the spec's rule).
            upstream_id = json!(self.gw.next_upstream_id());
            let ids = Ids {
                client: &upstream_id,
                shared: &upstream_id,
            };
            reply = match self.call.send(&self.gw, &self.claims, ids).await {
                Ok((r, _)) => r,
                Err(UpstreamError::Refused { answer, .. })
                    if !crate::upstream::is_link_code(answer.pointer("/error/code")) =>
                {
                    return answer
                }
                Err(e) => return self.failed(&e),
            };
        }
    }

    /// The backend's answer to one round: a JSON body, or the answer at the end of its
    /// stream, whose notifications are relayed meanwhile.
    async fn answer_of(
        &self,
        reply: Reply,
        upstream_id: &Value,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Value, Ended> {
        let mut stream = match reply {
            Reply::Json(bytes) => {
                return serde_json::from_slice(&bytes).map_err(|e| {
                    self.failed(&UpstreamError::Protocol(format!(
                        "its answer is not JSON: {e}"
                    )))
                })
            }
            Reply::Accepted => {
                return Err(self.failed(&UpstreamError::Protocol(
                    "it answered a request with no body".into(),
                )))
            }
            Reply::Stream(s) => s,
        };
        loop {
            match stream.next().await {
                Some(Ok(msg))
                    if msg.get("id") == Some(upstream_id) && msg.get("method").is_none() =>
                {
                    return Ok(msg)
                }
                Some(Ok(mut msg)) => {
                    relay::rewrite_server_request(self.call.backend.name(), &mut msg);
                    // A closed stream is the client gone: the select in `rounds` ends.
                    let _ = tx.send(sse(&msg)).await;
                }
                Some(Err(e)) => {
                    self.call.backend.record::<()>(&Err(e.clone()));
                    return Err(self.failed(&e));
                }
                None => return Err(self.failed(&UpstreamError::Closed)),
            }
        }
    }

    /// Asks the client a round's input requests on its stream and waits for every
    /// answer: the `inputResponses` of the retry.
    async fn ask(
        &self,
        answer: &Value,
        tx: &mpsc::Sender<Bytes>,
    ) -> Result<Map<String, Value>, Ended> {
        let empty = Map::new();
        let requests = answer
            .pointer("/result/inputRequests")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.check_capabilities(requests)?;
        let asks = &self.gw.asks;
        let mut opened = Opened {
            asks,
            ids: Vec::new(),
        };
        let mut waiting = Vec::new();
        for (key, request) in requests {
            let Some((ask_id, rx)) = asks.open(&self.claims.sid) else {
                return Err(self.ended(
                    jsonrpc::INTERNAL_ERROR,
                    "the gateway waits on too many input requests (server.held_calls_max): try again later".into(),
                    json!({}),
                ));
            };
            let mut params = request.get("params").cloned().unwrap_or_else(|| json!({}));
            // A 2025-11-25 URL-mode elicitation carries an id; 2026-07-28 dropped it.
            if params.get("mode").and_then(Value::as_str) == Some("url")
                && params.get("elicitationId").is_none()
            {
                params["elicitationId"] = json!(ask_id);
            }
            let msg = json!({"jsonrpc": "2.0", "id": ask_id, "method": request["method"], "params": params});
            opened.ids.push(ask_id);
            waiting.push((key.clone(), rx));
            let _ = tx.send(sse(&msg)).await;
        }
        let answers = futures::future::join_all(
            waiting
                .into_iter()
                .map(|(key, rx)| async move { (key, rx.await.ok()) }),
        );
        let Ok(answers) = tokio::time::timeout(asks.ttl, answers).await else {
            return Err(self.ended(
                jsonrpc::INTERNAL_ERROR,
                format!(
                    "the client did not answer the input requests within {} s (server.held_call_ttl_s)",
                    asks.ttl.as_secs()
                ),
                json!({}),
            ));
        };
        let mut responses = Map::new();
        for (key, answer) in answers {
            match answer {
                Some(a) if a.get("result").is_some() => {
                    responses.insert(key, a["result"].clone());
                }
                Some(a) => {
                    let code = a
                        .pointer("/error/code")
                        .and_then(Value::as_i64)
                        .unwrap_or(jsonrpc::INTERNAL_ERROR);
                    let message = a
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("no message");
                    return Err(self.ended(
                        code,
                        format!("the client refused the input request {key:?}: {message}"),
                        json!({"inputRequest": key}),
                    ));
                }
                None => {
                    return Err(self.ended(
                        jsonrpc::INTERNAL_ERROR,
                        "an input request was dropped before its answer".into(),
                        json!({}),
                    ))
                }
            }
        }
        Ok(responses)
    }

    /// `-32021` when a request needs a capability the client did not declare.
    fn check_capabilities(&self, requests: &Map<String, Value>) -> Result<(), Ended> {
        let mut missing = Map::new();
        for request in requests.values() {
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            let Some(cap) = super::bridge::capability_for(method) else {
                return Err(self.failed(&UpstreamError::Protocol(format!(
                    "it asked for input with {method:?}, which is not an input request"
                ))));
            };
            if self.claims.caps.get(cap).is_none_or(Value::is_null) {
                missing.insert(cap.to_string(), json!({}));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = missing.keys().map(String::as_str).collect();
        let message = format!("Missing required client capability: {}", names.join(", "));
        Err(self.ended(
            jsonrpc::MISSING_CLIENT_CAPABILITY,
            message,
            json!({"requiredCapabilities": missing}),
        ))
    }

    /// The call ends with an error of the gateway's.
    fn ended(&self, code: i64, message: String, data: Value) -> Value {
        tracing::debug!(backend = self.call.backend.name(), %message, "bridged call ends");
        jsonrpc::error_with_data(&self.id, code, message, data)
    }

    /// The call ends because the backend failed.
    fn failed(&self, e: &UpstreamError) -> Value {
        backend_error_value(&self.id, self.call.backend.name(), e)
    }
}
