//! A 2025 backend's requests to the client (elicitation, sampling, roots), bridged to a
//! 2026-07-28 client as input-required results (`crate::mcp::bridge` in the gateway):
//! the client retries with `inputResponses` and the held call goes on at the backend.
//! Real `mcp-mock` processes; the client is this test, speaking the modern wire.

use crate::common::*;
use crate::modern::{meta, send};
use serde_json::{json, Value};

/// Everything a client that answers every kind of input request declares.
fn all_caps() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {}})
}

/// A tools/call of `tool` (arguments `{}`), with `extra` params (a retry's).
fn call(gw: &Proc, id: i64, tool: &str, caps: Value, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": {}, "_meta": meta(caps)});
    if let (Value::Object(p), Value::Object(e)) = (&mut params, extra) {
        p.extend(e);
    }
    let a = send(gw, id, "tools/call", params, &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    a.response(&json!(id))
}

fn legacy_backend(server_extra: &str) -> (Proc, Proc) {
    let old = spawn_mock("old", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("old", &old.url, "")], server_extra));
    (old, gw)
}

fn round(result: &Value) -> (Value, String) {
    assert_eq!(result["result"]["resultType"], "input_required", "{result}");
    let state = result["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("no requestState: {result}"))
        .to_string();
    (result["result"]["inputRequests"].clone(), state)
}

#[test]
fn a_modern_client_answers_a_legacy_backends_elicitation_by_retrying() {
    let (_old, gw) = legacy_backend("");
    let first = call(
        &gw,
        1,
        "old__test_elicitation",
        all_caps(),
        json!({"arguments": {"message": "Who?"}}),
    );
    let (asks, state) = round(&first);
    let keys: Vec<&String> = asks.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 1, "{asks}");
    let key = keys[0].clone();
    assert_eq!(asks[&key]["method"], "elicitation/create", "{asks}");
    assert_eq!(asks[&key]["params"]["message"], "Who?", "{asks}");
    let answer = json!({"action": "accept", "content": {"username": "ana"}});
    let done = call(
        &gw,
        2,
        "old__test_elicitation",
        all_caps(),
        json!({"arguments": {"message": "Who?"}, "inputResponses": {key: answer}, "requestState": state}),
    );
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    let text = text_of(&done);
    assert!(
        text.contains("action=accept") && text.contains("ana"),
        "{text}"
    );
}

#[test]
fn a_two_round_legacy_tool_completes_over_two_retries() {
    let (_old, gw) = legacy_backend("");
    let (asks, state) = round(&call(&gw, 1, "old__confirm_twice", all_caps(), json!({})));
    assert_eq!(asks["r0"]["method"], "elicitation/create", "{asks}");
    let r1 = call(
        &gw,
        2,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": {"r0": {"action": "accept", "content": {"name": "Ana"}}}, "requestState": state}),
    );
    let (asks, state2) = round(&r1);
    assert_eq!(asks["r0"]["method"], "sampling/createMessage", "{asks}");
    assert_eq!(
        asks["r0"]["params"]["messages"][0]["content"]["text"],
        "Greet Ana"
    );
    let sampled = json!({"role": "assistant", "model": "test", "stopReason": "endTurn",
        "content": {"type": "text", "text": "Hello Ana"}});
    let done = call(
        &gw,
        3,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": {"r0": sampled}, "requestState": state2}),
    );
    assert_eq!(text_of(&done), "name=Ana; sampled=Hello Ana", "{done}");
    // A state is good for one retry: the call it held has gone on.
    let again = call(
        &gw,
        4,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": {"r0": sampled}, "requestState": state2}),
    );
    assert_eq!(again["error"]["code"], -32602, "{again}");
}

#[test]
fn roots_and_sampling_requests_are_bridged_too() {
    let (_old, gw) = legacy_backend("");
    let (asks, state) = round(&call(&gw, 1, "old__list_roots", all_caps(), json!({})));
    assert_eq!(asks["r0"]["method"], "roots/list", "{asks}");
    let roots = json!({"roots": [{"uri": "file:///work", "name": "work"}]});
    let done = call(
        &gw,
        2,
        "old__list_roots",
        all_caps(),
        json!({"inputResponses": {"r0": roots}, "requestState": state}),
    );
    assert!(text_of(&done).contains("file:///work"), "{done}");
    let (asks, _) = round(&call(
        &gw,
        3,
        "old__test_sampling",
        all_caps(),
        json!({"arguments": {"prompt": "2+2?"}}),
    ));
    assert_eq!(asks["r0"]["method"], "sampling/createMessage", "{asks}");
}

#[test]
fn a_client_without_the_capability_is_never_asked() {
    let (_old, gw) = legacy_backend("");
    // No elicitation capability: the backend's request is refused at the backend, and
    // its call ends with its own answer to that.
    let r = call(
        &gw,
        1,
        "old__confirm_twice",
        json!({"sampling": {}}),
        json!({}),
    );
    assert_ne!(r["result"]["resultType"], "input_required", "{r}");
    assert!(r.to_string().contains("elicitation failed"), "{r}");
}

#[test]
fn tampered_expired_foreign_and_incomplete_retries_are_refused() {
    let (_old, gw) = legacy_backend("held_call_ttl_s = 2");
    let (_, state) = round(&call(&gw, 1, "old__confirm_twice", all_caps(), json!({})));
    let accept = json!({"r0": {"action": "accept", "content": {"name": "Ana"}}});
    // Tampered: one character changed.
    let mut bytes = state.clone().into_bytes();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let r = call(
        &gw,
        2,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": accept, "requestState": tampered}),
    );
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r.to_string().contains("not one this gateway issued"), "{r}");
    // Another call (other arguments) presenting it.
    let r = call(
        &gw,
        3,
        "old__confirm_twice",
        all_caps(),
        json!({"arguments": {"x": 1}, "inputResponses": accept, "requestState": state}),
    );
    assert!(r.to_string().contains("another call"), "{r}");
    // Missing the response: refused, and the call stays held for a proper retry.
    let r = call(
        &gw,
        4,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": {}, "requestState": state}),
    );
    assert!(
        r.to_string().contains("inputResponses lacks \\\"r0\\\""),
        "{r}"
    );
    let r = call(
        &gw,
        5,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": accept, "requestState": state}),
    );
    let (_, state2) = round(&r);
    // Expired: the state's time (2 s) passes before the retry.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    wait_until(std::time::Duration::from_secs(5), || {
        std::time::Instant::now() >= until
    });
    let r = call(
        &gw,
        6,
        "old__confirm_twice",
        all_caps(),
        json!({"inputResponses": {"r0": {}}, "requestState": state2}),
    );
    assert!(r.to_string().contains("expired"), "{r}");
}
