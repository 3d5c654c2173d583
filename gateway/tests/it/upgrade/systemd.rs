//! `systemctl reload mcp-gateway`: the unit's reload script (`ops/systemd/
//! mcp-gateway-reload.sh`) hands a daemonized gateway (`-d`, pid file) over to a new
//! process under the same client load as [`super::graceful_upgrade_drops_no_request`],
//! which fails no request.

use super::{tail, write_configs, Load, AFTER, DURING};
use crate::common;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The daemonized gateways of a test (no children of ours): on drop, whatever the pid
/// file names and every pid seen is killed, also when the test fails half-way.
struct Daemons {
    pid_file: PathBuf,
    seen: Vec<u32>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.seen.extend(read_pid(&self.pid_file));
        for pid in &self.seen {
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Running, and not a zombie (a daemon's exit is reaped by whoever adopted it).
fn alive(pid: u32) -> bool {
    !matches!(common::process_state(pid), Some('Z') | Some('X') | None)
}

#[test]
fn reload_script_hands_over() {
    let mock = common::spawn_mock("alpha", &["--json", "--no-dynamic"]);
    let dir = common::tempdir();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let (config, yaml, _, pid_file) = write_configs(&dir, addr, &mock.url);
    let bin = env!("CARGO_BIN_EXE_mcp-gateway");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/systemd/mcp-gateway-reload.sh");
    assert!(script.exists(), "{} is missing", script.display());
    let log = dir.join("gateway.log");
    let log_file = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap()
    };

    // ExecStart: the gateway daemonizes and writes its pid file.
    let status = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("-c")
        .arg(&yaml)
        .arg("-d")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file())
        .status()
        .expect("start mcp-gateway -d");
    assert!(
        status.success(),
        "mcp-gateway -d: {status:?}: {}",
        tail(&log)
    );
    let mut daemons = Daemons {
        pid_file: pid_file.clone(),
        seen: Vec::new(),
    };
    common::wait_until(Duration::from_secs(20), || read_pid(&pid_file).is_some());
    let old_pid = read_pid(&pid_file).unwrap();
    daemons.seen.push(old_pid);
    common::wait_until(Duration::from_secs(20), || {
        common::http_get(&format!("http://{addr}/healthz")).is_some()
    });

    let load = Load::start(addr, 2);
    std::thread::sleep(Duration::from_millis(1000));

    // ExecReload, with what systemd gives it: MAINPID and the unit's environment.
    load.set_phase(DURING);
    let started = Instant::now();
    let out = Command::new("sh")
        .arg(&script)
        .env("MAINPID", old_pid.to_string())
        .env("MCP_GATEWAY_BIN", bin)
        .env("MCP_GATEWAY_CONFIG", &config)
        .env("MCP_GATEWAY_PINGORA", &yaml)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file())
        .status()
        .expect("run the reload script");
    assert!(out.success(), "reload script: {out:?}\n{}", tail(&log));
    let new_pid = read_pid(&pid_file).expect("pid file after reload");
    daemons.seen.push(new_pid);
    assert_ne!(new_pid, old_pid, "the pid file still names the old process");
    assert_eq!(read_pid(&dir.join("gateway.pid.old")), Some(old_pid));
    common::wait_until(Duration::from_secs(20), || !alive(old_pid));
    daemons.seen.retain(|p| *p != old_pid);
    eprintln!(
        "reload script: handoff and old process exit in {:.1?}",
        started.elapsed()
    );

    load.set_phase(AFTER);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(alive(new_pid), "the new process died: {}", tail(&log));
    load.finish("systemd reload", &[&log]);
    drop(daemons);
    drop(mock);
}
