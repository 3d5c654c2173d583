//! MCP 2026-07-28 on `/mcp`: stateless requests from modern clients, checked in the
//! transport chapter's order, served by legacy and modern backends alike; and legacy
//! clients reaching modern backends. Real `mcp-mock` processes in both eras.

use crate::common::*;
use serde_json::{json, Value};

const V: &str = "2026-07-28";

/// A legacy mock (`old`) and a modern one (`new`) behind one gateway.
pub(crate) fn both_eras() -> (Proc, Proc, Proc) {
    let old = spawn_mock("old", &["--no-dynamic"]);
    let new = spawn_mock("new", &["--no-dynamic", "--protocol", "modern"]);
    let gw = spawn_gateway(&gateway_config(
        &[("old", &old.url, ""), ("new", &new.url, "")],
        "",
    ));
    (old, new, gw)
}

pub(crate) fn meta(caps: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": caps,
        "io.modelcontextprotocol/clientInfo": {"name": "gateway-tests", "version": "1"},
    })
}

/// Sends one modern request with the headers a conforming client sends; `headers`
/// replace or add to them.
pub(crate) fn send(
    gw: &Proc,
    id: i64,
    method: &str,
    mut params: Value,
    headers: &[(&str, &str)],
) -> Answer {
    if params.get("_meta").is_none() {
        params["_meta"] = meta(json!({}));
    }
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut h: Vec<(&str, &str)> = vec![("mcp-protocol-version", V), ("mcp-method", method)];
    if let (Some(n), "tools/call" | "prompts/get" | "resources/read") = (&name, method) {
        h.push(("mcp-name", n.as_str()));
    }
    for (k, v) in headers {
        h.retain(|(hk, _)| !hk.eq_ignore_ascii_case(k));
        h.push((k, v));
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let cl = Client::new(&gw.url);
    cl.post_raw(serde_json::to_vec(&body).expect("json"), &h)
}

fn error_of(a: &Answer) -> (u16, i64, Value) {
    let v = a.json();
    let code = v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {}", a.body));
    (a.status, code, v)
}

#[test]
fn modern_requests_are_checked_in_the_transport_chapters_order() {
    let (_old, _new, gw) = both_eras();
    // No MCP-Protocol-Version header, but modern _meta: HeaderMismatch.
    let cl = Client::new(&gw.url);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta(json!({}))}});
    let a = cl.post_raw(
        serde_json::to_vec(&body).unwrap(),
        &[("mcp-protocol-version", "")],
    );
    assert_eq!(
        (a.status, a.json()["error"]["code"].as_i64()),
        (400, Some(-32020)),
        "{}",
        a.body
    );
    // _meta without clientCapabilities: Invalid params, with the request's id.
    let p = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": V}});
    let (status, code, v) = error_of(&send(&gw, 2, "server/discover", p, &[]));
    assert_eq!(
        (status, code, v["id"].clone()),
        (400, -32602, json!(2)),
        "{v}"
    );
    // Header and body disagree on the revision.
    let p = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "v999", "io.modelcontextprotocol/clientCapabilities": {}}});
    let (status, code, _) = error_of(&send(&gw, 3, "server/discover", p.clone(), &[]));
    assert_eq!((status, code), (400, -32020));
    // A revision it does not speak: the supported ones, and the one asked for.
    let (status, code, v) = error_of(&send(
        &gw,
        4,
        "server/discover",
        p,
        &[("mcp-protocol-version", "v999")],
    ));
    assert_eq!((status, code), (400, -32022), "{v}");
    assert_eq!(
        v["error"]["data"],
        json!({"supported": [V], "requested": "v999"})
    );
    // Mcp-Method and Mcp-Name must say what the body says (Base64 sentinel decoded).
    let (status, code, _) = error_of(&send(
        &gw,
        5,
        "tools/list",
        json!({}),
        &[("mcp-method", "tools/call")],
    ));
    assert_eq!((status, code), (400, -32020));
    let call = json!({"name": "old__echo", "arguments": {"text": "x"}});
    let (status, code, _) = error_of(&send(
        &gw,
        6,
        "tools/call",
        call.clone(),
        &[("mcp-name", "new__echo")],
    ));
    assert_eq!((status, code), (400, -32020));
    let a = send(
        &gw,
        7,
        "tools/call",
        call,
        &[("mcp-name", "=?base64?b2xkX19lY2hv?=")],
    );
    assert_eq!(text_of(&a.response(&json!(7))), "x", "{}", a.body);
    // Methods the revision removed, and unknown ones: 404 + -32601.
    for (i, m) in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "no/such",
    ]
    .iter()
    .enumerate()
    {
        let (status, code, v) = error_of(&send(&gw, 10 + i as i64, m, json!({}), &[]));
        assert_eq!(
            (status, code, v["id"].clone()),
            (404, -32601, json!(10 + i as i64)),
            "{m}: {v}"
        );
    }
}

#[test]
fn server_discover_merges_the_backends_and_names_the_gateway() {
    let (_old, _new, gw) = both_eras();
    let a = send(&gw, 1, "server/discover", json!({}), &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    let r = &a.response(&json!(1))["result"];
    assert_eq!(r["supportedVersions"], json!([V]));
    assert_eq!(r["resultType"], "complete");
    assert!(r["capabilities"]["tools"].is_object(), "{r}");
    assert!(r["capabilities"]["prompts"].is_object(), "{r}");
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-gateway"
    );
    assert!(r["ttlMs"].is_u64() && r["cacheScope"] == "public", "{r}");
    // No session is handed out.
    assert!(a.headers.get("mcp-session-id").is_none());
}

#[test]
fn a_modern_client_uses_legacy_and_modern_backends_statelessly() {
    let (_old, _new, gw) = both_eras();
    let a = send(&gw, 1, "tools/list", json!({}), &[]);
    let r = &a.response(&json!(1))["result"];
    let names: Vec<&str> = r["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"old__echo") && names.contains(&"new__test_simple_text"),
        "{names:?}"
    );
    // Cache hints: the smallest ttlMs of the pages (a legacy page has none: 0).
    assert_eq!(
        (
            r["resultType"].clone(),
            r["ttlMs"].clone(),
            r["cacheScope"].clone()
        ),
        (json!("complete"), json!(0), json!("public"))
    );
    let a = send(
        &gw,
        2,
        "tools/call",
        json!({"name": "old__echo", "arguments": {"text": "from 2026"}}),
        &[],
    );
    let r = a.response(&json!(2));
    assert_eq!(
        (text_of(&r), r["result"]["resultType"].clone()),
        ("from 2026".to_string(), json!("complete")),
        "{r}"
    );
    let a = send(
        &gw,
        3,
        "tools/call",
        json!({"name": "new__test_simple_text", "arguments": {}}),
        &[],
    );
    assert_eq!(
        text_of(&a.response(&json!(3))),
        "This is a simple text response for testing."
    );
    // A read of a legacy backend's resource gets its cache hints too.
    let list = send(&gw, 4, "resources/list", json!({}), &[]).response(&json!(4));
    let uri = list["result"]["resources"][0]["uri"]
        .as_str()
        .expect("a resource")
        .to_string();
    let read = send(&gw, 5, "resources/read", json!({"uri": uri}), &[]).response(&json!(5));
    assert_eq!(read["result"]["resultType"], "complete", "{read}");
    assert!(
        read["result"]["ttlMs"].is_u64() && read["result"]["cacheScope"].is_string(),
        "{read}"
    );
}

/// A modern client's call keeps its own id where it cannot collide with another's (a
/// modern HTTP backend: an exchange of its own) and goes under one of the gateway's
/// where it could (a legacy backend's upstream session, shared per person and client; a
/// STDIO backend's pipe numbers its calls itself); the client gets its own id back every
/// time.
#[test]
fn a_modern_call_keeps_its_id_only_where_it_cannot_collide() {
    let (_old, _new, gw) = both_eras();
    let pipe = modern_stdio_gateway();
    for (gw, tool, own) in [
        (&gw, "new__whoami", true),
        (&gw, "old__whoami", false),
        (&pipe, "pipe__whoami", false),
    ] {
        let a = send(
            gw,
            41,
            "tools/call",
            json!({"name": tool, "arguments": {}}),
            &[],
        );
        let r = a.response(&json!(41));
        assert_eq!(r["result"]["resultType"], "complete", "{tool}: {r}");
        let who: Value = serde_json::from_str(&text_of(&r)).expect("whoami JSON");
        assert_eq!(
            who["id"] == json!(41),
            own,
            "{tool}: the backend saw {}",
            who["id"]
        );
        if tool == "old__whoami" {
            // The gateway's own numbering: an integer, never the client's 41.
            assert!(who["id"].as_u64().is_some_and(|i| i != 41), "{who}");
        }
    }
}

/// Host and Origin guard a modern request as they guard a 2025 one, whether or not its
/// head names a call that the head's own checks could route.
#[test]
fn dns_rebinding_is_refused_in_the_modern_era_too() {
    let (_old, _new, gw) = both_eras();
    for (method, params) in [
        (
            "tools/call",
            json!({"name": "new__echo", "arguments": {"text": "x"}}),
        ),
        ("tools/list", json!({})),
    ] {
        for (header, value, status) in [
            ("origin", "http://evil.example.com", 403),
            ("host", "evil.example.com", 403),
            ("origin", "http://localhost:5173", 200),
        ] {
            let a = send(&gw, 5, method, params.clone(), &[(header, value)]);
            assert_eq!(
                a.status, status,
                "{method} with {header}: {value}: {}",
                a.body
            );
        }
    }
}

#[test]
fn a_legacy_client_reaches_a_modern_backend() {
    let (_old, _new, gw) = both_eras();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    assert!(cl
        .tool_names()
        .contains(&"new__test_simple_text".to_string()));
    let r = cl.call_tool("new__test_simple_text", json!({}));
    assert_eq!(
        text_of(&r),
        "This is a simple text response for testing.",
        "{r}"
    );
}

#[test]
fn a_modern_backends_refusal_keeps_its_status_for_modern_clients() {
    let (_old, _new, gw) = both_eras();
    let call = json!({"name": "new__test_missing_capability", "arguments": {}});
    let (status, code, v) = error_of(&send(&gw, 1, "tools/call", call, &[]));
    assert_eq!(
        (status, code, v["id"].clone()),
        (400, -32021, json!(1)),
        "{v}"
    );
    assert!(
        v["error"]["data"]["requiredCapabilities"]["sampling"].is_object(),
        "{v}"
    );
    // A legacy client without sampling sees the same error as a JSON-RPC answer.
    let mut cl = Client::new(&gw.url);
    cl.initialize_with(json!({}));
    let r = cl.call_tool("new__test_missing_capability", json!({}));
    assert_eq!(r["error"]["code"], -32021, "{r}");
    // With the capability declared, the call goes through.
    let p = json!({"name": "new__test_missing_capability", "arguments": {}, "_meta": meta(json!({"sampling": {}}))});
    let a = send(&gw, 2, "tools/call", p, &[]);
    assert_eq!(text_of(&a.response(&json!(2))), "Success", "{}", a.body);
}

#[test]
fn input_required_results_pass_through_and_the_retry_reaches_the_backend() {
    let (_old, _new, gw) = both_eras();
    let caps = json!({"elicitation": {}});
    let tool = "new__test_input_required_result_elicitation";
    let p = json!({"name": tool, "arguments": {}, "_meta": meta(caps.clone())});
    let first = send(&gw, 1, "tools/call", p, &[]).response(&json!(1));
    assert_eq!(first["result"]["resultType"], "input_required", "{first}");
    assert_eq!(
        first["result"]["inputRequests"]["user_name"]["method"],
        "elicitation/create"
    );
    let retry = json!({"name": tool, "arguments": {}, "_meta": meta(caps),
        "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Ada"}}}});
    let done = send(&gw, 2, "tools/call", retry, &[]).response(&json!(2));
    assert_eq!(text_of(&done), "Hello, Ada!", "{done}");
    assert_eq!(done["result"]["resultType"], "complete");
}

#[test]
fn the_pass_through_route_refuses_headers_that_differ_from_the_body() {
    let (_old, new, gw) = both_eras();
    let url = gw.url.replace("/mcp", "/backends/new/mcp");
    let cl = Client::new(&url);
    let call = |id: i64, header_name: &str| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
            "name": "test_simple_text", "arguments": {}, "_meta": meta(json!({}))}});
        cl.post_raw(
            serde_json::to_vec(&body).unwrap(),
            &[
                ("mcp-protocol-version", V),
                ("mcp-method", "tools/call"),
                ("mcp-name", header_name),
            ],
        )
    };
    // The balancer (or the backend) would act on the header; the policy on the body.
    let a = call(1, "test_error_handling");
    assert_eq!(
        (a.status, a.json()["error"]["code"].clone()),
        (400, json!(-32020)),
        "{}",
        a.body
    );
    // The gateway refused it (the mock words its own refusal with single quotes).
    let m = a.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(m.contains("\"test_error_handling\""), "{m}");
    let a = call(2, "test_simple_text");
    assert_eq!(
        text_of(&a.response(&json!(2))),
        "This is a simple text response for testing.",
        "{}",
        a.body
    );
    drop(new);
}

#[test]
fn closing_the_stream_cancels_a_legacy_backends_call() {
    let (old, _new, gw) = both_eras();
    let mut m = meta(json!({}));
    m["progressToken"] = json!("p1");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "old__slow", "arguments": {"ms": 60000}, "_meta": m}});
    let mut resp = blocking()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", V)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "old__slow")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .expect("POST");
    // The first event (progress) shows the call is running upstream; then the client
    // goes away.
    let mut first = [0u8; 256];
    let n = std::io::Read::read(&mut resp, &mut first).expect("first event");
    assert!(
        String::from_utf8_lossy(&first[..n]).contains("progress"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(resp);
    let cancelled = || {
        http_get(&format!("{}/health", old.url.trim_end_matches("/mcp")))
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|h| h["cancelled"].as_u64())
            .unwrap_or(0)
    };
    wait_until(std::time::Duration::from_secs(10), || cancelled() >= 1);
}

/// A STDIO backend is asked `server/discover` first: a modern one is then spoken to
/// statelessly (its calls stamped with `_meta`), by modern and legacy clients alike.
#[test]
fn a_modern_stdio_backend_is_discovered_and_used_by_both_eras() {
    let old = spawn_mock("old", &["--no-dynamic"]);
    let mut cfg = gateway_config(&[("old", &old.url, "")], "");
    cfg.push_str(&format!(
        "\n[[backend]]\nname = \"pipe\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"pipe\", \"--no-dynamic\", \"--protocol\", \"modern\"]\ntimeout_ms = 10000\n",
        mock_bin().display()
    ));
    let gw = spawn_gateway(&cfg);
    let a = send(
        &gw,
        1,
        "tools/call",
        json!({"name": "pipe__test_simple_text", "arguments": {}}),
        &[],
    );
    assert_eq!(
        text_of(&a.response(&json!(1))),
        "This is a simple text response for testing.",
        "{}",
        a.body
    );
    // The capability the backend needs is checked there: stamped from the request.
    let (_, code, v) = error_of(&send(
        &gw,
        2,
        "tools/call",
        json!({"name": "pipe__test_missing_capability", "arguments": {}}),
        &[],
    ));
    assert_eq!(code, -32021, "{v}");
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let r = cl.call_tool("pipe__test_simple_text", json!({}));
    assert_eq!(
        text_of(&r),
        "This is a simple text response for testing.",
        "{r}"
    );
    // A modern STDIO server answered discover: the legacy-only tools are not listed.
    assert!(!cl.tool_names().contains(&"pipe__test_sampling".to_string()));
}

/// A gateway in front of one modern STDIO backend, `pipe` (one shared process).
fn modern_stdio_gateway() -> Proc {
    let mut cfg = gateway_config(&[], "");
    cfg.push_str(&format!(
        "\n[[backend]]\nname = \"pipe\"\ntransport = \"stdio\"\ncommand = \"{}\"\nargs = [\"--stdio\", \"--name\", \"pipe\", \"--no-dynamic\", \"--protocol\", \"modern\"]\ntimeout_ms = 10000\n",
        mock_bin().display()
    ));
    spawn_gateway(&cfg)
}

/// The JSON-RPC messages of an SSE response, read on a thread as they arrive.
pub(crate) fn sse_reader(
    mut resp: reqwest::blocking::Response,
) -> std::sync::mpsc::Receiver<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        let mut sent = 0;
        while let Ok(n) = std::io::Read::read(&mut resp, &mut chunk) {
            if n == 0 {
                return;
            }
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            let all = sse_messages(&buf);
            for m in all.iter().skip(sent) {
                if tx.send(m.clone()).is_err() {
                    return;
                }
            }
            sent = all.len();
        }
    });
    rx
}

/// Calls `notify` until a `notifications/tools/list_changed` arrives on `events` (a
/// 2025 client's GET stream has no acknowledgement that says when the gateway's own
/// stream to the backend is open), and returns it.
fn list_change(events: &std::sync::mpsc::Receiver<Value>, notify: impl FnMut()) -> Value {
    notified(events, "notifications/tools/list_changed", notify)
}

/// Calls `notify` until a notification `method` arrives on `events` (within 20 s), and
/// returns it.
pub(crate) fn notified(
    events: &std::sync::mpsc::Receiver<Value>,
    method: &str,
    mut notify: impl FnMut(),
) -> Value {
    let start = std::time::Instant::now();
    loop {
        notify();
        let wait = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while let Some(left) = wait.checked_duration_since(std::time::Instant::now()) {
            match events.recv_timeout(left) {
                Ok(m) if m["method"] == method => return m,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(e) => panic!("stream ended: {e}"),
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no {method} relayed"
        );
    }
}

/// A `subscriptions/listen` (id 77) opting in to `notifications`: its stream's messages.
pub(crate) fn listen(gw: &Proc, notifications: Value) -> std::sync::mpsc::Receiver<Value> {
    let params = json!({"notifications": notifications, "_meta": meta(json!({}))});
    let body =
        json!({"jsonrpc": "2.0", "id": 77, "method": "subscriptions/listen", "params": params});
    let resp = blocking()
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", V)
        .header("mcp-method", "subscriptions/listen")
        .body(serde_json::to_vec(&body).expect("json"))
        .send()
        .expect("POST subscriptions/listen");
    assert_eq!(resp.status().as_u16(), 200);
    sse_reader(resp)
}

/// A modern STDIO server says its changes only on the stream of a `subscriptions/listen`
/// it was sent: the gateway sends one on the pipe and relays what it carries to a
/// modern client's listen stream and a legacy client's GET stream, and sends it again to
/// the process that replaces a crashed one.
#[test]
fn a_modern_stdio_backends_list_changes_reach_both_eras() {
    let gw = modern_stdio_gateway();
    let modern = listen(&gw, json!({"toolsListChanged": true}));
    let ack = modern
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    let mut id = 100;
    let mut notify = || {
        id += 1;
        let call = json!({"name": "pipe__notify_list_changed", "arguments": {}});
        send(&gw, id, "tools/call", call, &[]);
    };
    let n = list_change(&modern, &mut notify);
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{n}"
    );

    // A 2025 client's GET stream gets it too, without the gateway's subscription tag.
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let resp = blocking()
        .get(&gw.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", cl.session.clone().unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let legacy = sse_reader(resp);
    let n = list_change(&legacy, || {
        cl.call_tool("pipe__notify_list_changed", json!({}));
    });
    assert!(n["params"].get("_meta").is_none(), "{n}");

    // The process crashes and is restarted: the new one is sent a listen of its own.
    send(
        &gw,
        2,
        "tools/call",
        json!({"name": "pipe__crash", "arguments": {}}),
        &[],
    );
    wait_until(std::time::Duration::from_secs(15), || {
        let t = &readyz_detail(&gw)["backends"][0]["transport"];
        t["restarts"].as_u64() >= Some(1) && t["live_connections"] == 1
    });
    // What the old process said has been relayed by now: drop it.
    while modern.try_recv().is_ok() {}
    let n = list_change(&modern, &mut notify);
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 77,
        "{n}"
    );
}
