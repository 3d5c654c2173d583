//! The outside security review's findings on the gateway, each tried from outside as an
//! attacker would: real gateway, real mock backends, real fake Google, over HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::issuer::*;
use crate::common::*;
use serde_json::{json, Value};

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;

struct Env {
    issuer: Issuer,
    gw: Proc,
    dir: std::path::PathBuf,
    /// Base URL of the metrics/admin listener.
    admin: String,
    _mock: Proc,
}

impl Env {
    /// A gateway in oauth mode in front of one mock, `grafana`, open to group `sre`,
    /// whose tool `echo` only nobody@example.com may call. Audit to a JSON Lines file.
    fn start(server_extra: &str) -> Env {
        Env::with_issuer(start_issuer(), server_extra)
    }

    fn with_issuer(issuer: Issuer, server_extra: &str) -> Env {
        let mock = spawn_mock("grafana", &["--no-dynamic"]);
        let dir = tempdir();
        let admin = format!("127.0.0.1:{}", free_port());
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n{server_extra}\n\
             [metrics]\nlisten = \"{admin}\"\n\
             [auth]\nmode = \"oauth\"\nissuer = \"{}\"\n\n\
             [audit]\nfile = {:?}\nflush_interval_ms = 50\n\n\
             [[backend]]\nname = \"grafana\"\nurl = \"{}\"\nallow_groups = [\"sre\"]\n\
             tools = {{ echo = {{ allow_users = [\"nobody@example.com\"] }} }}\n",
            issuer.url,
            dir.join("audit.jsonl"),
            mock.url
        );
        let gw = spawn_gateway(&cfg);
        Env {
            issuer,
            gw,
            dir,
            admin: format!("http://{admin}"),
            _mock: mock,
        }
    }

    fn claims(&self, email: &str, groups: &[&str]) -> Value {
        json!({"iss": self.issuer.url, "sub": format!("sub-{email}"), "aud": self.gw.url,
               "exp": now() + 600, "iat": now(), "email": email, "groups": groups,
               "client_id": "test-client", "scope": "mcp"})
    }

    fn token(&self, email: &str) -> String {
        mint_with(self.claims(email, &["sre"]), KEY1, "k1")
    }

    fn passthrough(&self) -> String {
        self.gw.url.replace("/mcp", "/backends/grafana/mcp")
    }

    /// POSTs `body` to the pass-through route as `email`, with `session` if given.
    fn pass_post(&self, email: &str, session: Option<&str>, body: impl Into<String>) -> Answer {
        let mut cl = Client::new(&self.passthrough());
        cl.session = session.map(str::to_string);
        let auth = format!("Bearer {}", self.token(email));
        cl.post_raw(body.into(), &[("authorization", &auth)])
    }

    fn audit_rows(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})
}

fn session_of(a: &Answer) -> String {
    a.headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Mcp-Session-Id in {:?}", a.headers))
        .to_string()
}

// ---- 1. The pass-through route enforces what /mcp enforces ----

#[test]
fn passthrough_refuses_a_tool_the_person_may_not_call() {
    let e = Env::start("");
    let init = e.pass_post("ana@example.com", None, INIT);
    assert_eq!(init.status, 200, "{}", init.body);
    let sid = session_of(&init);
    // whoami is allowed, echo is not (tool rule), the same as on /mcp.
    let a = e.pass_post(
        "ana@example.com",
        Some(&sid),
        call(1, "whoami", json!({})).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.response(&json!(1))["result"].is_object(), "{}", a.body);
    let a = e.pass_post(
        "ana@example.com",
        Some(&sid),
        call(2, "echo", json!({"text": "leak"})).to_string(),
    );
    assert_eq!(
        a.status, 403,
        "a refused tool must not reach the backend: {}",
        a.body
    );
    assert_eq!(a.json()["error"]["code"], -32003, "{}", a.body);
    assert!(!a.body.contains("leak"), "{}", a.body);
    // Hidden in a batch it is refused too (the 2025-03-26 wire allows batches).
    let batch = json!([
        call(3, "whoami", json!({})),
        call(4, "echo", json!({"text": "leak"}))
    ]);
    let mut cl = Client::new(&e.passthrough());
    cl.session = Some(sid.clone());
    let auth = format!("Bearer {}", e.token("ana@example.com"));
    let a = cl.post_raw(
        batch.to_string(),
        &[
            ("authorization", &auth),
            ("mcp-protocol-version", "2025-03-26"),
        ],
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(!a.body.contains("leak"), "{}", a.body);
    // The person the rule names may call it.
    let init = e.pass_post("nobody@example.com", None, INIT);
    let sid = session_of(&init);
    let a = e.pass_post(
        "nobody@example.com",
        Some(&sid),
        call(5, "echo", json!({"text": "fine"})).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(text_of(&a.response(&json!(5))), "fine");
}

#[test]
fn passthrough_session_ids_are_sealed_to_their_person() {
    let e = Env::start("");
    let init = e.pass_post("ana@example.com", None, INIT);
    assert_eq!(init.status, 200, "{}", init.body);
    let sid = session_of(&init);
    let whoami = call(1, "whoami", json!({})).to_string();
    let mine = e.pass_post("ana@example.com", Some(&sid), whoami.clone());
    assert_eq!(mine.status, 200, "{}", mine.body);
    // Another permitted person who learns the id cannot use it.
    let theirs = e.pass_post("bob@example.com", Some(&sid), whoami.clone());
    assert_eq!(theirs.status, 404, "a foreign session id: {}", theirs.body);
    // Nor can anyone use a tampered one.
    let mut tampered = sid.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let a = e.pass_post("ana@example.com", Some(&tampered), whoami);
    assert_eq!(a.status, 404, "a tampered session id: {}", a.body);
    // What the client sees is not the backend's own id.
    let backend: Value = serde_json::from_str(&text_of(&mine.response(&json!(1)))).unwrap();
    assert_ne!(backend["session"].as_str(), Some(sid.as_str()), "{backend}");
}

#[test]
fn passthrough_bodies_over_max_body_bytes_get_413() {
    let e = Env::start("max_body_bytes = 4194304");
    let init = e.pass_post("nobody@example.com", None, INIT);
    let sid = session_of(&init);
    let big = "x".repeat(6 * 1024 * 1024);
    let a = e.pass_post(
        "nobody@example.com",
        Some(&sid),
        call(1, "digest", json!({ "data": big })).to_string(),
    );
    assert_eq!(a.status, 413, "{}", &a.body[..a.body.len().min(300)]);
    assert!(a.body.contains("max_body_bytes"), "{}", a.body);
}

#[test]
fn passthrough_audit_rows_name_method_and_tool() {
    let e = Env::start("");
    let init = e.pass_post("nobody@example.com", None, INIT);
    let sid = session_of(&init);
    let a = e.pass_post(
        "nobody@example.com",
        Some(&sid),
        call(1, "echo", json!({"text": "audited"})).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let mut row = None;
    wait_until(Duration::from_secs(10), || {
        row = e
            .audit_rows()
            .into_iter()
            .find(|r| r["rpc_method"] == "tools/call" && r["backend"] == "grafana");
        row.is_some()
    });
    let row = row.unwrap();
    assert_eq!(row["target"], "echo", "{row}");
    assert_eq!(row["email"], "nobody@example.com", "{row}");
    assert!(row["args_digest"].is_string(), "{row}");
}

// ---- 1b. 2026-07-28: policy and labels from the mirrored headers ----

/// POSTs `body` as a 2026-07-28 request to `url` as `email`, with `Mcp-Method:
/// tools/call` and `Mcp-Name: name`.
fn modern_call(e: &Env, url: &str, email: &str, name: &str, body: &str) -> Answer {
    let auth = format!("Bearer {}", e.token(email));
    Client::new(url).post_raw(
        body.to_string(),
        &[
            ("authorization", &auth),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ],
    )
}

#[test]
fn a_modern_call_is_refused_from_its_headers_before_its_body_is_parsed() {
    let e = Env::start("");
    // No _meta: a body the full path refuses 400 -32602. The head alone decides first.
    let body = r#"{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"grafana__echo","arguments":{"text":"leak"}}}"#;
    let a = modern_call(&e, &e.gw.url, "ana@example.com", "grafana__echo", body);
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(41), json!(-32003)),
        "{}",
        a.body
    );
    assert_eq!(v["error"]["data"]["backend"], "grafana", "{}", a.body);
    // Someone the rule allows goes on to the body's checks.
    let a = modern_call(&e, &e.gw.url, "nobody@example.com", "grafana__echo", body);
    assert_eq!(
        (a.status, a.json()["error"]["code"].clone()),
        (400, json!(-32602)),
        "{}",
        a.body
    );
    // The pass-through route: the backend's own name, and its 403.
    let a = modern_call(&e, &e.passthrough(), "ana@example.com", "echo", body);
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], -32003, "{}", a.body);
    let mut refused = Vec::new();
    wait_until(Duration::from_secs(10), || {
        refused = e
            .audit_rows()
            .into_iter()
            .filter(|r| {
                r["rpc_error"] == -32003
                    && r["target"].as_str().is_some_and(|t| t.ends_with("echo"))
            })
            .collect();
        refused.len() == 2
    });
    assert!(
        refused
            .iter()
            .all(|r| r["backend"] == "grafana" && r["rpc_method"] == "tools/call"),
        "{refused:?}"
    );
}

#[test]
fn a_modern_call_refused_for_its_size_is_labelled_from_its_headers() {
    let e = Env::start("max_body_bytes = 1024");
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"grafana__whoami","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(2048)
    );
    let a = modern_call(&e, &e.gw.url, "ana@example.com", "grafana__whoami", &big);
    assert_eq!(a.status, 413, "{}", a.body);
    let mut row = None;
    wait_until(Duration::from_secs(10), || {
        row = e.audit_rows().into_iter().find(|r| r["http_status"] == 413);
        row.is_some()
    });
    let row = row.unwrap();
    assert_eq!(
        (&row["rpc_method"], &row["backend"], &row["target"]),
        (
            &json!("tools/call"),
            &json!("grafana"),
            &json!("grafana__whoami")
        ),
        "{row}"
    );
    // A 2025 request's headers are not trusted for labels (nothing mirrored there).
    let auth = format!("Bearer {}", e.token("ana@example.com"));
    let a = Client::new(&e.gw.url).post_raw(
        big.clone(),
        &[
            ("authorization", &auth),
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "grafana__whoami"),
        ],
    );
    assert_eq!(a.status, 413, "{}", a.body);
    let mut rows = Vec::new();
    wait_until(Duration::from_secs(10), || {
        rows = e
            .audit_rows()
            .into_iter()
            .filter(|r| r["http_status"] == 413)
            .collect();
        rows.len() == 2
    });
    assert!(rows[1]["backend"].is_null(), "{}", rows[1]);
}

#[test]
fn a_held_calls_request_state_is_refused_to_another_person() {
    let e = Env::start("");
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}});
    let name = "grafana__test_elicitation";
    let body = |id: i64, extra: Value| {
        let mut p = json!({"name": name, "arguments": {"message": "m"}, "_meta": meta});
        if let (Value::Object(p), Value::Object(x)) = (&mut p, extra) {
            p.extend(x);
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": p}).to_string()
    };
    let a = modern_call(&e, &e.gw.url, "ana@example.com", name, &body(1, json!({})));
    let held = a.response(&json!(1));
    let state = held["result"]["requestState"]
        .as_str()
        .unwrap_or_else(|| panic!("not held: {held}"))
        .to_string();
    let retry = json!({"inputResponses": {"r0": {"action": "accept", "content": {}}}, "requestState": state});
    let a = modern_call(
        &e,
        &e.gw.url,
        "bo@example.com",
        name,
        &body(2, retry.clone()),
    );
    let r = a.response(&json!(2));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert!(r.to_string().contains("another person"), "{r}");
    // Its owner's retry still completes: the refusal did not release the call.
    let a = modern_call(&e, &e.gw.url, "ana@example.com", name, &body(3, retry));
    let r = a.response(&json!(3));
    assert!(text_of(&r).contains("action=accept"), "{r}");
}

// ---- 2. google-direct: the audience is checked and a Workspace domain required ----

fn fake_google() -> Proc {
    let dir = tempdir();
    let path = dir.join("fake-google.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n\
         [[user]]\nemail = \"ana@example.com\"\nname = \"Ana\"\n\
         [[user]]\nemail = \"joe@example.com\"\nname = \"Joe, consumer account\"\nhd = \"\"\n\
         [[client]]\nclient_id = \"gateway-client\"\nclient_secret = \"s1\"\n\
         [[client]]\nclient_id = \"some-other-app\"\nclient_secret = \"s2\"\n",
    )
    .unwrap();
    let mut child = Command::new(bin_dir().join("fake-google"))
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fake-google");
    let url = read_listen_line(&mut child, "fake-google");
    Proc {
        child,
        url,
        admin: None,
    }
}

/// A Google access token for `email`, as `client_id` obtains it (authorization code).
fn google_token(google: &str, client_id: &str, secret: &str, email: &str) -> String {
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = "http://127.0.0.1:9/cb";
    let r = http
        .post(format!("{google}/authorize"))
        .form(&[
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("response_type", "code"),
            ("scope", "openid email profile"),
            ("email", email),
        ])
        .send()
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let code = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {location}"))
        .replace("%2F", "/");
    let t: Value = http
        .post(format!("{google}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", client_id),
            ("client_secret", secret),
            ("redirect_uri", redirect),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    t["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {t}"))
        .to_string()
}

fn google_direct_config(google: &str, mock: &str, client_id_line: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 3600\n\
         [auth]\nmode = \"google-direct\"\nallowed_domains = [\"example.com\"]\n\
         tokeninfo_url = \"{google}/tokeninfo\"\nuserinfo_url = \"{google}/userinfo\"\n{client_id_line}\n\
         [[backend]]\nname = \"open\"\nurl = \"{mock}\"\n"
    )
}

#[test]
fn google_direct_without_google_client_id_does_not_start() {
    let dir = tempdir();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        google_direct_config("http://127.0.0.1:9", "http://127.0.0.1:9/mcp", ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .arg("--config")
        .arg(&path)
        .arg("-t")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "started without google_client_id: {text}"
    );
    assert!(text.contains("auth.google_client_id"), "{text}");
}

#[test]
fn google_direct_checks_audience_and_workspace_domain() {
    let google = fake_google();
    let mock = spawn_mock("open", &["--no-dynamic"]);
    let gw = spawn_gateway(&google_direct_config(
        &google.url,
        &mock.url,
        "google_client_id = \"gateway-client\"",
    ));
    let post = |token: &str| {
        Client::new(&gw.url).post_raw(INIT, &[("authorization", &format!("Bearer {token}"))])
    };
    let good = google_token(&google.url, "gateway-client", "s1", "ana@example.com");
    let a = post(&good);
    assert_eq!(a.status, 200, "a Workspace user of our client: {}", a.body);
    // A token another app obtained from the same employee: confused deputy.
    let other = google_token(&google.url, "some-other-app", "s2", "ana@example.com");
    let a = post(&other);
    assert_eq!(
        a.status, 401,
        "a token issued to another client: {}",
        a.body
    );
    // A consumer account whose address is in an allowed domain has no `hd`.
    let consumer = google_token(&google.url, "gateway-client", "s1", "joe@example.com");
    let a = post(&consumer);
    assert_eq!(a.status, 401, "an account without hd: {}", a.body);
}

// ---- 6. Slow bodies and many connections ----

/// Opens a connection and sends a POST head announcing `len` body bytes.
fn slow_post(addr: &str, len: usize, auth: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nauthorization: Bearer {auth}\r\ncontent-length: {len}\r\n\r\n"
    )
    .unwrap();
    s
}

#[test]
fn a_body_that_trickles_in_meets_a_total_deadline() {
    let e = Env::start("body_timeout_s = 2");
    let token = e.token("ana@example.com");
    let addr = e.gw.host_port().to_string();
    let body = INIT.as_bytes();
    let mut s = slow_post(&addr, body.len(), &token);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // One byte every 300 ms: each read is quick, the whole body never arrives in time.
    let start = Instant::now();
    let mut answer = Vec::new();
    for b in body {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no deadline");
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn two_thousand_slow_connections_do_not_starve_a_normal_request() {
    let e = Env::start("");
    let token = e.token("ana@example.com");
    let addr = e.gw.host_port().to_string();
    let held: Vec<TcpStream> = (0..2000).map(|_| slow_post(&addr, 1000, &token)).collect();
    let a = e.pass_post("ana@example.com", None, INIT);
    assert_eq!(a.status, 200, "{}", a.body);
    let cl = Client::new(&e.gw.url);
    let auth = format!("Bearer {token}");
    let a = cl.post_raw(INIT, &[("authorization", &auth)]);
    assert_eq!(a.status, 200, "{}", a.body);
    // Both were answered while every slow connection was still held: none of them
    // has been answered (408 after the 30 s body deadline) or closed yet. A gateway
    // that served connections in turn would only have answered after they went.
    for (i, s) in held.iter().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match s.peek(&mut b) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("slow connection {i} was no longer held: {other:?}"),
        }
    }
}

#[test]
fn connections_beyond_max_connections_are_closed_at_once() {
    let e = Env::start("max_connections = 20");
    let token = e.token("ana@example.com");
    let addr = e.gw.host_port().to_string();
    let held: Vec<TcpStream> = (0..20).map(|_| slow_post(&addr, 1000, &token)).collect();
    // The 21st is closed without an answer.
    let mut extra = slow_post(&addr, 2, &token);
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let n = extra.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf));
    // Once they go, a request gets through again.
    drop(held);
    let auth = format!("Bearer {token}");
    wait_until(Duration::from_secs(10), || {
        // Until the gateway has seen the closes, a new connection is still reset: not yet.
        let cl = Client::new(&e.gw.url);
        cl.try_post_raw(INIT, &[("authorization", &auth)])
            .is_ok_and(|a| a.status == 200)
    });
}

// ---- 7. Token type and scope ----

#[test]
fn a_jwt_that_is_not_an_access_token_is_refused() {
    let e = Env::start("");
    let untyped = mint_untyped(e.claims("ana@example.com", &["sre"]), KEY1, "k1");
    let a =
        Client::new(&e.gw.url).post_raw(INIT, &[("authorization", &format!("Bearer {untyped}"))]);
    assert_eq!(a.status, 401, "a JWT without typ at+jwt: {}", a.body);
    assert!(a.body.contains("at+jwt"), "{}", a.body);
}

#[test]
fn a_token_without_the_mcp_scope_is_refused_by_default() {
    let e = Env::start("");
    let mut claims = e.claims("ana@example.com", &["sre"]);
    claims["scope"] = json!("offline_access");
    let token = mint_with(claims, KEY1, "k1");
    let a = Client::new(&e.gw.url).post_raw(INIT, &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(a.status, 403, "{}", a.body);
    let wa = a.headers["www-authenticate"].to_str().unwrap();
    assert!(wa.contains("insufficient_scope"), "{wa}");
}

// ---- 9. What the public listener tells a stranger ----

#[test]
fn public_readyz_answers_status_only_and_the_admin_listener_has_the_detail() {
    let e = Env::start("");
    let (s, body) = http_get(&e.gw.url.replace("/mcp", "/readyz")).unwrap();
    assert_eq!(s, 200);
    assert!(
        !body.contains("grafana"),
        "backend names on the public listener: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"ready": true}));
    let mut detail = String::new();
    wait_until(Duration::from_secs(10), || {
        match http_get(&format!("{}/readyz", e.admin)) {
            Some((200, body)) => {
                detail = body;
                true
            }
            _ => false,
        }
    });
    assert!(
        detail.contains("grafana") && detail.contains("last_error"),
        "{detail}"
    );
}

#[test]
fn a_jwks_outage_does_not_reveal_the_jwks_url() {
    // The issuer is down from the start: no key was ever fetched.
    let issuer = start_issuer();
    issuer.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = Env::with_issuer(issuer, "");
    let token = e.token("ana@example.com");
    let a = Client::new(&e.gw.url).post_raw(INIT, &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(a.status, 503, "{}", a.body);
    let host = e.issuer.url.trim_start_matches("http://");
    assert!(
        !a.body.contains(host) && !a.body.contains("jwks"),
        "{}",
        a.body
    );
    let wa = a.headers["www-authenticate"].to_str().unwrap();
    assert!(!wa.contains(host), "{wa}");
}
