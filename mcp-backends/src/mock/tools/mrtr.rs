//! Multi Round-Trip Request fixtures of the 2026-07-28 suite: a request answered
//! with `resultType: "input_required"` (`inputRequests`, `requestState`) and
//! retried by the client with `inputResponses` (and the state echoed). Every state
//! is sealed by [`super::state`]; an altered one is refused with -32602.

use serde_json::{json, Map, Value};

use super::state;
use super::ToolOutcome;
use crate::mock::handler::RequestCtx;
use crate::mock::jsonrpc::RpcError;
use crate::mock::modern::missing_capability;

pub const ELICITATION: &str = "test_input_required_result_elicitation";
pub const SAMPLING: &str = "test_input_required_result_sampling";
pub const LIST_ROOTS: &str = "test_input_required_result_list_roots";
pub const REQUEST_STATE: &str = "test_input_required_result_request_state";
pub const MULTIPLE_INPUTS: &str = "test_input_required_result_multiple_inputs";
pub const MULTI_ROUND: &str = "test_input_required_result_multi_round";
pub const TAMPERED_STATE: &str = "test_input_required_result_tampered_state";
pub const CAPABILITIES: &str = "test_input_required_result_capabilities";
/// Not of the suite: asks for elicitation whatever the client declared, as a backend
/// that breaks the capability rule would (what the gateway does then is tested).
pub const UNCHECKED: &str = "ask_whatever_the_client_declared";
/// The MRTR prompt (`prompts/get`).
pub const PROMPT: &str = "test_input_required_result_prompt";

/// What the client sent back on this round.
struct Round<'a> {
    responses: Option<&'a Map<String, Value>>,
    state: Option<&'a str>,
    /// What a sealed state of this request is bound to.
    binding: String,
}

impl<'a> Round<'a> {
    fn read(
        method: &str,
        name: &str,
        params: &'a Map<String, Value>,
    ) -> Result<Round<'a>, RpcError> {
        let responses = match params.get("inputResponses") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => Some(r),
            Some(_) => return Err(RpcError::invalid_params("inputResponses must be an object")),
        };
        let state = match params.get("requestState") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(RpcError::invalid_params("requestState must be a string")),
        };
        let args = match params.get("arguments") {
            Some(Value::Object(a)) => a.clone(),
            _ => Map::new(),
        };
        Ok(Round {
            responses,
            state,
            binding: state::binding(method, name, &args),
        })
    }

    fn response(&self, key: &str) -> Option<&'a Value> {
        self.responses.and_then(|r| r.get(key))
    }

    /// The `content` of an accepted `ElicitResult` under `key`; -32602 when the
    /// value is not an `ElicitResult` at all.
    fn accepted(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, RpcError> {
        match self.response(key) {
            None => Ok(None),
            Some(Value::Object(r)) if r.get("action").is_some_and(Value::is_string) => {
                Ok((r["action"] == "accept")
                    .then(|| r.get("content").and_then(Value::as_object))
                    .flatten())
            }
            Some(_) => Err(RpcError::invalid_params(format!(
                "inputResponses.{key} is not an ElicitResult"
            ))),
        }
    }

    /// A string field of an accepted elicitation.
    fn accepted_str(&self, key: &str, field: &str) -> Result<Option<String>, RpcError> {
        Ok(self
            .accepted(key)?
            .and_then(|c| c.get(field))
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// The text of a `CreateMessageResult` under `key`.
    fn sampled(&self, key: &str) -> Result<Option<String>, RpcError> {
        match self.response(key) {
            None => Ok(None),
            Some(Value::Object(r)) => {
                let content = &r["content"];
                let text = content["text"].as_str().or_else(|| {
                    content
                        .as_array()
                        .and_then(|items| items.iter().find_map(|c| c["text"].as_str()))
                });
                Ok(text.map(str::to_string))
            }
            Some(_) => Err(RpcError::invalid_params(format!(
                "inputResponses.{key} is not a CreateMessageResult"
            ))),
        }
    }

    /// The number of roots of a `ListRootsResult` under `key`.
    fn roots(&self, key: &str) -> Result<Option<usize>, RpcError> {
        match self.response(key) {
            None => Ok(None),
            Some(r) => r["roots"].as_array().map(|a| Some(a.len())).ok_or_else(|| {
                RpcError::invalid_params(format!("inputResponses.{key} is not a ListRootsResult"))
            }),
        }
    }

    /// The payload of the echoed state (`None` without one); -32602 when altered.
    fn opened(&self, ctx: &RequestCtx) -> Result<Option<Value>, RpcError> {
        self.state
            .map(|s| state::open(&ctx.server.state_key, &self.binding, s))
            .transpose()
    }

    fn seal(&self, ctx: &RequestCtx, payload: Value) -> Result<String, RpcError> {
        state::seal(&ctx.server.state_key, &self.binding, payload)
    }
}

fn elicit(message: &str, field: &str, ty: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": { field: { "type": ty } },
                "required": [field],
            },
        },
    })
}

fn sample(text: &str, max_tokens: u64) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
            "maxTokens": max_tokens,
        },
    })
}

fn list_roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn input_required(requests: Vec<(&str, Value)>, state: Option<String>) -> Value {
    let mut result = json!({ "resultType": "input_required" });
    if !requests.is_empty() {
        let map: Map<String, Value> = requests
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        result["inputRequests"] = Value::Object(map);
    }
    if let Some(s) = state {
        result["requestState"] = json!(s);
    }
    result
}

fn text(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

fn require(ctx: &RequestCtx, capabilities: &[&str]) -> Result<(), RpcError> {
    let missing: Vec<&str> = capabilities
        .iter()
        .copied()
        .filter(|c| !ctx.client_supports(c))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_capability(&missing))
    }
}

/// The MRTR tool `name`, or `None` when it is not one.
pub fn run(
    ctx: &RequestCtx,
    name: &str,
    params: &Map<String, Value>,
) -> Option<Result<ToolOutcome, RpcError>> {
    let step: fn(&RequestCtx, &Round) -> Result<Value, RpcError> = match name {
        ELICITATION => elicitation,
        SAMPLING => sampling,
        LIST_ROOTS => roots,
        REQUEST_STATE | TAMPERED_STATE => confirm,
        MULTIPLE_INPUTS => multiple,
        MULTI_ROUND => multi_round,
        CAPABILITIES => capabilities,
        UNCHECKED => unchecked,
        _ => return None,
    };
    Some(
        Round::read("tools/call", name, params)
            .and_then(|round| step(ctx, &round))
            .map(ToolOutcome::Result),
    )
}

/// Stateless: completes as soon as `user_name` holds an accepted name.
fn elicitation(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["elicitation"])?;
    match round.accepted_str("user_name", "name")? {
        Some(name) => Ok(text(format!("Hello, {name}!"))),
        None => Ok(input_required(
            vec![("user_name", elicit("What is your name?", "name", "string"))],
            None,
        )),
    }
}

fn sampling(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["sampling"])?;
    match round.sampled("sample_request")? {
        Some(answer) => Ok(text(format!("Sampling result: {answer}"))),
        None => Ok(input_required(
            vec![(
                "sample_request",
                sample("What is the capital of France?", 100),
            )],
            None,
        )),
    }
}

fn roots(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["roots"])?;
    match round.roots("roots_request")? {
        Some(n) => Ok(text(format!("Found {n} root(s)"))),
        None => Ok(input_required(vec![("roots_request", list_roots())], None)),
    }
}

/// `request_state` and `tampered_state`: a confirmation plus a sealed state that
/// must come back intact.
fn confirm(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["elicitation"])?;
    let state_ok = round.opened(ctx)?.is_some();
    let confirmed = round
        .accepted("confirm")?
        .and_then(|c| c.get("ok"))
        .and_then(Value::as_bool)
        == Some(true);
    if state_ok && confirmed {
        return Ok(text("state-ok: requestState validated"));
    }
    let state = round.seal(ctx, json!({ "kind": "confirm" }))?;
    Ok(input_required(
        vec![("confirm", elicit("Please confirm", "ok", "boolean"))],
        Some(state),
    ))
}

fn multiple(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["elicitation", "sampling", "roots"])?;
    let state_ok = round.opened(ctx)?.is_some();
    let name = round.accepted_str("user_name", "name")?;
    let greeting = round.sampled("greeting")?;
    let roots = round.roots("client_roots")?;
    if let (true, Some(name), Some(greeting), Some(roots)) = (state_ok, &name, &greeting, roots) {
        return Ok(text(format!(
            "Name: {name}; Greeting: {greeting}; Roots: {roots}"
        )));
    }
    let mut asks = Vec::new();
    if name.is_none() || !state_ok {
        asks.push(("user_name", elicit("What is your name?", "name", "string")));
    }
    if greeting.is_none() || !state_ok {
        asks.push(("greeting", sample("Generate a greeting", 50)));
    }
    if roots.is_none() || !state_ok {
        asks.push(("client_roots", list_roots()));
    }
    let state = round.seal(ctx, json!({ "kind": "multiple" }))?;
    Ok(input_required(asks, Some(state)))
}

fn multi_round(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    require(ctx, &["elicitation"])?;
    let step1 = || elicit("Step 1: What is your name?", "name", "string");
    let step2 = || elicit("Step 2: What is your favorite color?", "color", "string");
    let Some(payload) = round.opened(ctx)? else {
        let state = round.seal(ctx, json!({ "round": 1 }))?;
        return Ok(input_required(vec![("step1", step1())], Some(state)));
    };
    match (payload["round"].as_u64(), payload["name"].as_str()) {
        (Some(2), Some(name)) => match round.accepted_str("step2", "color")? {
            Some(color) => Ok(text(format!(
                "Multi-round complete for {name} who likes {color}"
            ))),
            None => {
                let state = round.seal(ctx, json!({ "round": 2, "name": name }))?;
                Ok(input_required(vec![("step2", step2())], Some(state)))
            }
        },
        _ => match round.accepted_str("step1", "name")? {
            Some(name) => {
                let state = round.seal(ctx, json!({ "round": 2, "name": name }))?;
                Ok(input_required(vec![("step2", step2())], Some(state)))
            }
            None => {
                let state = round.seal(ctx, json!({ "round": 1 }))?;
                Ok(input_required(vec![("step1", step1())], Some(state)))
            }
        },
    }
}

/// No capability check: an elicitation, then done.
fn unchecked(_ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    match round.accepted_str("anyway", "ok")? {
        Some(ok) => Ok(text(format!("unchecked: {ok}"))),
        None => Ok(input_required(
            vec![("anyway", elicit("Asked anyway", "ok", "string"))],
            None,
        )),
    }
}

/// Asks only with what the client declared: `elicit_input` needs elicitation,
/// `sample_input` sampling.
fn capabilities(ctx: &RequestCtx, round: &Round) -> Result<Value, RpcError> {
    if round.opened(ctx)?.is_some() {
        if let Some(responses) = round.responses.filter(|r| !r.is_empty()) {
            let keys: Vec<&str> = responses.keys().map(String::as_str).collect();
            return Ok(text(format!(
                "capabilities-ok: received {}",
                keys.join(", ")
            )));
        }
    }
    let mut asks = Vec::new();
    if ctx.client_supports("elicitation") {
        asks.push((
            "elicit_input",
            elicit("Please provide input", "input", "string"),
        ));
    }
    if ctx.client_supports("sampling") {
        asks.push(("sample_input", sample("Sample request", 50)));
    }
    if asks.is_empty() {
        return Ok(text(
            "capabilities-ok: the client declared neither elicitation nor sampling",
        ));
    }
    let state = round.seal(ctx, json!({ "kind": "capabilities" }))?;
    Ok(input_required(asks, Some(state)))
}

/// `prompts/list` entry of the MRTR prompt.
pub fn prompt_definition() -> Value {
    json!({
        "name": PROMPT,
        "title": "Input-Required Prompt",
        "description": "MRTR on prompts/get: asks for the context to use",
    })
}

/// `prompts/get` of the MRTR prompt.
pub fn prompt(ctx: &RequestCtx, params: &Map<String, Value>) -> Result<Value, RpcError> {
    require(ctx, &["elicitation"])?;
    let round = Round::read("prompts/get", PROMPT, params)?;
    match round.accepted_str("user_context", "context")? {
        Some(context) => Ok(json!({
            "description": "MRTR on prompts/get",
            "messages": [{
                "role": "user",
                "content": { "type": "text", "text": format!("Prompt with context: {context}") },
            }],
        })),
        None => Ok(input_required(
            vec![(
                "user_context",
                elicit("What context should the prompt use?", "context", "string"),
            )],
            None,
        )),
    }
}
