//! Streamable HTTP rules, sessions and bad input at /mcp.

use crate::common::*;
use serde_json::json;

fn one() -> (Proc, Proc) {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("alpha", &a.url, "")], ""));
    (a, gw)
}

#[test]
fn bad_input_gets_a_clear_answer_and_the_gateway_stays_up() {
    let (_a, gw) = one();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let a = cl.post_raw("{not json", &[]);
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["code"], -32700, "{}", a.body);
    let a = cl.post_raw("42", &[]);
    assert_eq!(a.json()["error"]["code"], -32600, "{}", a.body);
    let a = cl.post_raw(r#"{"jsonrpc":"2.0","id":1}"#, &[]);
    assert_eq!(a.json()["error"]["code"], -32600, "{}", a.body);
    let r = cl.request("no/such/method", json!({}));
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = cl.call_tool("nobody__tool", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody__tool"),
        "{r}"
    );
    let r = cl.request("tools/call", json!({}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = cl.request("tools/list", json!({"cursor": "garbage!"}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // Batches are refused from 2025-06-18 on.
    let a = cl.post_raw(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, &[]);
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["code"], -32600);
    // Still serving.
    assert_eq!(cl.request("ping", json!({}))["result"], json!({}));
}

#[test]
fn body_over_the_limit_is_413() {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(
        &[("alpha", &a.url, "")],
        "max_body_bytes = 65536",
    ));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"x".repeat(100_000)}}});
    let a = cl.post(&big);
    assert_eq!(a.status, 413, "{}", a.body);
    assert!(a.body.contains("max_body_bytes"), "{}", a.body);
    assert_eq!(cl.request("ping", json!({}))["result"], json!({}));
}

#[test]
fn http_rules_missing_session_version_accept_content_type() {
    let (_a, gw) = one();
    let mut cl = Client::new(&gw.url);
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"ping"});
    assert_eq!(cl.post(&ping).status, 400, "no session yet");
    cl.initialize();
    assert_eq!(cl.post(&ping).status, 200);
    let a = cl.post_raw(ping.to_string(), &[("mcp-protocol-version", "1999-01-01")]);
    assert_eq!(a.status, 400, "{}", a.body);
    let http = blocking();
    let sid = cl.session.clone().unwrap();
    let r = http
        .post(&gw.url)
        .header("content-type", "text/plain")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &sid)
        .body(ping.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = http
        .post(&gw.url)
        .header("content-type", "application/json")
        .header("accept", "text/html")
        .header("mcp-session-id", &sid)
        .body(ping.to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 406);
    let r = http
        .get(&gw.url)
        .header("accept", "application/json")
        .header("mcp-session-id", &sid)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 406);
    let r = http.put(&gw.url).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

#[test]
fn dns_rebinding_is_refused() {
    let (_a, gw) = one();
    let cl = Client::new(&gw.url);
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let a = cl.post_raw(init.to_string(), &[("origin", "http://evil.example.com")]);
    assert_eq!(a.status, 403, "{}", a.body);
    let a = cl.post_raw(init.to_string(), &[("host", "evil.example.com")]);
    assert_eq!(a.status, 403, "{}", a.body);
    let a = cl.post_raw(init.to_string(), &[("origin", "http://localhost:5173")]);
    assert_eq!(a.status, 200, "{}", a.body);
}

/// `GET /mcp` for the session of `cl`: the open (200) server-to-client stream.
fn open_stream(url: &str, cl: &Client) -> reqwest::blocking::Response {
    let r = blocking()
        .get(url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", cl.session.clone().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r
}

#[test]
fn delete_ends_the_session() {
    let (_a, gw) = one();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    // A GET stream of the session, read to its end on a thread.
    let mut stream = open_stream(&gw.url, &cl);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        let end = loop {
            match std::io::Read::read(&mut stream, &mut chunk) {
                Ok(0) => break "end of stream".to_string(),
                Ok(_) => {}
                Err(e) => break format!("read error: {e}"),
            }
        };
        let _ = tx.send(end);
    });
    let r = blocking()
        .delete(&gw.url)
        .header("mcp-session-id", cl.session.clone().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let a = cl.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}));
    assert_eq!(a.status, 404, "{}", a.body);
    // The stream closes with the session (keep-alives alone would hold it open).
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .as_deref(),
        Ok("end of stream")
    );
}

#[test]
fn sessions_are_portable_between_replicas_and_tamper_proof() {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let key = "ab".repeat(32);
    let cfg = gateway_config(
        &[("alpha", &a.url, "")],
        &format!("session_key = \"{key}\""),
    );
    let g1 = spawn_gateway(&cfg);
    let g2 = spawn_gateway(&cfg);
    let mut c1 = Client::new(&g1.url);
    c1.initialize();
    let mut c2 = Client::new(&g2.url);
    c2.session = c1.session.clone();
    assert_eq!(
        text_of(&c2.call_tool("alpha__echo", json!({"text": "replica"}))),
        "replica"
    );
    // Tampered: flip one character.
    let mut s = c1.session.clone().unwrap().into_bytes();
    let i = s.len() / 2;
    s[i] = if s[i] == b'A' { b'B' } else { b'A' };
    c2.session = Some(String::from_utf8(s).unwrap());
    assert_eq!(
        c2.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .status,
        404
    );
    // Another key: unknown session.
    let g3 = spawn_gateway(&gateway_config(&[("alpha", &a.url, "")], ""));
    let mut c3 = Client::new(&g3.url);
    c3.session = c1.session.clone();
    assert_eq!(
        c3.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .status,
        404
    );
}

#[test]
fn upstream_session_loss_is_repaired_transparently() {
    // The backend restarts (forgetting sessions) on the same port.
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let listen = a.host_port().to_string();
    let gw = spawn_gateway(&gateway_config(&[("alpha", &a.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    drop(a);
    let again = spawn_mock_at(&listen, "alpha", &["--no-dynamic"]);
    let r = cl.call_tool("alpha__echo", json!({"text": "again"}));
    drop(again);
    assert_eq!(text_of(&r), "again", "{r}");
}

#[test]
fn server_discover_probe_gets_a_plain_400() {
    let (_a, gw) = one();
    let cl = Client::new(&gw.url);
    let a = cl.post(&json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}));
    assert_eq!(a.status, 400);
    assert!(a.body.contains("initialize"), "{}", a.body);
}

#[test]
fn server_stream_relays_backend_notifications() {
    let (_a, gw) = one();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let mut resp = open_stream(&gw.url, &cl);
    // Ask the backend to announce a list change until it shows on the stream (the GET
    // stream to the backend opens asynchronously).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = String::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut resp, &mut chunk) {
            if n == 0 {
                break;
            }
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            if sse_messages(&buf)
                .iter()
                .any(|m| m["method"] == "notifications/tools/list_changed")
            {
                let _ = tx.send(());
                return;
            }
        }
    });
    let start = std::time::Instant::now();
    loop {
        cl.call_tool("alpha__notify_list_changed", json!({}));
        if rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_ok()
        {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "no list_changed relayed"
        );
    }
}

#[test]
fn health_endpoints() {
    let (_a, gw) = one();
    let (s, body) = http_get(&gw.url.replace("/mcp", "/healthz")).unwrap();
    assert_eq!(s, 200);
    assert!(body.contains("ok"));
    wait_until(std::time::Duration::from_secs(10), || {
        readyz_detail(&gw).to_string().contains("\"state\":\"up\"")
    });
}
