//! Stopping loses no call, even from a client that never retries (`crate::drain` in the
//! gateway): `mcp-load --no-retry` counts every socket error as a failed call, and the
//! tests require zero across
//! - successive `-u` upgrades (`upgrades_lose_no_call_without_retry`), and
//! - SIGTERM of one of two replicas behind HAProxy, round-robin, health-checking
//!   `/readyz` (`sigterm_behind_haproxy_loses_no_call`).
//!
//! The machine is shared, so the tests assert zero failures, not a rate; the load runs
//! as fast as it goes unless `MCP_DRAIN_RATE` (calls/s) is set. `MCP_DRAIN_UPGRADES`
//! sets the number of upgrades (20), `MCP_DRAIN_CONNECTIONS` the load's connections (8). The 5,000 calls/s run is
//! `ops/scripts/bench-drain.sh` (release build).

use crate::common;
use crate::upgrade::{exited_within, hand_over, start_gateway, tail, Gw};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const SESSION_KEY: &str = "5a1c2a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170615243a";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The load's connections: `MCP_DRAIN_CONNECTIONS`, else 8.
fn connections() -> usize {
    env_or("MCP_DRAIN_CONNECTIONS", 8) as usize
}

/// Gateway TOML (drain window 2 s, `stop_delay_s`) and Pingora YAML (grace 4 s).
fn configs(dir: &Path, addr: SocketAddr, backend: &str, stop_delay_s: u64) -> (PathBuf, PathBuf) {
    let tag = addr.port();
    let config = dir.join(format!("gateway-{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{addr}\"\nsession_key = \"{SESSION_KEY}\"\n\
             drain_s = 2\nstop_delay_s = {stop_delay_s}\nhealth_interval_s = 1\n\n\
             [[backend]]\nname = \"alpha\"\nurl = \"{backend}\"\ntimeout_ms = 10000\n"
        ),
    )
    .unwrap();
    let yaml = dir.join(format!("pingora-{tag}.yaml"));
    std::fs::write(
        &yaml,
        format!(
            "---\nversion: 1\nthreads: 2\ndaemon: false\n\
             pid_file: {}\nupgrade_sock: {}\n\
             grace_period_seconds: 4\ngraceful_shutdown_timeout_seconds: 1\n",
            dir.join(format!("gateway-{tag}.pid")).display(),
            dir.join(format!("upgrade-{tag}.sock")).display(),
        ),
    )
    .unwrap();
    (config, yaml)
}

/// `mcp-load --no-retry` in the background, until `stop` exists.
struct Load {
    child: Child,
    stop: PathBuf,
    out: PathBuf,
}

impl Load {
    fn start(url: &str, dir: &Path, connections: usize) -> Load {
        let bin = common::bin_dir().join("mcp-load");
        assert!(
            bin.exists(),
            "{} is missing: cargo build -p mcp-loadgen",
            bin.display()
        );
        let stop = dir.join("stop-load");
        let out = dir.join("load.json");
        let rate = env_or("MCP_DRAIN_RATE", 0);
        let child = Command::new(bin)
            .args([
                "--url",
                url,
                "--no-retry",
                "--json",
                "--tool",
                "alpha__echo",
            ])
            .args(["--connections", &connections.to_string()])
            .args(["--rate", &rate.to_string(), "--duration", "900"])
            .arg("--stop-file")
            .arg(&stop)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mcp-load");
        Load { child, stop, out }
    }

    /// Ends the load; its report.
    fn finish(mut self) -> Value {
        std::fs::write(&self.stop, b"").unwrap();
        let status =
            exited_within(&mut self.child, Duration::from_secs(30)).expect("mcp-load ends");
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let report: Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("mcp-load report {text:?} ({status:?}): {e}"));
        eprintln!("load: {report}");
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_no_failure(report: &Value, logs: &[&PathBuf]) {
    let tails: Vec<String> = logs
        .iter()
        .map(|l| format!("--- {}:\n{}", l.display(), tail(l)))
        .collect();
    assert_eq!(
        report["failed"].as_u64(),
        Some(0),
        "failed calls: {}\n{}",
        report["first_failures"],
        tails.join("\n")
    );
    assert!(report["ok"].as_u64().unwrap_or(0) > 0, "no call served");
}

fn wait_healthy(addr: SocketAddr) {
    common::wait_until(Duration::from_secs(20), || {
        common::http_get(&format!("http://{addr}/healthz")).is_some()
    });
}

#[test]
fn upgrades_lose_no_call_without_retry() {
    let upgrades = env_or("MCP_DRAIN_UPGRADES", 20);
    let mock = common::spawn_mock("alpha", &["--json", "--no-dynamic"]);
    let dir = common::tempdir();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (config, yaml) = configs(&dir, addr, &mock.url, 0);
    let sock = dir.join(format!("upgrade-{}.sock", addr.port()));
    let first_log = dir.join("gw-0.log");
    let (first, rx) = start_gateway(&config, &yaml, false, "gw-0", &first_log);
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("gateway did not start: {}", tail(&first_log)));
    wait_healthy(addr);

    let load = Load::start(&format!("http://{addr}/mcp"), &dir, connections());
    let mut logs = vec![first_log];
    let mut current = first;
    let mut retired: Vec<Gw> = Vec::new();
    for n in 1..=upgrades {
        // Each hand-over runs while the previous old processes still drain.
        let log = dir.join(format!("gw-{n}.log"));
        let files = (config.as_path(), yaml.as_path(), sock.as_path());
        let next = hand_over(files, &current, "gw-next", &log, &format!("upgrade {n}"));
        logs.push(log);
        retired.push(std::mem::replace(&mut current, next));
        // A process exits 5 s (Pingora's CLOSE_TIMEOUT) + the grace period after its
        // SIGQUIT: at most a few at once.
        retired.retain_mut(|g| g.child.try_wait().ok().flatten().is_none());
        while retired.len() > 2 {
            let mut oldest = retired.remove(0);
            let st = exited_within(&mut oldest.child, Duration::from_secs(30));
            assert!(st.is_some_and(|s| s.success()), "an old process: {st:?}");
        }
    }
    for mut g in retired {
        let st = exited_within(&mut g.child, Duration::from_secs(30));
        assert!(st.is_some_and(|s| s.success()), "an old process: {st:?}");
    }
    let report = load.finish();
    eprintln!(
        "{upgrades} upgrades: {} calls, {} failed, {} answers with Connection: close, {:.0} calls/s",
        report["ok"], report["failed"], report["connection_close"], report["rps"].as_f64().unwrap_or(0.0)
    );
    let log_refs: Vec<&PathBuf> = logs.iter().rev().take(3).collect();
    assert_no_failure(&report, &log_refs);
    assert!(
        report["connection_close"].as_u64().unwrap_or(0) > 0,
        "no answer said Connection: close: the old processes did not drain"
    );
    drop(current);
    drop(mock);
}

/// HAProxy in front of two gateways, round-robin, `/readyz` checked every 200 ms (down
/// after two 503s, well within the gateways' 2 s `stop_delay_s`); no
/// retries of any kind (`retries 0`).
fn haproxy(dir: &Path, front: SocketAddr, a: SocketAddr, b: SocketAddr) -> (Child, PathBuf) {
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode http\n  retries 0\n  timeout connect 2s\n  timeout client 60s\n  \
             timeout server 60s\n  timeout http-keep-alive 60s\n  timeout check 2s\n\
             frontend fe\n  bind {front}\n  default_backend gateways\n\
             backend gateways\n  balance roundrobin\n  option httpchk\n  \
             http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host 127.0.0.1\n  \
             http-check expect status 200\n  \
             server a {a} check inter 200ms fall 2 rise 1\n  \
             server b {b} check inter 200ms fall 2 rise 1\n"
        ),
    )
    .unwrap();
    let log = dir.join("haproxy.log");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("haproxy (ops/scripts/install-tools.sh --test installs it)");
    (child, log)
}

#[test]
fn sigterm_behind_haproxy_loses_no_call() {
    let mock = common::spawn_mock("alpha", &["--json", "--no-dynamic"]);
    let dir = common::tempdir();
    let port = || -> SocketAddr {
        format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap()
    };
    let (a, b, front) = (port(), port(), port());
    let mut gws = Vec::new();
    let mut logs = Vec::new();
    for (addr, name) in [(a, "gw-a"), (b, "gw-b")] {
        let (config, yaml) = configs(&dir, addr, &mock.url, 2);
        let log = dir.join(format!("{name}.log"));
        let (gw, rx) = start_gateway(&config, &yaml, false, name, &log);
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} did not start: {}", tail(&log)));
        wait_healthy(addr);
        gws.push(gw);
        logs.push(log);
    }
    let (mut proxy, proxy_log) = haproxy(&dir, front, a, b);
    common::wait_until(Duration::from_secs(20), || {
        common::http_get(&format!("http://{front}/readyz")).is_some_and(|(c, _)| c == 200)
    });
    let load = Load::start(&format!("http://{front}/mcp"), &dir, connections());
    // Let the load spread over both replicas before one of them stops.
    std::thread::sleep(Duration::from_millis(1500));
    let mut stopped = gws.remove(0);
    let rc = unsafe { libc::kill(stopped.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "SIGTERM");
    let st = exited_within(&mut stopped.child, Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "gw-a exit: {st:?}");
    // The survivor serves everything now.
    std::thread::sleep(Duration::from_millis(1000));
    let report = load.finish();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_no_failure(&report, &[&logs[0], &logs[1], &proxy_log]);
    let stopped_log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
    assert!(
        stopped_log.contains("SIGTERM: /readyz answers 503"),
        "gw-a did not drain: {}",
        tail(&logs[0])
    );
    // Not blind: the stopped replica was serving the load.
    let served = stopped_log.matches("/mcp").count();
    eprintln!("gw-a logged {served} /mcp requests");
    assert!(served > 100, "gw-a served no load: {}", tail(&logs[0]));
    drop(gws);
    drop(mock);
}

/// Reads `resp` until `done(text so far)` or the end of the stream; the text read.
fn read_sse_until(resp: &mut reqwest::blocking::Response, done: impl Fn(&str) -> bool) -> String {
    use std::io::Read;
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !done(&text) {
        match resp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}

/// The last `id:` of the complete events in `text`.
fn last_event_id(text: &str) -> Option<String> {
    let complete = &text[..text.rfind("\n\n")?];
    complete
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().to_string())
}

/// A 2025 client's call whose SSE answer is in flight at an upgrade: the old process
/// ends the stream at an event boundary (its events carry ids), and the client resumes
/// with `GET` + `Last-Event-ID` on the new process, which relays it to the backend: the
/// result arrives there.
#[test]
fn a_stream_ended_at_an_upgrade_resumes_on_the_new_process() {
    let mock = common::spawn_mock("alpha", &["--no-dynamic"]);
    let dir = common::tempdir();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (config, yaml) = configs(&dir, addr, &mock.url, 0);
    let sock = dir.join(format!("upgrade-{}.sock", addr.port()));
    let old_log = dir.join("gw-old.log");
    let (mut old, rx) = start_gateway(&config, &yaml, false, "gw-old", &old_log);
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("gateway did not start: {}", tail(&old_log)));
    let url = format!("http://{addr}/backends/alpha/mcp");
    let mut cl = common::Client::new(&url);
    cl.initialize();
    let sid = cl.session.clone().expect("a session");
    // The backend answers progress at once and the result after 20 s: long after the
    // old process has ended the stream.
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "slow", "arguments": {"ms": 20000}, "_meta": {"progressToken": "p"}}});
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut resp = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", &sid)
        .body(call.to_string())
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 200);
    // A priming event (an id, no data) first, then the progress notification.
    let first = read_sse_until(&mut resp, |t| {
        t.contains("notifications/progress") && t.ends_with("\n\n")
    });
    assert!(first.contains("notifications/progress"), "{first}");

    let new_log = dir.join("gw-new.log");
    let files = (config.as_path(), yaml.as_path(), sock.as_path());
    let new = hand_over(files, &old, "gw-new", &new_log, "the upgrade");
    // The old process ends the stream; nothing of the result came on it.
    let rest = read_sse_until(&mut resp, |_| false);
    let seen = format!("{first}{rest}");
    assert!(!seen.contains("slept"), "the stream was not ended: {seen}");
    let last = last_event_id(&seen).expect("an event id");
    // The client waits the stream's `retry` before it reconnects (a MUST of the
    // 2025-11-25 transport): by then it has seen the old connection close.
    let retry_ms: u64 = seen
        .lines()
        .find_map(|l| l.strip_prefix("retry:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no retry field before the close: {seen}"));
    std::thread::sleep(Duration::from_millis(retry_ms));

    let mut resumed = http
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", &sid)
        .header("last-event-id", &last)
        .send()
        .expect("GET with Last-Event-ID");
    assert_eq!(resumed.status(), 200);
    let replay = read_sse_until(&mut resumed, |t| t.contains("slept 20000"));
    let answer = common::sse_messages(&replay)
        .into_iter()
        .find(|m| m["id"] == 77)
        .unwrap_or_else(|| panic!("no result on the resumed stream: {replay}"));
    assert_eq!(common::text_of(&answer), "slept 20000", "{answer}");
    let st = exited_within(&mut old.child, Duration::from_secs(30));
    assert!(st.is_some_and(|s| s.success()), "the old process: {st:?}");
    drop(new);
    drop(mock);
}
