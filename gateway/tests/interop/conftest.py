"""Process fixtures for the interoperability tests.

Starts the real binaries (mcp-mock backends and mcp-gateway) on ephemeral ports,
reads their addresses back from the `listening on URL` line they print on stdout,
and stops them when the fixture ends. Nothing is assumed about fixed ports.

Binaries default to <repo>/target/debug; override with MCP_GATEWAY_BIN / MCP_MOCK_BIN.
"""

from __future__ import annotations

import os
from importlib import metadata
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    _MCP_MAJOR = int(metadata.version("mcp").split(".")[0])
except metadata.PackageNotFoundError:
    _MCP_MAJOR = 0
if _MCP_MAJOR < 2:
    raise pytest.UsageError(
        "these tests use the official Python SDK 2.x API (mcp.Client, mcp_types); "
        "run them with .tools/venv/bin/python after ops/scripts/install-tools.sh --test"
    )

REPO = Path(__file__).resolve().parents[3]
GATEWAY_BIN = Path(os.environ.get("MCP_GATEWAY_BIN", REPO / "target/debug/mcp-gateway"))
MOCK_BIN = Path(os.environ.get("MCP_MOCK_BIN", REPO / "target/debug/mcp-mock"))

STARTUP_DEADLINE_S = 30.0
LISTEN_RE = re.compile(r"^listening on (http://\S+)$", re.MULTILINE)


@dataclass
class Proc:
    """A started child process whose stdout and stderr go to files in a temp dir."""

    name: str
    popen: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    url: str = ""
    # The gateway stops at once on SIGINT (Pingora's fast shutdown; SIGTERM starts a
    # graceful one with a long grace period); the mocks stop on SIGTERM.
    stop_signal: int = signal.SIGTERM
    _files: list = field(default_factory=list)

    def log_tail(self, limit: int = 4000) -> str:
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
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        for f in self._files:
            f.close()


def start(name: str, argv: list[str], workdir: Path, stop_signal: int = signal.SIGTERM) -> Proc:
    """Starts argv and waits (polling, with a deadline) for its `listening on` line."""
    if not Path(argv[0]).is_file():
        pytest.fail(f"{argv[0]} is missing: build it first (ops/scripts/interop.sh does)")
    stdout_path = workdir / f"{name}.stdout"
    stderr_path = workdir / f"{name}.stderr"
    out = open(stdout_path, "wb")
    err = open(stderr_path, "wb")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env["NO_COLOR"] = "1"
    popen = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
    proc = Proc(name, popen, stdout_path, stderr_path, stop_signal=stop_signal, _files=[out, err])
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while True:
        m = LISTEN_RE.search(stdout_path.read_text(errors="replace"))
        if m:
            proc.url = m.group(1)
            return proc
        if popen.poll() is not None:
            tail = proc.log_tail()
            proc.stop()
            pytest.fail(f"{name} exited with {popen.returncode} before listening\n{tail}")
        if time.monotonic() > deadline:
            tail = proc.log_tail()
            proc.stop()
            pytest.fail(f"{name} did not print 'listening on URL' within {STARTUP_DEADLINE_S}s\n{tail}")
        time.sleep(0.05)  # poll interval, bounded by the deadline above


def start_mock(name: str, workdir: Path, *extra: str) -> Proc:
    return start(
        f"mock-{name}",
        [str(MOCK_BIN), "--http", "127.0.0.1:0", "--name", name, "--no-dynamic", *extra],
        workdir,
    )


def start_gateway(backends: list[tuple[str, str, bool]], workdir: Path) -> Proc:
    """backends: (name, url, prefix) in config order."""
    lines = ["[server]", 'listen = "127.0.0.1:0"', ""]
    for name, url, prefix in backends:
        lines += [
            "[[backend]]",
            f'name = "{name}"',
            f'url = "{url}"',
            f"prefix = {'true' if prefix else 'false'}",
            "timeout_ms = 10000",
            "",
        ]
    config = workdir / "gateway.toml"
    config.write_text("\n".join(lines))
    return start("gateway", [str(GATEWAY_BIN), "--config", str(config)], workdir, signal.SIGINT)


class Stack:
    """Three mocks (alpha, beta, gamma) behind one gateway, all prefixed."""

    NAMES = ("alpha", "beta", "gamma")

    def __init__(self, workdir: Path):
        self.procs: list[Proc] = []
        self.mocks: dict[str, Proc] = {}
        try:
            for n in self.NAMES:
                p = start_mock(n, workdir)
                self.procs.append(p)
                self.mocks[n] = p
            self.gateway = start_gateway([(n, self.mocks[n].url, True) for n in self.NAMES], workdir)
            self.procs.append(self.gateway)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return self.gateway.url

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


_STACKS: list[Stack] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    s = Stack(tmp_path_factory.mktemp("interop"))
    _STACKS.append(s)
    yield s
    _STACKS.remove(s)
    # Every process must have survived the tests (an exit here would be a crash).
    dead = {p.name: p.popen.returncode for p in s.procs if p.popen.poll() is not None}
    s.stop()
    assert not dead, f"processes exited during the tests: {dead}\n{s.logs()}"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the servers' logs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _STACKS:
        report.sections.append(("server logs", "\n".join(s.logs() for s in _STACKS)))
