//! mcp-mock speaking MCP 2026-07-28 (`--protocol modern` and `--protocol mixed`),
//! over HTTP and stdio: discovery, the validation order, MRTR, listen streams,
//! cancellation by closing the stream, era selection.

use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::common::{is_sse, json_body, tool_text, within, Mock, Sse};
use crate::mock_stdio::StdioMock;

const V: &str = "2026-07-28";

fn meta(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientInfo": { "name": "it", "version": "1" },
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

fn default_caps() -> Value {
    json!({ "sampling": {}, "elicitation": {}, "roots": { "listChanged": true } })
}

/// A modern request: `params` gets the default `_meta` unless it has one.
fn request(id: u64, method: &str, mut params: Value) -> Value {
    if params.get("_meta").is_none() {
        params["_meta"] = meta(default_caps());
    }
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// POSTs `message` with the headers a modern client sends (`Mcp-Name` from the
/// body), then `extra` (which replaces headers of the same name).
async fn post(mock: &Mock, message: &Value, extra: &[(&str, &str)]) -> Response<Incoming> {
    let method = message["method"].as_str().unwrap_or_default().to_string();
    let name = message["params"]["name"]
        .as_str()
        .or_else(|| message["params"]["uri"].as_str())
        .map(str::to_string);
    let mut headers: Vec<(&str, &str)> = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", V),
        ("mcp-method", &method),
    ];
    if let Some(n) = &name {
        headers.push(("mcp-name", n));
    }
    for (k, v) in extra {
        headers.retain(|(h, _)| !h.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            headers.push((k, v));
        }
    }
    mock.send(
        "POST",
        "/mcp",
        &headers,
        Some(message.to_string().into_bytes()),
    )
    .await
}

/// The response message of a modern POST (JSON or SSE) and its HTTP status.
async fn call(mock: &Mock, message: &Value, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = post(mock, message, extra).await;
    let status = resp.status();
    if is_sse(&resp) {
        let mut sse = Sse::new(resp);
        loop {
            let m = sse
                .next_message()
                .await
                .expect("stream ended before the response");
            if m.get("method").is_none() {
                return (status, m);
            }
        }
    }
    (status, json_body(resp).await)
}

#[tokio::test]
async fn discover_and_the_validation_order() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    let (status, discover) = call(&mock, &request(1, "server/discover", json!({})), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let r = &discover["result"];
    assert_eq!(r["supportedVersions"], json!([V]));
    assert_eq!(r["resultType"], "complete");
    assert!(r["ttlMs"].is_u64() && r["cacheScope"] == "public", "{r}");
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mock"
    );
    assert_eq!(r["capabilities"]["tools"]["listChanged"], true);

    // 1. No MCP-Protocol-Version header: -32020.
    let m = request(2, "tools/list", json!({}));
    let (status, e) = call(&mock, &m, &[("mcp-protocol-version", "")]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020))
    );
    // 2. No _meta / no clientCapabilities: -32602, with the request's id.
    let bare = json!({ "jsonrpc": "2.0", "id": 3, "method": "server/discover", "params": {} });
    let (status, e) = call(&mock, &bare, &[]).await;
    assert_eq!(
        (status, e["error"]["code"].clone(), e["id"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32602), json!(3))
    );
    let no_caps = request(
        4,
        "server/discover",
        json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": V } }),
    );
    assert_eq!(call(&mock, &no_caps, &[]).await.1["error"]["code"], -32602);
    // 3. Header and _meta disagree: -32020.
    let mut v999 = meta(json!({}));
    v999["io.modelcontextprotocol/protocolVersion"] = json!("v999.0.0");
    let m = request(5, "server/discover", json!({ "_meta": v999 }));
    let (status, e) = call(&mock, &m, &[]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020))
    );
    // 4. Both name an unsupported version: -32022 with supported/requested.
    let (status, e) = call(&mock, &m, &[("mcp-protocol-version", "v999.0.0")]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32022))
    );
    assert_eq!(
        e["error"]["data"],
        json!({ "supported": [V], "requested": "v999.0.0" })
    );
    // 5. Mcp-Method disagrees with the body: -32020.
    let m = request(6, "tools/list", json!({}));
    let (status, e) = call(&mock, &m, &[("mcp-method", "prompts/list")]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020))
    );
}

#[tokio::test]
async fn methods_names_and_capabilities() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    // 6. Removed and unknown methods: 404 with -32601.
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "unknown/method",
    ] {
        let (status, e) = call(&mock, &request(7, method, json!({})), &[]).await;
        assert_eq!(
            (status, e["error"]["code"].clone()),
            (StatusCode::NOT_FOUND, json!(-32601)),
            "{method}"
        );
    }
    // Mcp-Name: must match the body, plain or in the Base64 sentinel form.
    let m = request(
        8,
        "tools/call",
        json!({ "name": "echo", "arguments": { "text": "hi" } }),
    );
    let (status, e) = call(&mock, &m, &[("mcp-name", "whoami")]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020))
    );
    let (status, ok) = call(&mock, &m, &[("mcp-name", "=?base64?ZWNobw==?=")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tool_text(&ok), "hi");
    assert_eq!(ok["result"]["resultType"], "complete");
    // x-mcp-header arguments travel in Mcp-Param-*: required, decoded, compared.
    let m = request(
        10,
        "tools/call",
        json!({ "name": "test_custom_header", "arguments": { "region": "Hello" } }),
    );
    let (status, e) = call(&mock, &m, &[]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32020))
    );
    let (status, ok) = call(&mock, &m, &[("mcp-param-region", "=?base64?SGVsbG8=?=")]).await;
    assert_eq!(
        (status, tool_text(&ok)),
        (StatusCode::OK, "region=Hello".to_string())
    );
    let (status, _) = call(&mock, &m, &[("mcp-param-region", "=?base64?SGVsbG8?=")]).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Base64 without its padding is refused"
    );
    // A capability the request did not declare: 400 with -32021 and the object form.
    let m = request(
        9,
        "tools/call",
        json!({ "name": "test_missing_capability", "_meta": meta(json!({})) }),
    );
    let (status, e) = call(&mock, &m, &[]).await;
    assert_eq!(
        (status, e["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(-32021))
    );
    assert_eq!(
        e["error"]["data"]["requiredCapabilities"],
        json!({ "sampling": {} })
    );
    // No GET stream and no session in the modern era.
    for method in ["GET", "DELETE"] {
        let resp = mock
            .send(method, "/mcp", &[("accept", "text/event-stream")], None)
            .await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
}

#[tokio::test]
async fn mrtr_round_trip_and_tampered_state() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    let tool = "test_input_required_result_multi_round";
    let (_, r1) = call(
        &mock,
        &request(1, "tools/call", json!({ "name": tool, "arguments": {} })),
        &[],
    )
    .await;
    let r1 = &r1["result"];
    assert_eq!(r1["resultType"], "input_required");
    assert_eq!(r1["inputRequests"]["step1"]["method"], "elicitation/create");
    let state1 = r1["requestState"].as_str().expect("state").to_string();

    let retry = |id: u64, key: &str, content: Value, state: &str| {
        request(
            id,
            "tools/call",
            json!({
                "name": tool, "arguments": {},
                "inputResponses": { key: { "action": "accept", "content": content } },
                "requestState": state,
            }),
        )
    };
    let (_, r2) = call(
        &mock,
        &retry(2, "step1", json!({ "name": "Alice" }), &state1),
        &[],
    )
    .await;
    let r2 = &r2["result"];
    assert_eq!(r2["resultType"], "input_required");
    assert!(r2["inputRequests"]["step2"].is_object(), "{r2}");
    let state2 = r2["requestState"].as_str().expect("state 2").to_string();
    assert_ne!(state1, state2);
    let (_, r3) = call(
        &mock,
        &retry(3, "step2", json!({ "color": "blue" }), &state2),
        &[],
    )
    .await;
    assert_eq!(r3["result"]["resultType"], "complete");
    assert_eq!(
        tool_text(&r3),
        "Multi-round complete for Alice who likes blue"
    );

    // An altered state, or one sealed for another tool, is refused.
    let tampered = format!("{state2}-TAMPERED");
    let (status, e) = call(
        &mock,
        &retry(4, "step2", json!({ "color": "red" }), &tampered),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["error"]["code"], -32602, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("integrity")));
    let other = request(
        5,
        "tools/call",
        json!({
            "name": "test_input_required_result_request_state", "arguments": {},
            "inputResponses": { "confirm": { "action": "accept", "content": { "ok": true } } },
            "requestState": state2,
        }),
    );
    assert_eq!(call(&mock, &other, &[]).await.1["error"]["code"], -32602);

    // Only the capabilities the request declared are asked for.
    let caps = request(
        6,
        "tools/call",
        json!({
            "name": "test_input_required_result_capabilities", "_meta": meta(json!({ "sampling": {} })),
        }),
    );
    let (_, r) = call(&mock, &caps, &[]).await;
    let asks = r["result"]["inputRequests"].as_object().expect("asks");
    assert!(
        asks.values().all(|a| a["method"] != "elicitation/create"),
        "{r}"
    );
    assert!(!asks.is_empty());
}

#[tokio::test]
async fn listen_acknowledges_and_delivers_triggered_changes() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    let open = |id: u64, filter: Value| {
        request(
            id,
            "subscriptions/listen",
            json!({ "notifications": filter }),
        )
    };
    let mut tools =
        Sse::new(post(&mock, &open(41, json!({ "toolsListChanged": true })), &[]).await);
    let ack = tools.next_message().await.expect("ack");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        41
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({ "toolsListChanged": true })
    );
    let mut prompts =
        Sse::new(post(&mock, &open(42, json!({ "promptsListChanged": true })), &[]).await);
    assert_eq!(
        prompts.next_message().await.expect("ack")["method"],
        "notifications/subscriptions/acknowledged"
    );

    let trigger = |id: u64, name: &str| request(id, "tools/call", json!({ "name": name }));
    call(&mock, &trigger(1, "test_trigger_tool_change"), &[]).await;
    call(&mock, &trigger(2, "test_trigger_prompt_change"), &[]).await;
    let n = tools.next_message().await.expect("tools changed");
    assert_eq!(n["method"], "notifications/tools/list_changed");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        41
    );
    // The prompts stream skipped the tool change: its next message is the prompt change.
    let n = prompts.next_message().await.expect("prompts changed");
    assert_eq!(n["method"], "notifications/prompts/list_changed");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        42
    );
}

#[tokio::test]
async fn closing_the_stream_cancels_the_request() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    let mut m = request(
        1,
        "tools/call",
        json!({ "name": "slow", "arguments": { "ms": 600000 } }),
    );
    m["params"]["_meta"]["progressToken"] = json!("p1");
    let mut sse = Sse::new(post(&mock, &m, &[]).await);
    let progress = sse.next_message().await.expect("progress");
    assert_eq!(progress["method"], "notifications/progress");
    drop(sse);
    within("the cancellation to be counted", async {
        loop {
            let health = json_body(mock.send("GET", "/health", &[], None).await).await;
            if health["cancelled"] == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn logging_only_with_a_log_level_and_traces_are_recorded() {
    let mock = Mock::start(&["--protocol", "modern", "--no-dynamic"]).await;
    let quiet = request(1, "tools/call", json!({ "name": "test_logging_tool" }));
    let resp = post(&mock, &quiet, &[]).await;
    assert!(!is_sse(&resp), "nothing to stream without a log level");
    assert_eq!(json_body(resp).await["result"]["resultType"], "complete");
    let mut loud = quiet.clone();
    loud["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!("info");
    let mut sse = Sse::new(post(&mock, &loud, &[]).await);
    assert_eq!(
        sse.next_message().await.expect("log")["method"],
        "notifications/message"
    );

    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut traced = request(2, "tools/list", json!({}));
    traced["params"]["_meta"]["traceparent"] = json!(tp);
    call(&mock, &traced, &[("traceparent", tp)]).await;
    let traces = json_body(mock.send("GET", "/traces", &[], None).await).await;
    assert_eq!(
        traces[0],
        json!({ "method": "tools/list", "header": tp, "meta": tp })
    );
}

#[tokio::test]
async fn mixed_mode_selects_the_era_per_request() {
    let mock = Mock::start(&["--protocol", "mixed", "--no-dynamic"]).await;
    let (session, init) = mock.initialize(json!({})).await;
    assert_eq!(init["protocolVersion"], "2025-11-25");
    let legacy = mock
        .request(
            &session,
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }),
        )
        .await;
    assert!(legacy["result"].get("resultType").is_none());
    let names = |r: &Value| -> Vec<String> {
        r["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(names(&legacy).contains(&"test_sampling".to_string()));
    assert!(!names(&legacy).contains(&"test_missing_capability".to_string()));

    let (status, modern) = call(&mock, &request(2, "tools/list", json!({})), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(modern["result"]["resultType"], "complete");
    assert!(names(&modern).contains(&"test_missing_capability".to_string()));
    assert!(!names(&modern).contains(&"test_sampling".to_string()));
    let (_, discover) = call(&mock, &request(3, "server/discover", json!({})), &[]).await;
    let versions = &discover["result"]["supportedVersions"];
    assert_eq!(versions[0], V);
    assert!(versions
        .as_array()
        .is_some_and(|v| v.contains(&json!("2025-11-25"))));
}

/// A tools list change among `seen`, tagged with listen request `sub`.
fn assert_list_change_of(seen: &[Value], sub: i64) {
    let change = seen
        .iter()
        .find(|m| m["method"] == "notifications/tools/list_changed")
        .unwrap_or_else(|| panic!("no change in {seen:?}"));
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        sub
    );
}

#[tokio::test]
async fn stdio_modern_and_legacy_probe() {
    let mut mock = StdioMock::start(&["--protocol", "modern", "--no-dynamic"]);
    let d = mock
        .request(&request(1, "server/discover", json!({})))
        .await;
    assert_eq!(d["result"]["supportedVersions"], json!([V]));
    let init = mock
        .request(&json!({ "jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "it", "version": "1" } } }))
        .await;
    assert_eq!(init["error"]["code"], -32601);
    assert!(
        init["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(V)),
        "names the versions: {init}"
    );
    let bare = mock
        .request(&json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {} }))
        .await;
    assert_eq!(bare["error"]["code"], -32602);

    mock.send(&request(
        4,
        "subscriptions/listen",
        json!({ "notifications": { "toolsListChanged": true } }),
    ))
    .await;
    let ack = mock.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        4
    );
    mock.send(&request(
        5,
        "tools/call",
        json!({ "name": "test_trigger_tool_change" }),
    ))
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(mock.next().await);
    }
    assert_list_change_of(&seen, 4);
    assert!(seen
        .iter()
        .any(|m| m["id"] == 5 && m["result"]["resultType"] == "complete"));
    // The test kit's notify_list_changed says it on the listen stream too (the only
    // place a modern server may).
    mock.send(&request(
        6,
        "tools/call",
        json!({ "name": "notify_list_changed" }),
    ))
    .await;
    let seen = [mock.next().await, mock.next().await];
    assert_list_change_of(&seen, 4);
    assert!(seen
        .iter()
        .any(|m| m["id"] == 6 && m["result"]["content"][0]["text"] == "ok"));

    // A legacy-only mock answers the modern probe with method-not-found.
    let mut legacy = StdioMock::start(&["--no-dynamic"]);
    let probe = legacy
        .request(&request(1, "server/discover", json!({})))
        .await;
    assert_eq!(probe["error"]["code"], -32601);
}
