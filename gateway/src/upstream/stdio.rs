//! STDIO backends: child processes speaking newline-delimited JSON-RPC.
//!
//! Every child runs under a small guard: the gateway binary re-executed as
//! `mcp-gateway __stdio-guard CMD ARGS…`. The guard puts the server in its own process
//! group and, when asked to stop or when the gateway dies (it holds a parent-death
//! signal), terminates the whole group, so a gateway that exits, upgrades or crashes
//! leaves no child behind. The guard exits when the server exits, and the gateway
//! reaps it, so no zombie stays either.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::mpsc as std_mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::channel::LinkHandle;
use super::UpstreamError;
use crate::config::StdioConfig;

/// First argument that turns the gateway binary into the guard.
pub const GUARD_ARG: &str = "__stdio-guard";

/// Longest stderr line logged (the rest is cut).
const STDERR_LINE_MAX: usize = 4096;
/// Longest stdout line accepted as a message; longer ones are skipped.
const STDOUT_LINE_MAX: usize = super::http::MAX_MESSAGE;

type SpawnRequest = (
    std::process::Command,
    oneshot::Sender<std::io::Result<std::process::Child>>,
);

/// All children are forked from one long-lived thread: a parent-death signal fires
/// when the *thread* that forked the child ends, and this one lives as long as the
/// process.
fn spawner() -> &'static std::sync::Mutex<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<std::sync::Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        let _ = std::thread::Builder::new()
            .name("stdio-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
        std::sync::Mutex::new(tx)
    })
}

async fn spawn(cmd: std::process::Command) -> std::io::Result<std::process::Child> {
    let (tx, rx) = oneshot::channel();
    spawner()
        .lock()
        .map_err(|_| std::io::Error::other("spawner lock poisoned"))?
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("spawner dropped the request"))?
}

/// A running guarded child.
pub struct ChildProcess {
    pid: u32,
    child: std::process::Child,
}

impl ChildProcess {
    /// Asks the guard to stop the server's process group, then reaps it (SIGKILL after
    /// `grace`).
    pub async fn stop(mut self, grace: Duration) {
        // SAFETY: kill(2) with a pid we own; no memory is touched.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reaps the guard after its stdout closed; returns how it ended.
    pub async fn reap(mut self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe_status(status),
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => {
                    let _ = self.child.kill();
                    return match self.child.wait() {
                        Ok(s) => describe_status(s),
                        Err(e) => e.to_string(),
                    };
                }
            }
        }
    }
}

fn describe_status(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".into(),
    }
}

/// Starts the server under the guard and wires its pipes into a [`LinkHandle`].
pub async fn start(backend: &str, cfg: &StdioConfig) -> Result<LinkHandle, UpstreamError> {
    let (process, pipes) = spawn_guarded(cfg).await?;
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(1024);
    let (in_tx, in_rx) = mpsc::channel::<Value>(1024);
    let (done_tx, done_rx) = oneshot::channel::<String>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(write_stdin(pipes.stdin, out_rx));
    tokio::spawn(log_stderr(backend.to_string(), pipes.stderr));
    tokio::spawn(read_stdout(
        backend.to_string(),
        pipes.stdout,
        process,
        in_tx,
        stop_rx,
        done_tx,
    ));
    Ok(LinkHandle {
        out: out_tx,
        incoming: in_rx,
        done: done_rx,
        stop: Some(stop_tx),
    })
}

/// The child's three pipes, on the tokio runtime.
struct ChildPipes {
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
}

/// The guard's command line: `/proc/self/exe __stdio-guard CMD ARGS…`, a clean
/// environment plus the configured one, piped stdio, its own process group and a
/// parent-death signal.
fn guard_command(cfg: &StdioConfig) -> std::process::Command {
    // The running binary itself, even if an upgrade replaced the file on disk.
    let mut cmd = std::process::Command::new("/proc/self/exe");
    {
        use std::os::unix::process::CommandExt;
        cmd.arg0("mcp-gateway");
    }
    cmd.arg(GUARD_ARG).arg(&cfg.command).args(&cfg.args);
    cmd.env_clear();
    for key in ["PATH", "HOME", "LANG", "TMPDIR", "USER"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in &cfg.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &cfg.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    cmd
}

/// Spawns the guard and takes its pipes.
async fn spawn_guarded(cfg: &StdioConfig) -> Result<(ChildProcess, ChildPipes), UpstreamError> {
    let cmd = guard_command(cfg);
    let mut child = spawn(cmd).await.map_err(|e| {
        UpstreamError::Connect(format!(
            "cannot start the process guard of {:?}: {e}",
            cfg.command
        ))
    })?;
    let pid = child.id();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(UpstreamError::Connect("child pipes missing".into()));
    };
    let to_io = |e: std::io::Error| UpstreamError::Connect(format!("child pipe: {e}"));
    let stdin = tokio::process::ChildStdin::from_std(stdin).map_err(to_io)?;
    let stdout = tokio::process::ChildStdout::from_std(stdout).map_err(to_io)?;
    let stderr = tokio::process::ChildStderr::from_std(stderr).map_err(to_io)?;
    let process = ChildProcess { pid, child };

    Ok((
        process,
        ChildPipes {
            stdin,
            stdout,
            stderr,
        },
    ))
}

/// Writer: one JSON message per line; whatever is queued goes out in one write.
async fn write_stdin(stdin: tokio::process::ChildStdin, mut out_rx: mpsc::Receiver<Bytes>) {
    let mut stdin = tokio::io::BufWriter::with_capacity(64 * 1024, stdin);
    'outer: while let Some(line) = out_rx.recv().await {
        let mut next = Some(line);
        while let Some(line) = next {
            if stdin.write_all(&line).await.is_err() || stdin.write_all(b"\n").await.is_err() {
                break 'outer;
            }
            next = out_rx.try_recv().ok();
        }
        if stdin.flush().await.is_err() {
            break;
        }
    }
}

/// Stderr: logged line by line, tagged with the backend; always drained.
async fn log_stderr(name: String, stderr: tokio::process::ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match read_line_capped(&mut reader, &mut buf, STDERR_LINE_MAX).await {
            Ok(None) | Err(_) => return,
            Ok(Some(_)) => {
                let text = String::from_utf8_lossy(&buf);
                tracing::info!(backend = %name, "stderr: {}", text.trim_end());
            }
        }
    }
}

/// Reader: lines → messages; garbage is logged and skipped. When stdout closes the
/// child is gone: reap it and report how it ended.
async fn read_stdout(
    name: String,
    stdout: tokio::process::ChildStdout,
    process: ChildProcess,
    in_tx: mpsc::Sender<Value>,
    mut stop_rx: oneshot::Receiver<()>,
    done_tx: oneshot::Sender<String>,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut buf = Vec::with_capacity(4096);
    let mut skipped = 0u64;
    let stopped = loop {
        buf.clear();
        let line = tokio::select! {
            l = read_line_capped(&mut reader, &mut buf, STDOUT_LINE_MAX) => l,
            _ = &mut stop_rx => break true,
        };
        match line {
            Ok(None) | Err(_) => break false,
            Ok(Some(false)) => {
                skipped += 1;
                tracing::warn!(backend = %name, skipped, "skipped a stdout line longer than {STDOUT_LINE_MAX} bytes");
            }
            Ok(Some(true)) => {
                let trimmed = trim_ascii(&buf);
                if trimmed.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Value>(trimmed) {
                    Ok(v) if v.is_object() => {
                        if in_tx.send(v).await.is_err() {
                            break false;
                        }
                    }
                    _ => {
                        skipped += 1;
                        let mut preview =
                            String::from_utf8_lossy(&trimmed[..trimmed.len().min(120)])
                                .into_owned();
                        preview.retain(|c| !c.is_control());
                        tracing::warn!(backend = %name, skipped, line = %preview, "skipped a stdout line that is not a JSON-RPC message");
                    }
                }
            }
        }
    };
    drop(in_tx);
    let how = if stopped {
        process.stop(Duration::from_secs(3)).await;
        "stopped by the gateway".to_string()
    } else {
        process.reap().await
    };
    let _ = done_tx.send(how);
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Reads one line into `buf` (without the newline). `Ok(None)`: end of stream;
/// `Ok(Some(false))`: the line was longer than `max` and was discarded.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    let mut overflow = false;
    let mut any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if any { Some(!overflow) } else { None });
        }
        any = true;
        let (chunk, found) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !overflow {
            if buf.len() + chunk.len() > max {
                overflow = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(available.len());
        r.consume(used);
        if found.is_some() {
            return Ok(Some(!overflow));
        }
    }
}

/// The guard's main: `mcp-gateway __stdio-guard CMD ARGS…`. Returns the exit code.
pub fn guard_main(args: Vec<OsString>) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("mcp-gateway {GUARD_ARG}: missing command");
        return 2;
    };
    // SAFETY: plain libc calls on local, initialised data.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        // The gateway may have died before we blocked its death signal.
        if libc::getppid() == 1 {
            return 143;
        }
        let mut command = std::process::Command::new(cmd);
        command.args(rest);
        {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot start {cmd:?}: {e}");
                return 127;
            }
        };
        let pid = child.id() as libc::pid_t;
        loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            if sig == libc::SIGCHLD {
                let mut status = 0;
                let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
                if r == pid {
                    // Whatever the server left in its group goes with it.
                    libc::kill(-pid, libc::SIGKILL);
                    return if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        128 + libc::WTERMSIG(status)
                    };
                }
                continue;
            }
            // Asked to stop (or the gateway died): TERM the group, then KILL.
            libc::kill(-pid, libc::SIGTERM);
            for _ in 0..100 {
                let mut status = 0;
                if libc::waitpid(pid, &mut status, libc::WNOHANG) == pid {
                    libc::kill(-pid, libc::SIGKILL);
                    return 128 + sig;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            libc::kill(-pid, libc::SIGKILL);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            return 128 + sig;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_line_reader() {
        let data = b"short\nthis line is too long\nok\nlast";
        let mut r = BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 10).await.unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"short");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 10).await.unwrap(),
            Some(false)
        );
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 10).await.unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"ok");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 10).await.unwrap(),
            Some(true)
        );
        assert_eq!(buf, b"last");
        buf.clear();
        assert_eq!(read_line_capped(&mut r, &mut buf, 10).await.unwrap(), None);
    }

    #[test]
    fn trims() {
        assert_eq!(trim_ascii(b"  {}\r"), b"{}");
        assert_eq!(trim_ascii(b"   "), b"");
    }
}
