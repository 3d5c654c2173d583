//! Resource subscriptions across the eras: a 2025 client's `resources/subscribe` at a
//! 2026-07-28 backend (which has none: the gateway listens upstream with the URIs) and
//! a 2026-07-28 client's `resourceSubscriptions` at one; updates reach the client's
//! stream, and stop after `resources/unsubscribe`; a listen is acknowledged only once
//! the backends listen. Real `mcp-mock` processes.

use crate::common::*;
use crate::modern::{listen, notified, send, sse_reader};
use serde_json::{json, Value};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const WATCHED: &str = "test://watched-resource";
const UPDATED: &str = "notifications/resources/updated";

fn modern_backend() -> (Proc, Proc) {
    let new = spawn_mock("new", &["--no-dynamic", "--protocol", "modern"]);
    let gw = spawn_gateway(&gateway_config(&[("new", &new.url, "")], ""));
    (new, gw)
}

/// A 2025 session's GET stream.
fn get_stream(cl: &Client) -> Receiver<Value> {
    let resp = blocking()
        .get(&cl.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", cl.session.clone().expect("session"))
        .send()
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    sse_reader(resp)
}

/// The mock changes its watched resource (and says so to its listen streams).
fn touch(gw: &Proc) {
    let call = json!({"name": "new__test_trigger_resource_update", "arguments": {}});
    let a = send(gw, 9, "tools/call", call, &[]);
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn a_legacy_clients_subscription_at_a_modern_backend_reaches_its_get_stream() {
    let (_new, gw) = modern_backend();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let events = get_stream(&cl);
    let r = cl.request("resources/subscribe", json!({"uri": WATCHED}));
    assert_eq!(r["result"], json!({}), "{r}");
    let n = notified(&events, UPDATED, || touch(&gw));
    assert_eq!(n["params"]["uri"], WATCHED, "{n}");

    // Unsubscribed: once the gateway listens again without it, updates stop. Each try
    // changes the resource and then the tool list: the list change arriving with no
    // update before it shows the new listen is in place.
    let r = cl.request("resources/unsubscribe", json!({"uri": WATCHED}));
    assert_eq!(r["result"], json!({}), "{r}");
    let start = Instant::now();
    loop {
        touch(&gw);
        let marker = json!({"name": "new__test_trigger_tool_change", "arguments": {}});
        send(&gw, 10, "tools/call", marker, &[]);
        let mut updated = false;
        let deadline = Instant::now() + Duration::from_secs(2);
        let marked = loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break false;
            };
            match events.recv_timeout(left) {
                Ok(m) if m["method"] == UPDATED => updated = true,
                Ok(m) if m["method"] == "notifications/tools/list_changed" => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        if marked && !updated {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "updates still arrive after resources/unsubscribe"
        );
    }
}

#[test]
fn a_modern_clients_resource_subscriptions_reach_a_modern_backend() {
    let (_new, gw) = modern_backend();
    let events = listen(&gw, json!({"resourceSubscriptions": [WATCHED]}));
    let n = notified(&events, UPDATED, || touch(&gw));
    assert_eq!(n["params"]["uri"], WATCHED, "{n}");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{n}"
    );
}

/// A modern client's listen is acknowledged only once every backend listens: a change
/// made right after the acknowledgement reaches the stream, from a modern HTTP backend
/// and a modern STDIO one that are both slow to open their own listen streams. Each
/// change is made once (no retry), so one lost in between fails the test.
#[test]
fn a_change_made_after_the_acknowledgement_is_not_lost() {
    // Slow by different amounts: waiting for one must not pass for waiting for both.
    let slow = |ms: &'static str| {
        [
            "--no-dynamic",
            "--protocol",
            "modern",
            "--listen-delay-ms",
            ms,
        ]
    };
    let web = spawn_mock("web", &slow("1000"));
    let mut cfg = gateway_config(&[("web", &web.url, "")], "");
    cfg.push_str(&format!(
        "\n[[backend]]\nname = \"pipe\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"pipe\", {}]\ntimeout_ms = 10000\n",
        mock_bin().display(),
        slow("2500").map(|a| format!("\"{a}\"")).join(", ")
    ));
    let gw = spawn_gateway(&cfg);
    let events = listen(&gw, json!({"toolsListChanged": true}));
    let ack = events
        .recv_timeout(Duration::from_secs(20))
        .expect("acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    for (id, backend) in [(1, "web"), (2, "pipe")] {
        let call = json!({"name": format!("{backend}__notify_list_changed"), "arguments": {}});
        let a = send(&gw, id, "tools/call", call, &[]);
        assert_eq!(a.status, 200, "{}", a.body);
        let n = events
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{backend}'s change did not reach the stream: {e}"));
        assert_eq!(n["method"], "notifications/tools/list_changed", "{n}");
    }
}
