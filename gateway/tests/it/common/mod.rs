//! Test harness: starts the real binaries on ephemeral ports and talks MCP to them.

pub mod issuer;
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Directory holding the workspace's built binaries (target/<profile>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn mock_bin() -> PathBuf {
    let p = bin_dir().join("mcp-mock");
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub url: String,
    /// A gateway's metrics/admin listener (`/metrics`, detailed `/readyz`), when it
    /// announced one.
    pub admin: Option<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// `host:port` of the process's announced `http(s)://host:port/mcp` URL.
    pub fn host_port(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, r)| r);
        rest.trim_end_matches("/mcp")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads stdout lines until one starts with "listening on ", with a deadline.
pub fn read_listen_line(child: &mut Child, what: &str) -> String {
    read_listen_lines(child, what).0
}

/// The announced MCP URL, and the metrics/admin base URL when the process announced
/// one first ("metrics on http://ADDR/metrics").
pub fn read_listen_lines(child: &mut Child, what: &str) -> (String, Option<String>) {
    announcements(child)
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not announce its address within 30 s"))
}

/// Every `listening on URL` line of `child`'s (piped) stdout as it comes, with the admin
/// base URL announced before it, if any; stdout is drained until it closes, so the
/// process never blocks on a full pipe (a process that takes a socket over announces
/// again: the zero-downtime upgrade reads the second line).
pub fn announcements(child: &mut Child) -> std::sync::mpsc::Receiver<(String, Option<String>)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut admin = None;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = line.trim();
                    if let Some(url) = line.strip_prefix("metrics on ") {
                        admin = url.strip_suffix("/metrics").map(str::to_string);
                    }
                    if let Some(url) = line.strip_prefix("listening on ") {
                        let _ = tx.send((url.to_string(), admin.take()));
                    }
                }
            }
        }
    });
    rx
}

/// Starts `mcp-mock --http 127.0.0.1:0 --name NAME` plus extra args.
pub fn spawn_mock(name: &str, extra: &[&str]) -> Proc {
    spawn_mock_at("127.0.0.1:0", name, extra)
}

/// Starts `mcp-mock --http ADDR --name NAME` plus extra args (a fixed address: a
/// backend started again where it was).
pub fn spawn_mock_at(addr: &str, name: &str, extra: &[&str]) -> Proc {
    let mut child = Command::new(mock_bin())
        .args(["--http", addr, "--name", name])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcp-mock");
    let url = read_listen_line(&mut child, "mcp-mock");
    Proc {
        child,
        url,
        admin: None,
    }
}

/// Starts the gateway on the given config text (listen port 0 is filled in).
pub fn spawn_gateway(config: &str) -> Proc {
    spawn_gateway_args(config, &[])
}

pub fn spawn_gateway_args(config: &str, args: &[&str]) -> Proc {
    spawn_gateway_with(config, args, &[], None)
}

/// Starts the gateway with extra environment variables, its stderr (logs) going to
/// `stderr_to` when given.
pub fn spawn_gateway_with(
    config: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    stderr_to: Option<&std::path::Path>,
) -> Proc {
    let dir = tempdir();
    let path = dir.join("gateway.toml");
    // Every gateway gets an admin listener, for the detailed /readyz.
    let config = if config.contains("[metrics]") {
        config.to_string()
    } else {
        format!("{config}\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
    };
    std::fs::write(&path, config).expect("write config");
    let stderr = match stderr_to {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
        None => Stdio::null(),
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"))
        .arg("--config")
        .arg(&path)
        .args(args)
        // Relative paths (the default audit file and spool) land in the temp dir.
        .current_dir(&dir)
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn mcp-gateway");
    let (url, admin) = read_listen_lines(&mut child, "mcp-gateway");
    let p = Proc { child, url, admin };
    wait_until(Duration::from_secs(20), || {
        http_get(&p.url.replace("/mcp", "/healthz")).is_some()
    });
    p
}

pub fn tempdir() -> PathBuf {
    let mut raw = [0u8; 8];
    getrandom(&mut raw);
    let d = std::env::temp_dir().join(format!(
        "mcpgw-test-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    std::fs::create_dir_all(&d).expect("tempdir");
    d
}

fn getrandom(buf: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A port nothing listens on right now (for listeners whose address is announced
/// nowhere, such as the metrics listener).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `cond` until it holds, panicking at the deadline.
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway's detailed readiness document (backends, states, last errors), from its
/// metrics/admin listener.
pub fn readyz_detail(gw: &Proc) -> Value {
    let admin = gw
        .admin
        .as_deref()
        .expect("the gateway announced no admin listener");
    let (_, body) = http_get(&format!("{admin}/readyz")).expect("admin /readyz");
    serde_json::from_str(&body).expect("readyz JSON")
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    let r = blocking().get(url).send().ok()?;
    let s = r.status().as_u16();
    Some((s, r.text().unwrap_or_default()))
}

pub fn blocking() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Config text with the given backends (name, url, extra lines).
pub fn gateway_config(backends: &[(&str, &str, &str)], server_extra: &str) -> String {
    let mut s =
        format!("[server]\nlisten = \"127.0.0.1:0\"\nhealth_interval_s = 1\n{server_extra}\n");
    for (name, url, extra) in backends {
        let timeout = if extra.contains("timeout_ms") {
            ""
        } else {
            "timeout_ms = 3000\n"
        };
        s.push_str(&format!(
            "\n[[backend]]\nname = \"{name}\"\nurl = \"{url}\"\n{timeout}{extra}\n"
        ));
    }
    s
}

/// A raw HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// The JSON-RPC messages in the body (JSON or SSE).
    pub fn messages(&self) -> Vec<Value> {
        let is_sse = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if is_sse {
            sse_messages(&self.body)
        } else if self.body.trim().is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&self.body).expect("JSON body")]
        }
    }

    /// The response to request `id`.
    pub fn response(&self, id: &Value) -> Value {
        self.messages()
            .into_iter()
            .find(|m| m.get("id") == Some(id) && m.get("method").is_none())
            .unwrap_or_else(|| panic!("no response to {id} in {}", self.body))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

pub fn sse_messages(body: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        if !data.is_empty() && !data.join("").trim().is_empty() {
            if let Ok(v) = serde_json::from_str(&data.join("\n")) {
                out.push(v);
            }
        }
    }
    out
}

/// A minimal MCP client over Streamable HTTP (blocking), enough to drive tests.
pub struct Client {
    pub url: String,
    pub session: Option<String>,
    pub version: String,
    http: reqwest::blocking::Client,
    next_id: i64,
}

impl Client {
    pub fn new(url: &str) -> Client {
        Client {
            url: url.to_string(),
            session: None,
            version: "2025-11-25".into(),
            http: blocking(),
            next_id: 1,
        }
    }

    /// Sends raw bytes with the standard MCP headers (and the session, if any).
    pub fn post_raw(
        &self,
        body: impl Into<reqwest::blocking::Body>,
        extra: &[(&str, &str)],
    ) -> Answer {
        self.try_post_raw(body, extra).expect("POST")
    }

    /// As `post_raw`, but a transport error (connection refused or reset) is returned,
    /// for waits that poll until the gateway takes connections again.
    pub fn try_post_raw(
        &self,
        body: impl Into<reqwest::blocking::Body>,
        extra: &[(&str, &str)],
    ) -> Result<Answer, reqwest::Error> {
        let mut rb = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("mcp-protocol-version"))
        {
            rb = rb.header("mcp-protocol-version", &self.version);
        }
        if let Some(s) = &self.session {
            rb = rb.header("mcp-session-id", s);
        }
        for (k, v) in extra {
            rb = rb.header(*k, *v);
        }
        let r = rb.body(body).send()?;
        Ok(Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().unwrap_or_default(),
        })
    }

    pub fn post(&self, msg: &Value) -> Answer {
        self.post_raw(serde_json::to_vec(msg).expect("json"), &[])
    }

    pub fn initialize(&mut self) -> Value {
        self.initialize_with(
            json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}}),
        )
    }

    pub fn initialize_with(&mut self, caps: Value) -> Value {
        let a = self.post(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.version, "capabilities": caps,
            "clientInfo": {"name": "gateway-tests", "version": "1"}}}),
        );
        assert_eq!(a.status, 200, "initialize: {}", a.body);
        self.session = a
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert!(self.session.is_some(), "initialize gave no Mcp-Session-Id");
        let r = a.response(&json!(0));
        let n = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        assert_eq!(n.status, 202, "initialized notification: {}", n.body);
        r
    }

    /// Sends a request and returns its JSON-RPC response.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let a = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        assert_eq!(a.status, 200, "{method}: HTTP {} {}", a.status, a.body);
        a.response(&id)
    }

    pub fn call_tool(&mut self, name: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": args}))
    }

    pub fn tool_names(&mut self) -> Vec<String> {
        let r = self.request("tools/list", json!({}));
        r["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list: {r}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// The first text content of a tools/call result.
pub fn text_of(resp: &Value) -> String {
    resp["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text content in {resp}"))
        .to_string()
}

/// Calls a tool whose backend sends a request to the client (sampling, elicitation,
/// roots) on the reply stream: answers it with `answer` and returns (the server's
/// request as the client saw it, the final response).
pub fn call_answering(cl: &Client, tool: &str, args: Value, answer: Value) -> (Value, Value) {
    let http = blocking();
    let mut resp = http
        .post(&cl.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", cl.session.clone().expect("session"))
        .body(json!({"jsonrpc":"2.0","id":77,"method":"tools/call","params":{"name":tool,"arguments":args}}).to_string())
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 200);
    let mut buf = String::new();
    let mut seen: Option<Value> = None;
    loop {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut resp, &mut chunk).expect("read");
        assert!(n > 0, "stream ended early: {buf}");
        buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
        let msgs = sse_messages(&buf);
        if seen.is_none() {
            if let Some(req) = msgs
                .iter()
                .find(|m| m.get("method").is_some() && m.get("id").is_some())
            {
                let a = cl.post(&json!({"jsonrpc":"2.0","id":req["id"],"result":answer}));
                assert_eq!(a.status, 202, "{}", a.body);
                seen = Some(req.clone());
            }
        }
        if let Some(done) = msgs.iter().find(|m| m["id"] == 77) {
            return (seen.unwrap_or(Value::Null), done.clone());
        }
    }
}

/// Live server processes (not zombies, not the gateway's guards) whose command line
/// contains `marker`.
pub fn servers(marker: &str) -> Vec<u32> {
    live_processes(marker)
        .into_iter()
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !String::from_utf8_lossy(&cmd).contains("__stdio-guard")
        })
        .collect()
}

/// Live (not zombie) processes whose command line contains `marker`.
pub fn live_processes(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd: Vec<u8> = cmd
            .iter()
            .map(|b| if *b == 0 { b' ' } else { *b })
            .collect();
        if !String::from_utf8_lossy(&cmd).contains(marker) {
            continue;
        }
        if process_state(pid).is_some_and(|st| st != 'Z') {
            out.push(pid);
        }
    }
    out
}

/// The state letter of a process (`R`, `S`, `Z` for a zombie, …), `None` when it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Zombie processes whose parent is `ppid`.
pub fn zombies_of(ppid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let mut f = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = f.next();
            let parent = f.next().and_then(|p| p.parse::<u32>().ok());
            state == Some("Z") && parent == Some(ppid)
        })
        .count()
}

/// A name unique to this test run, used to find its processes.
pub fn unique(prefix: &str) -> String {
    let d = tempdir();
    let tail = d
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{prefix}-{}", tail.trim_start_matches("mcpgw-test-"))
}
