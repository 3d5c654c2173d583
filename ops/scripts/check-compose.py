"""Checks compose.yaml without Docker (the test machines have none): every file it
refers to exists, every port it publishes or a configuration names is one a service
listens on, and every mounted configuration is valid for the binary that reads it.

    .tools/venv/bin/python ops/scripts/check-compose.py      (ops/scripts/test.sh runs it)

What is checked, per service:
  * build: the context and Dockerfile exist; the target is a stage (`FROM … AS target`)
    and every build argument an `ARG` of that Dockerfile;
  * volumes: every host path exists; MCP_GATEWAY_CONFIG / MCP_OAUTH_SIDECAR_CONFIG and
    a command's `--config` name a mounted file (configuration mounted, not baked);
  * network_mode `service:X` and depends_on name services;
  * the configurations: every `*_file` key names a mounted file; each is run through its binary from
    CHECK_COMPOSE_BIN_DIR (default target/debug) with the container paths mapped to the
    mounted host files: `mcp-gateway -t`, `mcp-oauth-sidecar --check`, `fake-google`
    started on a free port (it refuses unknown keys) and stopped;
  * ports: the services' listeners (config `listen`, `--http`, PostgreSQL's 5432) must
    cover every published port and every 127.0.0.1:PORT a configuration or a
    healthcheck (HEALTH_PORT) names; the gateway's, the sidecar's and the fake
    Google's listeners must be published (a browser and clients reach them).
Exits 1 with one line per problem.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("CHECK_COMPOSE_BIN_DIR", ROOT / "target/debug"))
CONFIG_ENVS = {"MCP_GATEWAY_CONFIG": "mcp-gateway", "MCP_OAUTH_SIDECAR_CONFIG": "mcp-oauth-sidecar"}
POSTGRES_PORT = 5432
problems: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def dockerfile_facts(path: Path) -> tuple[set[str], set[str]]:
    """(stage names, ARG names) of a Dockerfile."""
    text = path.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.MULTILINE | re.IGNORECASE))
    args = set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", text, re.MULTILINE))
    return stages, args


def mounts(name: str, svc: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts; checks they exist."""
    out = {}
    for v in svc.get("volumes", []):
        host, _, rest = v.partition(":")
        target = rest.split(":")[0]
        host_path = (ROOT / host).resolve()
        if not host_path.exists():
            problem(f"{name}: volume source {host} does not exist")
        out[target] = host_path
    return out


def check_build(name: str, svc: dict) -> None:
    b = svc.get("build")
    if b is None:
        return
    ctx = ROOT / b.get("context", ".")
    dockerfile = ctx / b.get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        problem(f"{name}: Dockerfile {dockerfile} does not exist")
        return
    stages, args = dockerfile_facts(dockerfile)
    if "target" in b and b["target"] not in stages:
        problem(f"{name}: build target {b['target']!r} is not a stage of {dockerfile.name} ({sorted(stages)})")
    for arg in b.get("args", {}):
        if arg not in args:
            problem(f"{name}: build arg {arg} is not an ARG of {dockerfile.name}")


def mapped_config(host: Path, mnt: dict[str, Path], tmp: Path) -> Path:
    """The config with every mounted container path replaced by its host path."""
    text = host.read_text()
    for target, src in sorted(mnt.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(f'"{target}"', f'"{src}"')
    out = tmp / host.name
    out.write_text(text)
    return out


def input_files(doc, prefix: str = "") -> list[tuple[str, str]]:
    """(key, value) of every `*_file` key of a TOML document: files the binary reads."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)):
            out += input_files(v, key + ".")
        elif isinstance(k, str) and k.endswith("_file") and isinstance(v, str):
            out.append((key, v))
    return out


def run_check(name: str, argv: list[str], env: dict[str, str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    if r.returncode != 0:
        problem(f"{name}: {' '.join(argv[:1])} refuses its configuration: {(r.stderr or r.stdout).strip()[-400:]}")


def check_fake_google(name: str, config: Path) -> None:
    """fake-google has no check flag: start it on a free port, wait for its line."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen([str(BIN / "fake-google"), "--config", str(config), "--listen", "127.0.0.1:0"],
                             stdout=out, stderr=err)
        deadline = time.monotonic() + 20
        try:
            while True:
                out.seek(0)
                if b"listening on " in out.read():
                    return
                if p.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    problem(f"{name}: fake-google refuses its configuration: {err.read().decode()[-400:]}")
                    return
                time.sleep(0.05)  # poll, bounded by the deadline above
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)


def config_of(name: str, svc: dict, mnt: dict[str, Path]) -> tuple[str, Path] | None:
    """(binary, host path) of the service's mounted configuration, if any."""
    env = svc.get("environment", {}) or {}
    for var, binary in CONFIG_ENVS.items():
        if var in env:
            if env[var] not in mnt:
                problem(f"{name}: {var}={env[var]} is not a mounted file")
                return None
            return binary, mnt[env[var]]
    cmd = svc.get("command") or []
    if "--config" in cmd:
        path = cmd[cmd.index("--config") + 1]
        if path not in mnt:
            problem(f"{name}: --config {path} is not a mounted file")
            return None
        return cmd[0], mnt[path]
    return None


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def listeners_of(name: str, svc: dict, cfg: tuple[str, Path] | None) -> dict[int, str]:
    out = {}
    cmd = svc.get("command") or []
    if "--http" in cmd:
        out[port_of(cmd[cmd.index("--http") + 1])] = name
    if str(svc.get("image", "")).startswith("postgres"):
        out[POSTGRES_PORT] = name
    if cfg:
        doc = tomllib.loads(cfg[1].read_text())
        for addr in (doc.get("listen"), doc.get("server", {}).get("listen"), doc.get("metrics", {}).get("listen")):
            if addr:
                out[port_of(addr)] = name
    return out


def main() -> int:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services: dict = compose.get("services", {})
    listeners: dict[int, str] = {}
    published: set[int] = set()
    referenced: list[tuple[str, int]] = []
    must_publish: list[tuple[str, int]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, svc in services.items():
            check_build(name, svc)
            mnt = mounts(name, svc)
            for dep in svc.get("depends_on", {}) or {}:
                if dep not in services:
                    problem(f"{name}: depends_on {dep!r} is not a service")
            nm = svc.get("network_mode", "")
            if nm.startswith("service:") and nm.split(":", 1)[1] not in services:
                problem(f"{name}: network_mode {nm!r} names no service")
            for p in svc.get("ports", []):
                published.add(int(str(p).rsplit(":", 1)[1].split("/")[0]))
            env = {k: str(v) for k, v in (svc.get("environment", {}) or {}).items()}
            if "HEALTH_PORT" in env:
                referenced.append((f"{name} HEALTH_PORT", int(env["HEALTH_PORT"])))
            cfg = config_of(name, svc, mnt)
            mine = listeners_of(name, svc, cfg)
            for port, owner in mine.items():
                if port in listeners:
                    problem(f"port {port}: both {listeners[port]} and {owner} listen on it")
            listeners.update(mine)
            if cfg is None:
                continue
            binary, host = cfg
            text = host.read_text()
            for port in re.findall(r"127\.0\.0\.1:(\d+)", text):
                referenced.append((f"{name} ({host.name})", int(port)))
            if binary != "mcp-mock":
                must_publish += [(name, port) for port in mine if port not in (9090,)]
            config = mapped_config(host, mnt, tmp)
            for key, path in input_files(tomllib.loads(config.read_text())):
                if not Path(path).is_file():
                    problem(f"{name}: {host.name}: {key} = {path!r} is neither mounted nor a file")
            if binary == "mcp-gateway":
                run_check(name, [str(BIN / "mcp-gateway"), "--config", str(config), "-t"], env)
            elif binary == "mcp-oauth-sidecar":
                run_check(name, [str(BIN / "mcp-oauth-sidecar"), "--config", str(config), "--check"], env)
            elif binary == "fake-google":
                check_fake_google(name, config)
            else:
                problem(f"{name}: no check for the configuration of {binary}")
    for where, port in referenced:
        if port not in listeners:
            problem(f"{where} names port {port}, on which no service listens")
    for port in published:
        if port not in listeners:
            problem(f"published port {port}: no service listens on it")
    for name, port in must_publish:
        if port not in published:
            problem(f"{name} listens on {port}, which is not published (browsers and clients reach it)")
    for p in problems:
        print(f"[check-compose] {p}", file=sys.stderr)
    if not problems:
        print(f"[check-compose] compose.yaml: {len(services)} services, ports {sorted(listeners)}, "
              f"published {sorted(published)}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
