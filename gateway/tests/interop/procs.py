"""Process harness of the Python tests: start a real binary, wait for its
`listening on URL` line with a deadline, stop it with its own signal.

Used by conftest.py (the interop fixtures) and oauth_e2e/stack.py (the sign-in stack,
also run as a script by ops/scripts/oauth-e2e.sh). One way to start and stop a process,
so that both read the same line the same way and give up at the same deadline; the
shell scripts have the same harness in ops/scripts/lib.sh, the Rust tests in each
crate's tests/it/common.

It raises StartError rather than failing a test: pytest fixtures turn that into
pytest.fail, the stack into its StackError. It knows nothing of configurations.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_DEADLINE_S = 30.0
STOP_DEADLINE_S = 5.0
LISTEN_RE = re.compile(r"^listening on (http://\S+)$", re.MULTILINE)
# A gateway's metrics/admin listener ("metrics on http://ADDR/metrics"), announced
# before its MCP URL.
ADMIN_RE = re.compile(r"metrics on (http://\S+)/metrics")


class StartError(RuntimeError):
    """A process is missing, exited before listening, or did not listen in time."""


def free_port() -> int:
    """A port free right now on 127.0.0.1 (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, sig: int = signal.SIGTERM, deadline_s: float = STOP_DEADLINE_S) -> None:
    """Sends sig to pid (not necessarily our child), waits (polling, bounded) for it to
    go, then SIGKILL."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not pid_alive(pid):
            return
        time.sleep(0.05)  # poll interval, bounded by the deadline
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class Proc:
    """A started child process whose stdout and stderr go to files."""

    name: str
    popen: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    url: str = ""
    # The admin listener's base URL, when the process announced one (a gateway).
    admin_url: str | None = None
    # The gateway stops at once on SIGINT (Pingora's fast shutdown; SIGTERM starts a
    # graceful one with a long grace period); the others stop on SIGTERM.
    stop_signal: int = signal.SIGTERM
    # "PID SIGNAL" in this file while it runs, for a runner's cleanup after a kill.
    pid_file: Path | None = None
    log_limit: int = 4000
    _files: list = field(default_factory=list)

    def log_tail(self, limit: int | None = None) -> str:
        limit = limit or self.log_limit
        out = []
        for p in (self.stdout_path, self.stderr_path):
            try:
                text = p.read_text(errors="replace")
            except OSError:
                text = ""
            out.append(f"--- {self.name} {p.name} ({p}) ---\n{text[-limit:]}")
        return "\n".join(out)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(self.stop_signal)
            try:
                self.popen.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=STOP_DEADLINE_S)
        for f in self._files:
            f.close()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)


def start(
    name: str,
    argv: list[str],
    workdir: Path,
    *,
    stop_signal: int = signal.SIGTERM,
    env: dict[str, str] | None = None,
    pid_dir: Path | None = None,
    new_session: bool = False,
    missing_hint: str = "build it first",
    log_limit: int = 4000,
) -> Proc:
    """Starts argv (stdout and stderr to workdir/NAME.stdout, .stderr) and waits,
    polling with a deadline, for its `listening on URL` line.

    env: extra variables over this process's own (RUST_LOG defaults to info, NO_COLOR
    is set). pid_dir: write "PID SIGNAL" to pid_dir/NAME.pid at once. new_session: its
    own session, so that a Ctrl-C reaches only the runner, which stops it in order.
    Raises StartError (with the logs' tails) when it cannot start."""
    if not Path(argv[0]).is_file():
        raise StartError(f"{argv[0]} is missing: {missing_hint}")
    stdout_path = workdir / f"{name}.stdout"
    stderr_path = workdir / f"{name}.stderr"
    out = open(stdout_path, "wb")
    err = open(stderr_path, "wb")
    full_env = dict(os.environ)
    full_env.setdefault("RUST_LOG", "info")
    full_env["NO_COLOR"] = "1"
    full_env.update(env or {})
    popen = subprocess.Popen(
        argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env, start_new_session=new_session
    )
    pid_file = None
    if pid_dir is not None:
        pid_file = pid_dir / f"{name}.pid"
        pid_file.write_text(f"{popen.pid} {int(stop_signal)}\n")
    proc = Proc(
        name,
        popen,
        stdout_path,
        stderr_path,
        stop_signal=stop_signal,
        pid_file=pid_file,
        log_limit=log_limit,
        _files=[out, err],
    )
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        announced = stdout_path.read_text(errors="replace")
        m = LISTEN_RE.search(announced)
        if m:
            proc.url = m.group(1)
            admin = ADMIN_RE.search(announced)
            proc.admin_url = admin.group(1) if admin else None
            return proc
        if popen.poll() is not None:
            tail = proc.log_tail()
            proc.stop()
            raise StartError(f"{name} exited with {popen.returncode} before listening\n{tail}")
        if time.monotonic() > deadline:
            tail = proc.log_tail()
            proc.stop()
            raise StartError(f"{name} did not print 'listening on URL' within {STARTUP_DEADLINE_S}s\n{tail}")
        time.sleep(0.05)  # poll interval, bounded by the deadline above
