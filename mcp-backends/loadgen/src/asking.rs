//! `--mode asking`: the round trip of a call whose server asks the client for input,
//! one call at a time (a latency, not a throughput), answered as a client of `--era`
//! answers:
//! - 2025: the call's SSE stream carries the server's requests (`elicitation/create`,
//!   `sampling/createMessage`, `roots/list`); each is answered by a POST on a second
//!   connection of the same session, and the stream ends with the result;
//! - 2026-07-28: the call is answered with an input-required result; it is sent again
//!   with `inputResponses` (and the `requestState`), as many rounds as asked.
//!
//! Through the gateway, either era reaches a backend of either era: with the same tool
//! behind both, the p50 difference is what bridging the eras costs
//! (ops/scripts/bench-bridge.sh).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};

use super::{percentile, Conn, Era, MODERN};

/// The most rounds one call may ask for before the run calls it a failure.
const MAX_ROUNDS: usize = 32;

/// What this client declares it can answer.
fn capabilities() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {}})
}

/// The answer (a result) to one of the server's requests.
fn answer(method: &str, params: &Value) -> Result<Value> {
    Ok(match method {
        "elicitation/create" => {
            let props = params
                .pointer("/requestedSchema/properties")
                .and_then(Value::as_object);
            let content: Map<String, Value> = props
                .into_iter()
                .flatten()
                .map(|(k, schema)| {
                    let v = match schema.get("type").and_then(Value::as_str) {
                        Some("boolean") => json!(true),
                        Some("number" | "integer") => json!(1),
                        _ => json!("load"),
                    };
                    (k.clone(), v)
                })
                .collect();
            json!({"action": "accept", "content": content})
        }
        "sampling/createMessage" => json!({"role": "assistant", "model": "mcp-load",
            "content": {"type": "text", "text": "load"}}),
        "roots/list" => json!({"roots": []}),
        other => bail!("the server asked {other:?}, which this client does not answer"),
    })
}

/// The JSON-RPC messages of a body: one JSON object, or SSE events.
fn messages(body: &[u8]) -> Vec<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return vec![v];
    }
    String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .collect();
            serde_json::from_str(&data.join("\n")).ok()
        })
        .collect()
}

/// A client of one era: the call's connection and, for 2025, one for its answers.
pub(super) struct Asker {
    call: Conn,
    answers: Conn,
    era: Era,
    tool: String,
    arguments: Value,
    next_id: u64,
}

impl Asker {
    pub(super) async fn open(
        url: &hyper::Uri,
        extra: &[(String, String)],
        era: Era,
        tool: &str,
        arguments: Value,
    ) -> Result<Asker> {
        let mut call = Conn::open(url, extra, era).await?;
        let mut answers = Conn::open(url, extra, era).await?;
        if era == Era::Legacy {
            call.initialize_with(capabilities()).await?;
            if call.session.is_none() {
                bail!("initialize: no Mcp-Session-Id");
            }
            answers.session = call.session.clone();
        }
        Ok(Asker {
            call,
            answers,
            era,
            tool: tool.to_string(),
            arguments,
            next_id: 1,
        })
    }

    /// One call, every request of the server answered: its rounds (server requests
    /// answered, or retries sent).
    pub(super) async fn call(&mut self) -> Result<usize> {
        self.next_id += 1;
        match self.era {
            Era::Legacy => self.call_2025().await,
            Era::Modern => self.call_modern().await,
        }
    }

    async fn call_2025(&mut self) -> Result<usize> {
        let id = json!(self.next_id);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": self.tool, "arguments": self.arguments}});
        let c = &mut self.call;
        let req = c.request(&super::Prepared::of(&body)?)?;
        c.sender.ready().await?;
        let resp = c.sender.send_request(req).await?;
        if resp.status() != 200 {
            bail!("tools/call: HTTP {}", resp.status());
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut rounds = 0;
        loop {
            // Whole events first (a JSON body is one message at its end).
            while let Some(end) = find_event_end(&buf) {
                let event: Vec<u8> = buf.drain(..end).collect();
                for msg in messages(&event) {
                    if msg.get("method").is_some() && msg.get("id").is_some() {
                        rounds += 1;
                        self.answer_2025(&msg).await?;
                    } else if msg.get("id") == Some(&id) {
                        // Read to the end: a body dropped early closes the connection.
                        while let Some(frame) = body.frame().await {
                            frame?;
                        }
                        return done(&msg).map(|()| rounds);
                    }
                }
            }
            match body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                None => {
                    let last = messages(&buf);
                    return match last.iter().find(|m| m.get("id") == Some(&id)) {
                        Some(msg) => done(msg).map(|()| rounds),
                        None => Err(anyhow!("the call's stream ended without its answer")),
                    };
                }
            }
        }
    }

    async fn answer_2025(&mut self, request: &Value) -> Result<()> {
        let method = request["method"].as_str().unwrap_or_default();
        let result = answer(method, &request["params"])?;
        let msg = json!({"jsonrpc": "2.0", "id": request["id"], "result": result});
        let (status, _, body) = self.answers.post(&msg).await?;
        if status != 202 {
            bail!(
                "answer to {method}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    async fn call_modern(&mut self) -> Result<usize> {
        let mut params = json!({"name": self.tool, "arguments": self.arguments, "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": capabilities(),
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-load", "version": "1"}}});
        for round in 0..=MAX_ROUNDS {
            let id = json!(format!("{}-{round}", self.next_id));
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            let (status, _, bytes) = self.call.post(&body).await?;
            let msgs = messages(&bytes);
            let msg = msgs
                .iter()
                .find(|m| m.get("id") == Some(&id) && m.get("method").is_none())
                .ok_or_else(|| anyhow!("tools/call: HTTP {status}, no answer"))?;
            let result = &msg["result"];
            if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return done(msg).map(|()| round);
            }
            let mut responses = Map::new();
            for (key, request) in result
                .get("inputRequests")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let method = request["method"].as_str().unwrap_or_default();
                responses.insert(key.clone(), answer(method, &request["params"])?);
            }
            params["inputResponses"] = Value::Object(responses);
            match result.get("requestState") {
                Some(s) => params["requestState"] = s.clone(),
                None => {
                    if let Value::Object(p) = &mut params {
                        p.remove("requestState");
                    }
                }
            }
        }
        bail!("the server asked for input more than {MAX_ROUNDS} times")
    }
}

/// The end of the first whole SSE event (or JSON body) in `buf`.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| i + 2)
        .or_else(|| buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4))
}

/// A call's final answer: a result that is not an error.
fn done(msg: &Value) -> Result<()> {
    if msg.get("result").is_none() || msg.pointer("/result/isError") == Some(&json!(true)) {
        bail!("the call failed: {msg}");
    }
    Ok(())
}

/// Calls one at a time for `warmup` then `duration` seconds; prints the latency of the
/// whole round trip.
pub(super) async fn run(
    url: hyper::Uri,
    extra: Vec<(String, String)>,
    era: Era,
    tool: &str,
    arguments: Value,
    (warmup, duration): (f64, f64),
    print_json: bool,
) -> Result<()> {
    let mut asker = Asker::open(&url, &extra, era, tool, arguments)
        .await
        .context("opening the client")?;
    let warm_until = Instant::now() + Duration::from_secs_f64(warmup);
    while Instant::now() < warm_until {
        asker.call().await?;
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut rounds = 0;
    while started.elapsed().as_secs_f64() < duration {
        let t = Instant::now();
        rounds = asker.call().await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    if rounds == 0 {
        bail!("the server never asked for input: --tool {tool} is not a tool that asks");
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let (p50, p90) = (percentile(&lat, 50.0), percentile(&lat, 90.0));
    if print_json {
        println!(
            "{}",
            json!({"mode": "asking", "calls": lat.len(), "rounds": rounds,
                   "p50_ms": p50, "p90_ms": p90})
        );
    } else {
        println!(
            "{} calls of {rounds} round(s): latency p50 {p50:.3} ms, p90 {p90:.3} ms",
            lat.len()
        );
    }
    Ok(())
}
