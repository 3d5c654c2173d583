//! mcp-mock over Streamable HTTP, driven as a client would.

use crate::common::{body_bytes, json_body, tool_text, within, Mock, Sse};
use hyper::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn call(id: u64, name: &str, arguments: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": name, "arguments": arguments } })
}

#[tokio::test]
async fn initialize_issues_a_session() {
    let mock = Mock::start(&["--name", "alpha", "--no-dynamic"]).await;
    let (session, result) = mock.initialize(json!({})).await;
    assert!(!session.is_empty());
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert_eq!(result["protocolVersion"], "2025-11-25");
    assert_eq!(result["serverInfo"]["name"], "alpha");
    assert_eq!(result["capabilities"]["resources"]["subscribe"], true);
    assert_eq!(result["capabilities"]["tools"]["listChanged"], true);

    // Without the header: 400; with an unknown one: 404.
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    assert_eq!(
        mock.post(None, &ping).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mock.post(Some("nope"), &ping).await.status(),
        StatusCode::NOT_FOUND
    );
    let pong = mock.request(&session, &ping).await;
    assert_eq!(pong["result"], json!({}));
}

#[tokio::test]
async fn tools_list_has_fixtures_and_synthetic_tools() {
    let mock = Mock::start(&["--tools", "3", "--long-tool-name", "--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    let resp = mock
        .request(
            &session,
            &json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }),
        )
        .await;
    let names: Vec<String> = resp["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    for expected in [
        "test_simple_text",
        "test_sampling",
        "echo",
        "whoami",
        "digest",
        "slow",
        "crash",
        "close_stream",
        "notify_list_changed",
        "tool_0",
        "tool_2",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "tool_3"));
    assert!(
        !names.iter().any(|n| n == "test_dynamic_tool"),
        "--no-dynamic"
    );
    assert!(names.iter().any(|n| n.len() == 70));
    let r = mock.request(&session, &call(2, "tool_1", json!({}))).await;
    assert_eq!(tool_text(&r), "tool_1 from mock");
}

#[tokio::test]
async fn echo_whoami_and_errors() {
    let mock = Mock::start(&[
        "--name",
        "beta",
        "--no-dynamic",
        "--fail-methods",
        "prompts/list",
    ])
    .await;
    let (session, _) = mock.initialize(json!({})).await;
    let r = mock
        .request(&session, &call(1, "echo", json!({ "text": "hé llo" })))
        .await;
    assert_eq!(tool_text(&r), "hé llo");

    let r = mock.request(&session, &call(2, "whoami", json!({}))).await;
    let who: Value = serde_json::from_str(&tool_text(&r)).expect("whoami JSON");
    assert_eq!(who["server"], "beta");
    assert_eq!(who["session"], session.as_str());
    assert_eq!(who["headers"]["mcp-session-id"], session.as_str());
    assert_eq!(who["headers"]["content-type"], "application/json");

    let r = mock
        .request(&session, &call(3, "no_such_tool", json!({})))
        .await;
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("no_such_tool")));

    let r = mock
        .request(
            &session,
            &json!({ "jsonrpc": "2.0", "id": 4, "method": "prompts/list" }),
        )
        .await;
    assert_eq!(r["error"]["code"], -32603);
    assert_eq!(
        r["error"]["message"],
        "mock: configured to fail prompts/list"
    );

    let r = mock
        .request(
            &session,
            &json!({ "jsonrpc": "2.0", "id": 5, "method": "nope/nope" }),
        )
        .await;
    assert_eq!(r["error"]["code"], -32601);
}

#[tokio::test]
async fn digest_of_a_one_mib_body() {
    let mock = Mock::start(&["--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    let data: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = mock
        .request(&session, &call(1, "digest", json!({ "data": data })))
        .await;
    let out: Value = serde_json::from_str(&tool_text(&r)).expect("digest JSON");
    assert_eq!(out["server"], "mock");
    assert_eq!(out["bytes"], 1024 * 1024);
    assert_eq!(out["sha256"], hex::encode(Sha256::digest(data.as_bytes())));
}

#[tokio::test]
async fn sampling_round_trip_over_sse() {
    let mock = Mock::start(&["--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({ "sampling": {} })).await;
    let resp = mock
        .post(
            Some(&session),
            &call(7, "test_sampling", json!({ "prompt": "say hi" })),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut sse = Sse::new(resp);
    let request = sse.next_message().await.expect("sampling request");
    assert_eq!(request["method"], "sampling/createMessage");
    assert_eq!(
        request["params"]["messages"][0]["content"]["text"],
        "say hi"
    );
    let server_id = request["id"].clone();
    assert!(server_id.as_str().is_some_and(|s| s.starts_with("srv-")));

    let answer = json!({ "jsonrpc": "2.0", "id": server_id, "result": {
        "role": "assistant", "model": "test-model", "stopReason": "endTurn",
        "content": { "type": "text", "text": "hi from the test" } } });
    let ack = mock.post(Some(&session), &answer).await;
    assert_eq!(ack.status(), StatusCode::ACCEPTED);
    assert!(body_bytes(ack).await.is_empty());

    let response = sse.next_message().await.expect("tool response");
    assert_eq!(response["id"], 7);
    assert_eq!(tool_text(&response), "LLM response: hi from the test");
    assert!(
        sse.next_event().await.is_none(),
        "stream ends after the response"
    );

    // Answering again: nothing is waiting for that id any more.
    let late = mock.post(Some(&session), &answer).await;
    assert_eq!(late.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_ends_the_session() {
    let mock = Mock::start(&["--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    let resp = mock
        .send(
            "DELETE",
            "/mcp",
            &[("mcp-session-id", session.as_str())],
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });
    let resp = mock.post(Some(&session), &ping).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["error"]["code"], -32001);
    let resp = mock
        .send(
            "DELETE",
            "/mcp",
            &[("mcp-session-id", session.as_str())],
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cancellation_stops_a_slow_tool() {
    let mock = Mock::start(&["--no-dynamic", "--sse"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    let resp = mock
        .post(Some(&session), &call(42, "slow", json!({ "ms": 60_000 })))
        .await;
    let mut sse = Sse::new(resp);
    let cancel = json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": { "requestId": 42, "reason": "test" } });
    assert_eq!(
        mock.post(Some(&session), &cancel).await.status(),
        StatusCode::ACCEPTED
    );
    // The stream ends (well before 60 s) without a response.
    while let Some(ev) = sse.next_event().await {
        assert!(ev.data.is_empty(), "no message expected, got {}", ev.data);
    }
    let r = mock
        .request(&session, &call(43, "slow", json!({ "ms": 5 })))
        .await;
    assert_eq!(tool_text(&r), "slept 5");
}

#[tokio::test]
async fn get_stream_receives_list_changed() {
    let mock = Mock::start(&["--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    let resp = mock
        .send(
            "GET",
            "/mcp",
            &[
                ("accept", "text/event-stream"),
                ("mcp-session-id", session.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = Sse::new(resp);
    let r = mock
        .request(&session, &call(1, "notify_list_changed", json!({})))
        .await;
    assert_eq!(tool_text(&r), "ok");
    let note = stream.next_message().await.expect("notification");
    assert_eq!(note["method"], "notifications/tools/list_changed");
}

#[tokio::test]
async fn transport_rules() {
    let mock = Mock::start(&["--no-dynamic"]).await;
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "1" } } });
    let body = Some(init.to_string().into_bytes());

    let resp = mock
        .send(
            "POST",
            "/mcp",
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);

    let both = ("accept", "application/json, text/event-stream");
    let resp = mock
        .send(
            "POST",
            "/mcp",
            &[("content-type", "text/plain"), both],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let json_ct = ("content-type", "application/json");
    let resp = mock
        .send(
            "POST",
            "/mcp",
            &[json_ct, both, ("origin", "http://evil.example.com")],
            body.clone(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let resp = mock
        .send(
            "POST",
            "/mcp",
            &[json_ct, both],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["error"]["code"], -32700);

    // 2025-06-18 session: batches are refused.
    let resp = mock.send("POST", "/mcp", &[json_ct, both], body).await;
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(
        json_body(resp).await["result"]["protocolVersion"],
        "2025-06-18"
    );
    let batch = json!([{ "jsonrpc": "2.0", "id": 2, "method": "ping" }]);
    let resp = mock.post(Some(&session), &batch).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["error"]["code"], -32600);

    // Bad tool arguments are protocol errors before 2025-11-25.
    let r = mock.request(&session, &call(3, "echo", json!({}))).await;
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("'text'")));

    let health = mock.send("GET", "/health", &[], None).await;
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn crash_exits_with_code_3() {
    use tokio::io::AsyncWriteExt;
    let mut mock = Mock::start(&["--no-dynamic"]).await;
    let (session, _) = mock.initialize(json!({})).await;
    // Hand-written HTTP/1.1: the process dies before any reply, so no client library
    // response handling is wanted here.
    let body = call(1, "crash", json!({})).to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        mock.addr,
        body.len()
    );
    let mut stream = within("connect", tokio::net::TcpStream::connect(&mock.addr))
        .await
        .expect("connect");
    within("write", stream.write_all(request.as_bytes()))
        .await
        .expect("write");
    let status = mock.wait_exit().await;
    assert_eq!(status.code(), Some(3));
}
