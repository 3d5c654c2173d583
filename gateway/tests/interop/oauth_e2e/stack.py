"""The sign-in stack of the OAuth end-to-end tests, started from the real binaries.

    fake-google  (users, groups, a service account for the Directory API)
    mcp-oauth-sidecar  (the authorization server; its own Postgres schema)
    mcp-mock x2  (backends `grafana`, restricted to a group, and `open`)
    mcp-gateway  (auth.mode = "oauth", issuer = the sidecar)

Every process writes its PID to `{pid_dir}/{name}.pid` as soon as it is spawned (and
the schema name goes to `{pid_dir}/schemas`), so that a runner can clean up after a
test that was killed by its timeout. `Stack.stop()` stops them by PID and drops the
schema.

Also a command line for the runner (ops/scripts/oauth-e2e.sh), which drives mcp-remote
outside pytest:

    python stack.py serve --dir DIR [--pid-dir P]  # start, write DIR/stack.json, serve
                                                   # until SIGTERM/SIGINT, stop, drop schema
    python stack.py cleanup --pid-dir P            # safety net: stop what P's PID files
                                                   # name, drop the schemas listed in P

Binaries: $OAUTH_E2E_BIN_DIR (default <repo>/target/debug). Database:
$OAUTH_E2E_DB_URL (default postgres://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

# procs.py (the harness shared with conftest.py) sits one directory up, in
# gateway/tests/interop: on the path whether this runs as a module or as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import procs  # noqa: E402
from procs import Proc, free_port, pid_alive, stop_pid  # noqa: E402

REPO = Path(__file__).resolve().parents[4]
BIN_DIR = Path(os.environ.get("OAUTH_E2E_BIN_DIR", REPO / "target/debug"))
DB_URL = os.environ.get("OAUTH_E2E_DB_URL", "postgres://postgres@127.0.0.1:5432/test")
# Test-only key material of the sidecar's own tests; the fake accepts any well-formed
# assertion signed for a configured service account.
SA_KEY_FILE = REPO / "sidecar/tests/fixtures/service-account.json"
SA_EMAIL = "directory-reader@test-project.iam.gserviceaccount.com"
GOOGLE_CLIENT_ID = "oauth-e2e-sidecar"
GOOGLE_CLIENT_SECRET = "oauth-e2e-google-secret"

ALICE = "alice@example.com"
BOB = "bob@example.com"
OUTSIDER = "someone@other.org"
# The Directory API answers a user's groups as group email addresses, and the sidecar
# puts them in the token's `groups` claim as they came (lowercased): the gateway policy
# must name the group exactly so.
SRE_GROUP = "sre@example.com"


class StackError(RuntimeError):
    pass


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def spawn(name: str, argv: list[str], workdir: Path, pid_dir: Path, stop_signal: int = signal.SIGTERM) -> Proc:
    """Starts argv and waits (polling, with a deadline) for its `listening on URL` line
    (procs.start). Its PID goes to `{pid_dir}/{name}.pid` as "PID SIGNAL" at once, so
    that the runner's cleanup stops it with the signal it stops on; it runs in its own
    session, so that a Ctrl-C at the runner's terminal reaches the runner, which stops
    everything by PID, in order."""
    try:
        return procs.start(
            name,
            argv,
            workdir,
            stop_signal=stop_signal,
            pid_dir=pid_dir,
            new_session=True,
            missing_hint="build it (cargo build -p mcp-gateway -p mcp-oauth-sidecar -p fake-google -p mcp-backends)",
            log_limit=6000,
        )
    except procs.StartError as e:
        raise StackError(str(e)) from None


def psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", DB_URL, "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )


def psql_value(sql: str) -> str:
    r = subprocess.run(
        ["psql", "-qtA", "-v", "ON_ERROR_STOP=1", DB_URL, "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return r.stdout.strip()


def drop_schema(schema: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"refusing to drop odd schema name {schema!r}")
    psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


FAKE_GOOGLE_TOML = f"""
# fake Google of the OAuth end-to-end tests
directory_page_size = 2

[[user]]
email = "{ALICE}"
name = "Alice (SRE)"
groups = ["{SRE_GROUP}", "eng@example.com"]

[[user]]
email = "{BOB}"
name = "Bob (not SRE)"
groups = ["sales@example.com"]

[[user]]
email = "{OUTSIDER}"
name = "Someone (other company)"

[[client]]
client_id = "{GOOGLE_CLIENT_ID}"
client_secret = "{GOOGLE_CLIENT_SECRET}"

[[service_account]]
email = "{SA_EMAIL}"
"""


def audit_toml(schema: str, spool: Path) -> str:
    """One audit log for both: the sidecar's sign-ins and the gateway's requests land in
    `{schema}.audit_events`, written within 20 ms."""
    return f"""
[audit]
postgres_url = {toml_str(DB_URL)}
schema = {toml_str(schema)}
spool_dir = {toml_str(str(spool))}
flush_interval_ms = 20
"""


def sidecar_toml(google_url: str, schema: str, resource: str, access_ttl_s: int, spool: Path) -> str:
    g = google_url
    return audit_toml(schema, spool) + f"""
[server]
listen = "127.0.0.1:0"

[store]
url = {toml_str(DB_URL)}
schema = {toml_str(schema)}
pool_size = 4

[[resource]]
url = {toml_str(resource)}
name = "MCP Gateway (oauth e2e)"

[tokens]
access_token_ttl_s = {access_ttl_s}

[clients]
registration_per_minute = 1000

[google]
issuer = {toml_str(g)}
client_id = "{GOOGLE_CLIENT_ID}"
client_secret = "{GOOGLE_CLIENT_SECRET}"
allowed_domains = ["example.com"]
directory_api_base = {toml_str(g)}
admin_subject = "{ALICE}"

[google.credentials]
source = "service_account_key"
key_file = {toml_str(str(SA_KEY_FILE))}
token_uri = {toml_str(g + "/token")}
"""


def gateway_toml(
    gw_port: int, metrics_port: int, issuer: str, mock_urls: dict[str, str], schema: str, spool: Path
) -> str:
    grafana_url, open_url, flaky_url = mock_urls["grafana"], mock_urls["open"], mock_urls["flaky"]
    return audit_toml(schema, spool) + f"""
[server]
listen = "127.0.0.1:{gw_port}"
request_timeout_ms = 10000

[auth]
mode = "oauth"
issuer = {toml_str(issuer)}

[metrics]
listen = "127.0.0.1:{metrics_port}"

[[backend]]
name = "grafana"
url = {toml_str(grafana_url)}
allow_groups = [{toml_str(SRE_GROUP)}]

[[backend]]
name = "open"
url = {toml_str(open_url)}
forward_identity = {{ email = "X-Forwarded-Email" }}

[[backend]]
name = "flaky"
url = {toml_str(flaky_url)}
"""


class Stack:
    """The whole stack; `start()` leaves nothing running when it fails."""

    def __init__(self, workdir: Path, pid_dir: Path | None = None, access_ttl_s: int = 30):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pid_dir = Path(pid_dir) if pid_dir else self.workdir / "pids"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.access_ttl_s = access_ttl_s
        self.procs: list[Proc] = []
        self.schema = f"oauth_e2e_{secrets.token_hex(6)}"
        self.schema_created = False
        self.google_url = self.sidecar_url = self.gateway_url = self.metrics_url = ""
        self.mock_urls: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Stack":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _add(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def _start(self) -> None:
        w, p = self.workdir, self.pid_dir
        # flaky: every tools/call fails upstream (a JSON-RPC internal error).
        for name, extra in (("grafana", []), ("open", []), ("flaky", ["--fail-methods", "tools/call"])):
            m = self._add(
                spawn(
                    f"mock-{name}",
                    [str(BIN_DIR / "mcp-mock"), "--http", "127.0.0.1:0", "--name", name, "--no-dynamic", *extra],
                    w,
                    p,
                )
            )
            self.mock_urls[name] = m.url

        (w / "fake-google.toml").write_text(FAKE_GOOGLE_TOML)
        g = self._add(
            spawn(
                "fake-google",
                [str(BIN_DIR / "fake-google"), "--config", str(w / "fake-google.toml"), "--listen", "127.0.0.1:0"],
                w,
                p,
            )
        )
        self.google_url = g.url.rstrip("/")

        # The gateway's address is in the sidecar's configuration (the tokens' audience)
        # and the gateway needs the sidecar's keys at start: so its ports are chosen first.
        gw_port, metrics_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{gw_port}/mcp"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        with open(p / "schemas", "a") as f:
            f.write(self.schema + "\n")
        self.schema_created = True
        (w / "sidecar.toml").write_text(
            sidecar_toml(self.google_url, self.schema, self.gateway_url, self.access_ttl_s, w / "sidecar-spool")
        )
        s = self._add(
            spawn(
                "sidecar",
                [str(BIN_DIR / "mcp-oauth-sidecar"), "--config", str(w / "sidecar.toml")],
                w,
                p,
            )
        )
        self.sidecar_url = s.url.rstrip("/")  # the issuer: exactly this string

        (w / "gateway.toml").write_text(
            gateway_toml(gw_port, metrics_port, self.sidecar_url, self.mock_urls, self.schema, w / "gateway-spool")
        )
        gw = self._add(
            spawn(
                "gateway",
                [str(BIN_DIR / "mcp-gateway"), "--config", str(w / "gateway.toml")],
                w,
                p,
                stop_signal=signal.SIGINT,  # immediate stop (SIGTERM is a graceful one)
            )
        )
        if gw.url != self.gateway_url:
            raise StackError(f"gateway listens on {gw.url}, expected {self.gateway_url}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        if self.schema_created:
            drop_schema(self.schema)
            self.schema_created = False
            schemas = self.pid_dir / "schemas"
            if schemas.exists():
                rest = [s for s in schemas.read_text().split() if s != self.schema]
                schemas.write_text("".join(f"{s}\n" for s in rest))

    def dead(self) -> dict[str, int]:
        """Processes that exited while they should be serving."""
        return {p.name: p.popen.returncode for p in self.procs if p.popen.poll() is not None}

    def logs(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def info(self) -> dict:
        return {
            "google_url": self.google_url,
            "sidecar_url": self.sidecar_url,
            "gateway_url": self.gateway_url,
            "metrics_url": self.metrics_url,
            "mock_urls": self.mock_urls,
            "schema": self.schema,
            "pid_dir": str(self.pid_dir),
            "workdir": str(self.workdir),
            "users": {"alice": ALICE, "bob": BOB, "outsider": OUTSIDER},
            "sre_group": SRE_GROUP,
        }

    # ------------------------------------------------------------------ controls
    def set_groups(self, email: str, groups: list[str]) -> None:
        """Changes a person's groups at the fake Google's directory."""
        req = urllib.request.Request(
            f"{self.google_url}/admin/users/{email}/groups",
            data=json.dumps({"groups": groups}).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                raise StackError(f"set_groups({email}) answered {r.status}")

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """The gateway's Prometheus metrics: (name, labels) -> value."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        out: dict[tuple[str, frozenset], float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
            if not m:
                continue
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def request_count(self, **labels: str) -> float:
        """Sum of mcpgw_requests_total over the series matching labels."""
        want = set(labels.items())
        return sum(
            v for (name, ls), v in self.metrics().items() if name == "mcpgw_requests_total" and want <= set(ls)
        )

    def sidecar_count(self, sql_where_table: str) -> int:
        """SELECT count(*) FROM {schema}.{table} WHERE …, e.g. "users WHERE email = 'x'"."""
        return int(psql_value(f"SELECT count(*) FROM {self.schema}.{sql_where_table}"))


# ---------------------------------------------------------------------- CLI
def _cli_serve(args) -> int:
    """Starts the stack, writes DIR/stack.json, serves until SIGTERM/SIGINT, then stops
    its processes (reaping them) and drops the schema."""
    import threading

    workdir = Path(args.dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(workdir, Path(args.pid_dir) if args.pid_dir else None, access_ttl_s=args.access_ttl_s)
    try:
        stack.start()
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 1
    try:
        tmp = workdir / "stack.json.tmp"
        tmp.write_text(json.dumps(stack.info(), indent=2))
        tmp.rename(workdir / "stack.json")  # appears whole
        print(f"stack: serving, {workdir / 'stack.json'}", file=sys.stderr, flush=True)
        reported: set[str] = set()
        while not stop.wait(0.5):
            for name, rc in stack.dead().items():
                if name not in reported:
                    reported.add(name)
                    print(f"stack: {name} exited with {rc}", file=sys.stderr, flush=True)
    finally:
        dead = stack.dead()
        stack.stop()
    if dead:
        print(f"stack: processes exited while serving: {dead}", file=sys.stderr)
        return 1
    return 0


def _cli_cleanup(args) -> int:
    """Stops whatever PID files in pid_dir name, then drops the schemas listed there:
    the runner's safety net after a part was killed by its timeout."""
    status = 0
    pid_dir = Path(args.pid_dir)
    if not pid_dir.is_dir():
        return 0
    # Clients first, then the gateway, sidecar, fake Google, mocks.
    order = ["gateway", "sidecar", "fake-google", "mock-open", "mock-grafana"]
    files = sorted(pid_dir.glob("*.pid"), key=lambda f: order.index(f.stem) if f.stem in order else -1)
    for f in files:
        try:
            pid_s, sig_s = (f.read_text().split() + ["15"])[:2]
            pid = int(pid_s)
            if pid_alive(pid):
                print(f"cleanup: stopping {f.stem} (pid {pid})", file=sys.stderr)
                stop_pid(pid, int(sig_s))
        except (OSError, ValueError) as e:
            print(f"cleanup: {f}: {e}", file=sys.stderr)
            status = 1
        f.unlink(missing_ok=True)
    schemas = pid_dir / "schemas"
    if schemas.exists():
        for s in schemas.read_text().split():
            try:
                drop_schema(s)
                print(f"cleanup: dropped schema {s}", file=sys.stderr)
            except (subprocess.SubprocessError, ValueError) as e:
                print(f"cleanup: dropping schema {s}: {e}", file=sys.stderr)
                status = 1
        schemas.unlink()
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="start the stack, write DIR/stack.json, stop on SIGTERM")
    serve.add_argument("--dir", required=True)
    serve.add_argument("--pid-dir")
    serve.add_argument("--access-ttl-s", type=int, default=30)
    cleanup = sub.add_parser("cleanup", help="stop what PID_DIR's files name, drop its schemas")
    cleanup.add_argument("--pid-dir", required=True)
    args = ap.parse_args(argv)
    return _cli_serve(args) if args.cmd == "serve" else _cli_cleanup(args)


if __name__ == "__main__":
    sys.exit(main())
