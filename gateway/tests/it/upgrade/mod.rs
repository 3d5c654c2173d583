//! Zero-downtime restart: a client load runs across a Pingora graceful upgrade
//! (`mcp-gateway -u` takes the listening socket over, the old process gets SIGQUIT)
//! and sees no failed request.
//!
//! What the handoff looks like from a client (pingora-core 0.9.1, `server/mod.rs`,
//! `server/transfer_fd`, `apps/mod.rs`, `pingora-proxy/src/lib.rs`):
//!
//! 1. The new process, started with `-u`, binds `upgrade_sock` and waits (up to ~6 s)
//!    for the old one to connect. It has not bound the TCP port: the old process still
//!    accepts everything.
//! 2. SIGQUIT makes the old process send its listening sockets over `upgrade_sock`
//!    (SCM_RIGHTS: the very same kernel socket, so no connection is ever refused and the
//!    accept queue is shared). Both processes then accept on it for 5 s
//!    (`CLOSE_TIMEOUT`).
//! 3. The old process stops accepting and starts its graceful shutdown: a request that
//!    is being read or served is answered, with `Connection: close`; a keep-alive
//!    connection parked between two requests is closed **without having read anything
//!    from it** (`handle_new_request` races `read_request` against the shutdown notice
//!    and drops the connection when no request header has arrived). After
//!    `grace_period_seconds` the old process exits.
//!
//! So the one thing a client can see is the classic keep-alive race of step 3: it sends
//! its next request on a reused connection at the moment the server closes that idle
//! connection, and gets EOF/reset before a single response byte. The server never
//! started processing that request, which is why HTTP clients (browsers, curl, hyper's
//! pool, Go's net/http for replayable requests) retry it once on a fresh connection.
//! The client below does exactly that and nothing more. A request counts as **failed**
//! when:
//!   - a new connection cannot be made (refused, reset, timeout): that would be downtime;
//!   - any response byte arrived and the response was then cut, or was not HTTP 200, or
//!     was not the JSON-RPC result expected (the echoed text);
//!   - the request failed on a fresh connection, or failed again after its one retry.
//!
//! The retries of the keep-alive race are counted and printed, not hidden.
//!
//! Two tests: the handoff driven directly (`-u`, then SIGQUIT), and the same driven by
//! the systemd unit's reload script (`ops/systemd/mcp-gateway-reload.sh`) against a
//! daemonized gateway (`-d`, pid file), as `systemctl reload mcp-gateway` runs it
//! ([`systemd`]).

use crate::common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod systemd;

const THREADS: usize = 4;
const SESSION_KEY: &str = "4f1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243a";

/// Phases of the test, as seen by the load threads.
const BEFORE: usize = 0;
const DURING: usize = 1;
const AFTER: usize = 2;

#[derive(Default)]
struct Tally {
    ok: [AtomicU64; 3],
    failed: AtomicU64,
    /// Requests resent once because a reused keep-alive connection was closed before
    /// any response byte (the server never read them).
    keepalive_retries: AtomicU64,
    /// Responses that carried `Connection: close` (the old process draining).
    closed_by_server: AtomicU64,
    first_failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut v = self.first_failures.lock().unwrap();
        if v.len() < 10 {
            v.push(why);
        }
    }
}

/// A process killed (and reaped) on drop.
pub(super) struct Gw {
    pub(super) child: Child,
    name: &'static str,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start_gateway(
    config: &Path,
    yaml: &Path,
    upgrade: bool,
    name: &'static str,
    log: &Path,
) -> (Gw, mpsc::Receiver<(String, Option<String>)>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-gateway"));
    cmd.arg("--config").arg(config).arg("-c").arg(yaml);
    if upgrade {
        cmd.arg("-u");
    }
    let stderr = std::fs::File::create(log).expect("log file");
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn mcp-gateway");
    let rx = common::announcements(&mut child);
    (Gw { child, name }, rx)
}

/// A zero-downtime upgrade from `old`: a new process started with `-u` (`name`, its log
/// in `log`) takes the listening sockets over through `sock` once `old` gets SIGQUIT.
/// `what` names the hand-over in a failure.
pub(super) fn hand_over(
    (config, yaml, sock): (&Path, &Path, &Path),
    old: &Gw,
    name: &'static str,
    log: &Path,
    what: &str,
) -> Gw {
    let _ = std::fs::remove_file(sock);
    let (new, rx) = start_gateway(config, yaml, true, name, log);
    assert!(
        wait_for_socket(sock, Duration::from_secs(30)),
        "{what}: the new process did not open its upgrade socket: {}",
        tail(log)
    );
    let rc = unsafe { libc::kill(old.child.id() as libc::pid_t, libc::SIGQUIT) };
    assert_eq!(rc, 0, "SIGQUIT");
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: no hand-over: {}", tail(log)));
    new
}

pub(super) fn exited_within(
    child: &mut Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Why one attempt of a request did not produce a good answer.
enum Attempt {
    /// Connection closed or reset before any response byte arrived.
    NothingReceived(String),
    /// Anything else: downtime or a broken answer.
    Failed(String),
}

/// A minimal HTTP/1.1 keep-alive client that knows whether its connection is reused
/// and whether any response byte arrived: the two facts that decide if a retry is
/// legitimate.
struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Requests completed on the current connection.
    served: u64,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            served: 0,
        }
    }

    fn reused(&self) -> bool {
        self.stream.is_some() && self.served > 0
    }

    /// Sends one POST /mcp and returns (status, connection-close, body).
    fn post(&mut self, session: &str, body: &str) -> Result<(u16, bool, Vec<u8>), Attempt> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| Attempt::Failed(format!("connect: {e}")))?;
            s.set_nodelay(true).ok();
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
            self.stream = Some(BufReader::new(s));
            self.served = 0;
        }
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
             MCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let r = self.stream.as_mut().unwrap();
        if let Err(e) = r.get_mut().write_all(req.as_bytes()) {
            self.stream = None;
            return Err(Attempt::NothingReceived(format!("write: {e}")));
        }
        let result = read_response(r);
        match &result {
            Ok((_, close, _)) => {
                self.served += 1;
                if *close {
                    self.stream = None;
                }
            }
            Err(_) => self.stream = None,
        }
        result
    }
}

fn read_response(r: &mut BufReader<TcpStream>) -> Result<(u16, bool, Vec<u8>), Attempt> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => {
            return Err(Attempt::NothingReceived(
                "EOF before the status line".into(),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(Attempt::NothingReceived(format!("read: {e}"))),
    }
    // From here on, bytes arrived: any problem is a failure.
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Attempt::Failed(format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        let mut h = String::new();
        let n = r
            .read_line(&mut h)
            .map_err(|e| Attempt::Failed(format!("headers cut: {e}")))?;
        if n == 0 {
            return Err(Attempt::Failed("headers cut by EOF".into()));
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)
                .map_err(|e| Attempt::Failed(format!("chunk size: {e}")))?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| Attempt::Failed(format!("bad chunk size {size:?}")))?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)
                .map_err(|e| Attempt::Failed(format!("body cut: {e}")))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)
            .map_err(|e| Attempt::Failed(format!("body cut: {e}")))?;
    } else {
        // Close-delimited body.
        r.read_to_end(&mut body)
            .map_err(|e| Attempt::Failed(format!("body cut: {e}")))?;
        close = true;
    }
    Ok((status, close, body))
}

fn check_answer(status: u16, body: &[u8], want: &str) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    let text = String::from_utf8_lossy(body);
    let msg: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| format!("bad JSON {e}: {text}"))?
    } else {
        common::sse_messages(&text)
            .into_iter()
            .find(|m| m.get("id").is_some() && m.get("method").is_none())
            .ok_or_else(|| format!("no response in {text}"))?
    };
    match msg["result"]["content"][0]["text"].as_str() {
        Some(t) if t == want => Ok(()),
        _ => Err(format!("unexpected answer {msg}")),
    }
}

fn load(
    addr: SocketAddr,
    session: String,
    thread: usize,
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut conn = Conn::new(addr);
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let want = format!("t{thread}-{i}");
        let body = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "alpha__echo", "arguments": {"text": want}}})
        .to_string();
        let phase_now = phase.load(Ordering::Relaxed);
        let reused = conn.reused();
        let mut outcome = conn.post(&session, &body);
        if let Err(Attempt::NothingReceived(why)) = &outcome {
            if reused {
                // The keep-alive race: the server closed an idle connection without
                // reading this request. Resend once on a fresh connection.
                tally.keepalive_retries.fetch_add(1, Ordering::Relaxed);
                let _ = why;
                outcome = conn.post(&session, &body);
            }
        }
        match outcome {
            Ok((status, close, body)) => {
                if close {
                    tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                }
                match check_answer(status, &body, &want) {
                    Ok(()) => {
                        tally.ok[phase_now].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tally.fail(format!("thread {thread} request {i}: {e}")),
                }
            }
            Err(Attempt::NothingReceived(e)) | Err(Attempt::Failed(e)) => {
                tally.fail(format!(
                    "thread {thread} request {i} (phase {phase_now}, reused {reused}): {e}"
                ));
                // Do not spin on a dead server.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

pub(super) fn wait_for_socket(path: &Path, limit: Duration) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let start = Instant::now();
    while start.elapsed() < limit {
        if std::fs::metadata(path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub(super) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A client load running in the background: one keep-alive connection and one MCP
/// session per thread.
struct Load {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let url = format!("http://{addr}/mcp");
        // Sessions sealed with the shared session key: the new process accepts them.
        let sessions: Vec<String> = (0..threads)
            .map(|_| {
                let mut c = common::Client::new(&url);
                c.initialize();
                c.session.clone().unwrap()
            })
            .collect();
        let phase = Arc::new(AtomicUsize::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let workers = sessions
            .into_iter()
            .enumerate()
            .map(|(t, s)| {
                let (phase, stop, tally) = (phase.clone(), stop.clone(), tally.clone());
                std::thread::spawn(move || load(addr, s, t, phase, stop, tally))
            })
            .collect();
        Load {
            phase,
            stop,
            tally,
            workers,
        }
    }

    fn set_phase(&self, p: usize) {
        self.phase.store(p, Ordering::Relaxed);
    }

    /// Stops the load and asserts: no failed request, requests served in every phase.
    fn finish(mut self, what: &str, logs: &[&PathBuf]) {
        let failed = self.stop_and_report(what);
        let t = &self.tally;
        let ok: Vec<u64> = t.ok.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let tails: Vec<String> = logs
            .iter()
            .map(|l| format!("--- {}:\n{}", l.display(), tail(l)))
            .collect();
        assert_eq!(
            failed,
            0,
            "failed requests: {:#?}\n{}",
            t.first_failures.lock().unwrap(),
            tails.join("\n")
        );
        assert!(ok[BEFORE] > 0, "no request served before the upgrade");
        assert!(ok[DURING] > 0, "no request served during the upgrade");
        assert!(
            ok[AFTER] > 0,
            "no request served after the old process exited"
        );
    }

    /// Stops the load, prints the counts, returns the number of failed requests.
    fn stop_and_report(&mut self, what: &str) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            w.join().expect("load thread");
        }
        let t = &self.tally;
        let ok: Vec<u64> = t.ok.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let failed = t.failed.load(Ordering::Relaxed);
        eprintln!(
            "{what}: served before {}, during {}, after {}; failed {failed}; \
             keep-alive races retried {}; responses with Connection: close {}",
            ok[BEFORE],
            ok[DURING],
            ok[AFTER],
            t.keepalive_retries.load(Ordering::Relaxed),
            t.closed_by_server.load(Ordering::Relaxed)
        );
        failed
    }
}

/// A gateway config on a fixed port with a session key, and a Pingora YAML with the
/// upgrade socket and pid file in `dir`.
fn write_configs(
    dir: &Path,
    addr: SocketAddr,
    backend: &str,
) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nsession_key = \"{SESSION_KEY}\"\nhealth_interval_s = 1\n\n\
             [[backend]]\nname = \"alpha\"\nurl = \"{backend}\"\ntimeout_ms = 10000\n"
        ),
    )
    .unwrap();
    let sock = dir.join("upgrade.sock");
    let pid_file = dir.join("gateway.pid");
    let yaml = dir.join("pingora.yaml");
    std::fs::write(
        &yaml,
        format!(
            "---\nversion: 1\nthreads: 2\ndaemon: false\n\
             pid_file: {}\nupgrade_sock: {}\n\
             grace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1\n",
            pid_file.display(),
            sock.display()
        ),
    )
    .unwrap();
    (config, yaml, sock, pid_file)
}

#[test]
fn graceful_upgrade_drops_no_request() {
    let mock = common::spawn_mock("alpha", &["--json", "--no-dynamic"]);
    let dir = common::tempdir();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (config, yaml, sock, _) = write_configs(&dir, addr, &mock.url);

    // The old process.
    let old_log = dir.join("old.log");
    let (mut old, old_rx) = start_gateway(&config, &yaml, false, "old", &old_log);
    let (url, _) = old_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("old gateway did not start: {}", tail(&old_log)));
    assert_eq!(url, format!("http://{addr}/mcp"));
    common::wait_until(Duration::from_secs(20), || {
        common::http_get(&format!("http://{addr}/healthz")).is_some()
    });

    let load = Load::start(addr, THREADS);
    std::thread::sleep(Duration::from_millis(1500));

    // The upgrade: start the new process with -u, then SIGQUIT the old one.
    load.set_phase(DURING);
    let upgrade_started = Instant::now();
    let new_log = dir.join("new.log");
    let (mut new, new_rx) = start_gateway(&config, &yaml, true, "new", &new_log);
    assert!(
        wait_for_socket(&sock, Duration::from_secs(20)),
        "the new process did not open {}: {}",
        sock.display(),
        tail(&new_log)
    );
    let rc = unsafe { libc::kill(old.child.id() as libc::pid_t, libc::SIGQUIT) };
    assert_eq!(rc, 0, "SIGQUIT to the old process");
    let (new_url, _) = new_rx
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| {
            panic!(
                "new gateway did not take the socket over: {}\n--- old:\n{}",
                tail(&new_log),
                tail(&old_log)
            )
        });
    assert_eq!(new_url, url);
    // 5 s CLOSE_TIMEOUT + 1 s grace + 1 s runtime shutdown, with margin.
    let status = exited_within(&mut old.child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("old process still running: {}", tail(&old_log)));
    assert!(status.success(), "old process exit: {status:?}");
    eprintln!(
        "upgrade: handoff and old process exit in {:.1?}",
        upgrade_started.elapsed()
    );

    load.set_phase(AFTER);
    std::thread::sleep(Duration::from_millis(1500));

    // The new process is the one serving now.
    assert!(
        new.child.try_wait().unwrap().is_none(),
        "{} exited",
        new.name
    );
    let (code, _) = common::http_get(&format!("http://{addr}/healthz")).expect("healthz after");
    assert_eq!(code, 200);
    load.finish("upgrade", &[&old_log, &new_log]);
    drop(old);
    drop(mock);
}

/// Control: the same load across a plain restart (SIGTERM, then a new process without
/// -u) does fail requests, so the zero above is the upgrade's doing, not a blind
/// harness. Not run by default (it is about the harness, and slow to fail):
/// `cargo test -p mcp-gateway --test it -- --ignored upgrade::`.
#[test]
#[ignore]
fn control_plain_restart_fails_requests() {
    let mock = common::spawn_mock("alpha", &["--json", "--no-dynamic"]);
    let dir = common::tempdir();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (config, yaml, _, _) = write_configs(&dir, addr, &mock.url);
    let old_log = dir.join("old.log");
    let (mut old, old_rx) = start_gateway(&config, &yaml, false, "old", &old_log);
    old_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("old gateway started");
    common::wait_until(Duration::from_secs(20), || {
        common::http_get(&format!("http://{addr}/healthz")).is_some()
    });
    let mut load = Load::start(addr, 2);
    std::thread::sleep(Duration::from_millis(500));
    load.set_phase(DURING);
    unsafe { libc::kill(old.child.id() as libc::pid_t, libc::SIGTERM) };
    exited_within(&mut old.child, Duration::from_secs(20)).expect("old process exits");
    let new_log = dir.join("new.log");
    let (_new, new_rx) = start_gateway(&config, &yaml, false, "new", &new_log);
    new_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("new gateway started");
    load.set_phase(AFTER);
    std::thread::sleep(Duration::from_millis(500));
    let failed = load.stop_and_report("plain restart (control)");
    assert!(
        failed > 0,
        "a plain restart failed no request: the harness is blind"
    );
}
