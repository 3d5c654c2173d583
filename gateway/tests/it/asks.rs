//! A 2026-07-28 backend's input-required results (multi round-trip requests), bridged
//! to a 2025 client as server-to-client requests on the call's stream
//! (`crate::mcp::asks` in the gateway): the client answers them like any request and
//! sees one call with one result, however many rounds the backend asks. Real
//! `mcp-mock` processes; the client is this test, speaking the 2025-11-25 wire.

use crate::common::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

/// A gateway in front of one modern mock, `new`.
fn modern_backend(server_extra: &str) -> (Proc, Proc) {
    let new = spawn_mock("new", &["--no-dynamic", "--protocol", "modern"]);
    let gw = spawn_gateway(&gateway_config(&[("new", &new.url, "")], server_extra));
    (new, gw)
}

fn legacy_client(gw: &Proc, caps: Value) -> Client {
    let mut cl = Client::new(&gw.url);
    cl.initialize_with(caps);
    cl
}

fn all_caps() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {"listChanged": true}})
}

/// What a 2025 client answers each kind of request with.
fn answer_for(req: &Value) -> Value {
    match req["method"].as_str() {
        Some("elicitation/create") => {
            let props = req["params"]["requestedSchema"]["properties"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let content: serde_json::Map<String, Value> = props
                .keys()
                .map(|k| (k.clone(), json!(format!("ana-{k}"))))
                .collect();
            json!({"result": {"action": "accept", "content": content}})
        }
        Some("sampling/createMessage") => json!({"result": {"role": "assistant",
            "content": {"type": "text", "text": "Paris"}, "model": "m"}}),
        Some("roots/list") => {
            json!({"result": {"roots": [{"uri": "file:///work/a", "name": "a"}]}})
        }
        other => panic!("unexpected request {other:?}: {req}"),
    }
}

/// The SSE stream of request `method` (id 77), read message by message.
struct CallStream {
    resp: reqwest::blocking::Response,
    buf: String,
    taken: usize,
}

impl CallStream {
    fn open(cl: &Client, method: &str, params: Value) -> CallStream {
        let resp = blocking()
            .post(&cl.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", &cl.version)
            .header("mcp-session-id", cl.session.clone().expect("session"))
            .body(
                json!({"jsonrpc": "2.0", "id": 77, "method": method, "params": params}).to_string(),
            )
            .send()
            .expect("POST");
        assert_eq!(resp.status(), 200);
        CallStream {
            resp,
            buf: String::new(),
            taken: 0,
        }
    }

    /// The next message on the stream (panics if it ends first).
    fn next(&mut self) -> Value {
        loop {
            if let Some(m) = sse_messages(&self.buf).into_iter().nth(self.taken) {
                self.taken += 1;
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = self.resp.read(&mut chunk).expect("read");
            assert!(n > 0, "stream ended early: {}", self.buf);
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }
}

fn is_request(m: &Value) -> bool {
    m.get("method").is_some() && m.get("id").is_some()
}

/// Sends request `method` with `params` and reads its stream to the end: every
/// server-to-client request on it is answered, in `cl`'s session, with
/// `answer(request)` (a JSON-RPC response without jsonrpc/id); returns the requests
/// seen and the final response.
fn call_answering_all(
    cl: &Client,
    method: &str,
    params: Value,
    mut answer: impl FnMut(&Value) -> Value,
) -> (Vec<Value>, Value) {
    let mut stream = CallStream::open(cl, method, params);
    let mut seen = Vec::new();
    loop {
        let m = stream.next();
        if is_request(&m) {
            let mut a = answer(&m);
            a["jsonrpc"] = json!("2.0");
            a["id"] = m["id"].clone();
            let r = cl.post(&a);
            assert_eq!(r.status, 202, "answer to {m}: {}", r.body);
            seen.push(m);
        } else if m["id"] == 77 {
            return (seen, m);
        }
    }
}

fn call_tool(cl: &Client, tool: &str) -> (Vec<Value>, Value) {
    call_answering_all(
        cl,
        "tools/call",
        json!({"name": tool, "arguments": {}}),
        answer_for,
    )
}

#[test]
fn a_legacy_client_answers_a_modern_backends_elicitation_on_the_calls_stream() {
    let (_new, gw) = modern_backend("");
    let cl = legacy_client(&gw, all_caps());
    let (asked, done) = call_tool(&cl, "new__test_input_required_result_elicitation");
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["method"], "elicitation/create");
    assert_eq!(asked[0]["params"]["message"], "What is your name?");
    assert!(
        asked[0]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("mcpgw-ask:")),
        "{}",
        asked[0]
    );
    assert_eq!(text_of(&done), "Hello, ana-name!", "{done}");
    // The 2025 client sees a 2025 result: one call, one answer.
    assert!(done["result"].get("inputRequests").is_none(), "{done}");
}

#[test]
fn two_rounds_three_kinds_and_a_prompt_complete_for_a_legacy_client() {
    let (_new, gw) = modern_backend("");
    let cl = legacy_client(&gw, all_caps());
    let (asked, done) = call_tool(&cl, "new__test_input_required_result_multi_round");
    let messages: Vec<&str> = asked
        .iter()
        .map(|r| r["params"]["message"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        messages,
        [
            "Step 1: What is your name?",
            "Step 2: What is your favorite color?"
        ]
    );
    assert_eq!(
        text_of(&done),
        "Multi-round complete for ana-name who likes ana-color"
    );

    // Elicitation, sampling and roots in one round (and the backend's sealed state).
    let (asked, done) = call_tool(&cl, "new__test_input_required_result_multiple_inputs");
    let mut methods: Vec<&str> = asked
        .iter()
        .map(|r| r["method"].as_str().unwrap_or_default())
        .collect();
    methods.sort();
    assert_eq!(
        methods,
        ["elicitation/create", "roots/list", "sampling/createMessage"]
    );
    assert_eq!(
        text_of(&done),
        "Name: ana-name; Greeting: Paris; Roots: 1",
        "{done}"
    );

    let (_, done) = call_answering_all(
        &cl,
        "prompts/get",
        json!({"name": "new__test_input_required_result_prompt"}),
        answer_for,
    );
    assert_eq!(
        done["result"]["messages"][0]["content"]["text"], "Prompt with context: ana-context",
        "{done}"
    );
}

#[test]
fn a_request_the_client_cannot_take_ends_the_call_with_missing_capability() {
    let (_new, gw) = modern_backend("");
    // Declares sampling only; this backend asks for elicitation anyway.
    let cl = legacy_client(&gw, json!({"sampling": {}}));
    let (asked, done) = call_tool(&cl, "new__ask_whatever_the_client_declared");
    assert!(asked.is_empty(), "the client was asked: {asked:?}");
    assert_eq!(done["error"]["code"], -32021, "{done}");
    assert_eq!(
        done["error"]["data"]["requiredCapabilities"],
        json!({"elicitation": {}}),
        "{done}"
    );
    // With the capability, the same tool completes.
    let cl = legacy_client(&gw, all_caps());
    let (_, done) = call_tool(&cl, "new__ask_whatever_the_client_declared");
    assert_eq!(text_of(&done), "unchecked: ana-ok", "{done}");
}

#[test]
fn a_clients_error_answer_ends_the_call_with_it() {
    let (_new, gw) = modern_backend("");
    let cl = legacy_client(&gw, all_caps());
    let (_, done) = call_answering_all(
        &cl,
        "tools/call",
        json!({"name": "new__test_input_required_result_sampling", "arguments": {}}),
        |_| json!({"error": {"code": -1, "message": "the user said no"}}),
    );
    assert_eq!(done["error"]["code"], -1, "{done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the user said no"), "{done}");
}

#[test]
fn an_input_request_is_answered_only_from_its_session_and_in_time() {
    let (_new, gw) = modern_backend("held_call_ttl_s = 2");
    let cl = legacy_client(&gw, all_caps());
    let other = legacy_client(&gw, all_caps());
    // Another session's answer is refused (400) and the call still waits for its own.
    let (_, done) = call_answering_all(
        &cl,
        "tools/call",
        json!({"name": "new__test_input_required_result_elicitation", "arguments": {}}),
        |req| {
            let stolen = other.post(&json!({"jsonrpc": "2.0", "id": req["id"],
                "result": {"action": "accept", "content": {"name": "mallory"}}}));
            assert_eq!(stolen.status, 400, "{}", stolen.body);
            answer_for(req)
        },
    );
    assert_eq!(text_of(&done), "Hello, ana-name!", "{done}");
    // An id that waits nowhere.
    let r = cl.post(&json!({"jsonrpc": "2.0", "id": "mcpgw-ask:999999", "result": {}}));
    assert_eq!(r.status, 400, "{}", r.body);

    // Unanswered: the call ends after server.held_call_ttl_s (2 s), and a late answer
    // is refused.
    let mut stream = CallStream::open(
        &cl,
        "tools/call",
        json!({"name": "new__test_input_required_result_elicitation", "arguments": {}}),
    );
    let asked = stream.next();
    assert!(is_request(&asked), "{asked}");
    let start = Instant::now();
    let done = stream.next();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(done["id"], 77, "{done}");
    assert!(
        done["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("server.held_call_ttl_s")),
        "{done}"
    );
    let late =
        cl.post(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "decline"}}));
    assert_eq!(late.status, 400, "{}", late.body);
}
