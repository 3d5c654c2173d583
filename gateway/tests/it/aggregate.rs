//! The aggregated /mcp endpoint against real mock MCP servers.

use crate::common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn three() -> (Proc, Proc, Proc, Proc) {
    let a = spawn_mock("alpha", &["--no-dynamic"]);
    let b = spawn_mock("beta", &["--no-dynamic", "--json"]);
    let c = spawn_mock("gamma", &["--no-dynamic", "--sse"]);
    let gw = spawn_gateway(&gateway_config(
        &[
            ("alpha", &a.url, ""),
            ("beta", &b.url, ""),
            ("gamma", &c.url, ""),
        ],
        "",
    ));
    (a, b, c, gw)
}

#[test]
fn merged_tools_are_prefixed_in_config_order_and_each_backend_is_callable() {
    let (_a, _b, _c, gw) = three();
    let mut cl = Client::new(&gw.url);
    let init = cl.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "mcp-gateway");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    let names = cl.tool_names();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
    };
    assert!(pos("alpha__echo") < pos("beta__echo"));
    assert!(pos("beta__echo") < pos("gamma__echo"));
    assert!(names.iter().all(|n| n.len() <= 64));
    // Deterministic: the same list twice.
    assert_eq!(names, cl.tool_names());
    for b in ["alpha", "beta", "gamma"] {
        let r = cl.call_tool(&format!("{b}__whoami"), json!({}));
        let who: Value = serde_json::from_str(&text_of(&r)).expect("whoami JSON");
        assert_eq!(who["server"], b, "{r}");
        let r = cl.call_tool(&format!("{b}__echo"), json!({"text": "hi"}));
        assert_eq!(text_of(&r), "hi");
    }
}

#[test]
fn prompts_resources_and_templates_are_merged_and_routed() {
    let (_a, _b, _c, gw) = three();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let prompts = cl.request("prompts/list", json!({}));
    let pnames: Vec<&str> = prompts["result"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(pnames.contains(&"beta__test_simple_prompt"), "{pnames:?}");
    let got = cl.request("prompts/get", json!({"name": "beta__test_simple_prompt"}));
    assert!(got["result"]["messages"].is_array(), "{got}");
    // Same URI from three backends: the first keeps it, the others get the prefixed form.
    let res = cl.request("resources/list", json!({}));
    let uris: Vec<&str> = res["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(uris.contains(&"test://static-text"), "{uris:?}");
    assert!(
        uris.contains(&"mcpgw://beta/test://static-text"),
        "{uris:?}"
    );
    let read = cl.request(
        "resources/read",
        json!({"uri": "mcpgw://gamma/test://static-text"}),
    );
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    let read = cl.request("resources/read", json!({"uri": "test://static-text"}));
    assert!(read["result"]["contents"].is_array(), "{read}");
    let tpl = cl.request("resources/templates/list", json!({}));
    assert!(
        !tpl["result"]["resourceTemplates"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{tpl}"
    );
    let read = cl.request("resources/read", json!({"uri": "test://template/42/data"}));
    assert!(read["result"]["contents"].is_array(), "{read}");
    let comp = cl.request(
        "completion/complete",
        json!({
        "ref": {"type": "ref/prompt", "name": "alpha__test_prompt_with_arguments"},
        "argument": {"name": "arg1", "value": "a"}}),
    );
    assert!(comp["result"]["completion"]["values"].is_array(), "{comp}");
    assert_eq!(cl.request("ping", json!({}))["result"], json!({}));
    assert_eq!(
        cl.request("logging/setLevel", json!({"level": "debug"}))["result"],
        json!({})
    );
    let bad = cl.request("logging/setLevel", json!({"level": "loud"}));
    assert_eq!(bad["error"]["code"], -32602);
}

#[test]
fn a_dead_backend_is_left_out_of_lists_and_named_in_call_errors() {
    let (a, mut b, c, gw) = three();
    let _keep = (a, c);
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    assert!(cl.tool_names().iter().any(|n| n.starts_with("beta__")));
    b.kill();
    let names = cl.tool_names();
    assert!(names.iter().any(|n| n.starts_with("alpha__")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("gamma__")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("beta__")), "{names:?}");
    let r = cl.call_tool("beta__echo", json!({"text": "x"}));
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("beta"),
        "{r}"
    );
    // The session survives.
    assert_eq!(
        text_of(&cl.call_tool("alpha__echo", json!({"text": "still"}))),
        "still"
    );
    // Readiness shows it.
    wait_until(std::time::Duration::from_secs(10), || {
        let v = readyz_detail(&gw);
        v["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "beta" && x["state"] == "down")
    });
}

/// Kept-alive connections to a backend die when it restarts; the next call must still
/// reach the new process (a pooled connection that fails before answering is retried
/// on a fresh one, and the upstream session is opened again).
#[test]
fn a_restarted_backend_is_reached_again_on_fresh_connections() {
    let mut b = spawn_mock("beta", &["--no-dynamic", "--json"]);
    let addr = b.host_port().to_string();
    let gw = spawn_gateway(&gateway_config(&[("beta", &b.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    for i in 0..5 {
        let text = format!("before {i}");
        assert_eq!(
            text_of(&cl.call_tool("beta__echo", json!({"text": text}))),
            text
        );
    }
    b.kill();
    let _again = spawn_mock_at(&addr, "beta", &["--no-dynamic", "--json"]);
    for i in 0..5 {
        let text = format!("after {i}");
        let r = cl.call_tool("beta__echo", json!({"text": text}));
        assert_eq!(text_of(&r), text, "{r}");
    }
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, made with openssl.
fn test_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=mcp-gateway test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// An https backend: reached when its certificate chains to a trusted root (here the
/// test CA, through SSL_CERT_FILE as operators would add a private CA), refused when not.
#[test]
fn an_https_backend_is_verified_against_the_trusted_roots() {
    let dir = tempdir();
    let (ca, cert, key) = test_ca(&dir);
    let plain = spawn_mock("beta", &["--no-dynamic", "--json"]);
    let (host, port) = plain.host_port().rsplit_once(':').unwrap();
    let mut fwd = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/forward.py"))
        .args([cert.to_str().unwrap(), key.to_str().unwrap(), host, port])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let https = read_listen_line(&mut fwd, "the TLS forwarder");
    let _fwd = Proc {
        child: fwd,
        url: https.clone(),
        admin: None,
    };
    assert!(https.starts_with("https://localhost:"), "{https}");

    let config = gateway_config(&[("beta", &https, "")], "");
    let trusted = spawn_gateway_with(
        &config,
        &[],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        None,
    );
    let mut cl = Client::new(&trusted.url);
    cl.initialize();
    let r = cl.call_tool("beta__echo", json!({"text": "over tls"}));
    assert_eq!(text_of(&r), "over tls", "{r}");

    let untrusted = spawn_gateway(&config);
    let mut cl = Client::new(&untrusted.url);
    cl.initialize();
    let r = cl.call_tool("beta__echo", json!({"text": "x"}));
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("beta"),
        "{r}"
    );
}

#[test]
fn a_slow_backend_is_left_out_by_its_timeout() {
    let a = spawn_mock("fast", &["--no-dynamic"]);
    let s = spawn_mock("slow", &["--no-dynamic", "--latency-ms", "3000"]);
    let gw = spawn_gateway(&gateway_config(
        &[("fast", &a.url, ""), ("slow", &s.url, "timeout_ms = 500")],
        "",
    ));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let start = std::time::Instant::now();
    let names = cl.tool_names();
    assert!(names.iter().any(|n| n.starts_with("fast__")));
    assert!(!names.iter().any(|n| n.starts_with("slow__")));
    assert!(
        start.elapsed() < std::time::Duration::from_millis(2500),
        "list waited for the slow backend"
    );
}

#[test]
fn long_names_are_shortened_and_still_callable() {
    let a = spawn_mock("longnames", &["--no-dynamic", "--long-tool-name"]);
    let gw = spawn_gateway(&gateway_config(&[("longnames", &a.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let names = cl.tool_names();
    let long = names
        .iter()
        .find(|n| n.len() == 64)
        .unwrap_or_else(|| panic!("no shortened name in {names:?}"));
    let r = cl.call_tool(long, json!({}));
    assert_eq!(text_of(&r), "long from longnames", "{r}");
}

#[test]
fn unprefixed_backend_keeps_its_names() {
    let a = spawn_mock("solo", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("solo", &a.url, "prefix = false")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let names = cl.tool_names();
    assert!(names.contains(&"echo".to_string()), "{names:?}");
    assert_eq!(
        text_of(&cl.call_tool("echo", json!({"text": "plain"}))),
        "plain"
    );
}

#[test]
fn a_one_mib_call_reaches_the_backend_intact() {
    let a = spawn_mock("big", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("big", &a.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let data: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let r = cl.call_tool("big__digest", json!({"data": data}));
    let d: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert_eq!(d["bytes"], 1024 * 1024);
    let want: String = Sha256::digest(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(d["sha256"], want);
}

#[test]
fn sampling_and_elicitation_round_trip_through_the_gateway() {
    let (_a, _b, _c, gw) = three();
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    for (tool, answer) in [
        (
            "alpha__test_sampling",
            json!({"role": "assistant", "content": {"type": "text", "text": "sampled!"}, "model": "m", "stopReason": "endTurn"}),
        ),
        (
            "gamma__test_elicitation",
            json!({"action": "accept", "content": {"username": "u", "email": "e@example.com"}}),
        ),
    ] {
        let (req, final_msg) =
            call_answering(&cl, tool, json!({"prompt": "hi", "message": "hi"}), answer);
        let rid = req["id"].as_str().unwrap_or_default();
        assert!(
            rid.starts_with("mcpgw:"),
            "{tool}: server request id not rewritten: {req}"
        );
        assert!(
            final_msg["result"]["content"].is_array(),
            "{tool}: {final_msg}"
        );
        assert_ne!(final_msg["result"]["isError"], json!(true), "{final_msg}");
    }
}

#[test]
fn pass_through_route_reaches_one_backend_unparsed() {
    let (_a, _b, _c, gw) = three();
    let url = gw.url.replace("/mcp", "/backends/beta/mcp");
    let mut cl = Client::new(&url);
    cl.initialize();
    let names = cl.tool_names();
    assert!(names.contains(&"echo".to_string()), "{names:?}");
    let r = cl.call_tool("whoami", json!({}));
    let who: Value = serde_json::from_str(&text_of(&r)).unwrap();
    assert_eq!(who["server"], "beta");
    // The client's credentials never go upstream.
    let a = cl.post_raw(
        json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"whoami","arguments":{}}}).to_string(),
        &[("authorization", "Bearer client-secret-token")],
    );
    let who: Value = serde_json::from_str(&text_of(&a.response(&json!(9)))).unwrap();
    assert!(who["headers"].get("authorization").is_none(), "{who}");
    let missing = http_get(&gw.url.replace("/mcp", "/backends/nope/mcp")).unwrap();
    assert_eq!(missing.0, 404);
}

#[test]
fn backend_headers_are_sent_and_client_tokens_are_not() {
    let a = spawn_mock("creds", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(
        &[("creds", &a.url, "headers = { X-Api-Key = \"backend-key\" }")],
        "",
    ));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let a = cl.post_raw(
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"creds__whoami","arguments":{}}}).to_string(),
        &[("authorization", "Bearer client-token")],
    );
    let who: Value = serde_json::from_str(&text_of(&a.response(&json!(5)))).unwrap();
    assert_eq!(who["headers"]["x-api-key"], "backend-key", "{who}");
    assert!(who["headers"].get("authorization").is_none(), "{who}");
}

#[test]
fn pages_follow_each_backends_cursor() {
    let a = spawn_mock("pa", &["--no-dynamic", "--tools", "7", "--page-size", "4"]);
    let b = spawn_mock("pb", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(
        &[("pa", &a.url, ""), ("pb", &b.url, "")],
        "",
    ));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let r = cl.request("tools/list", params);
        pages += 1;
        for t in r["result"]["tools"].as_array().unwrap() {
            all.push(t["name"].as_str().unwrap().to_string());
        }
        match r["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 20, "pagination does not end");
    }
    assert!(pages >= 2, "expected several pages");
    for i in 0..7 {
        assert!(
            all.contains(&format!("pa__tool_{i}")),
            "tool_{i} missing: {all:?}"
        );
    }
    assert!(all.contains(&"pb__echo".to_string()));
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), all.len(), "a tool was listed twice: {all:?}");
}

#[test]
fn client_cancellation_reaches_the_backend() {
    let a = spawn_mock("c", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("c", &a.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let (url, sid) = (cl.url.clone(), cl.session.clone().unwrap());
    let started = std::time::Instant::now();
    let call = std::thread::spawn(move || {
        let mut c = Client::new(&url);
        c.session = Some(sid);
        c.post(&json!({"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"c__slow","arguments":{"ms":20000}}}))
    });
    // Cancel until the call ends (the request may not have reached the backend yet).
    while !call.is_finished() {
        let n = cl.post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1","reason":"test"}}));
        assert_eq!(n.status, 202);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "cancellation never reached the backend"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = call.join().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // The backend stopped without answering; the gateway says so.
    assert!(!answer.body.contains("slept"), "{}", answer.body);
}

#[test]
fn request_ids_and_trace_context_reach_the_backend() {
    let a = spawn_mock("t", &["--no-dynamic"]);
    let gw = spawn_gateway(&gateway_config(&[("t", &a.url, "")], ""));
    let mut cl = Client::new(&gw.url);
    cl.initialize();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
    let ans = cl.post_raw(
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"t__whoami","arguments":{}}}).to_string(),
        &[("traceparent", tp), ("x-request-id", "req-123")],
    );
    assert_eq!(ans.headers.get("x-request-id").unwrap(), "req-123");
    let who: Value = serde_json::from_str(&text_of(&ans.response(&json!(3)))).unwrap();
    assert_eq!(who["headers"]["traceparent"], tp, "{who}");
    assert_eq!(who["headers"]["x-request-id"], "req-123", "{who}");
}
