#!/usr/bin/env bash
# The one command that runs every test: installs what is missing (system packages,
# Node 22, the MCP conformance suite, the official SDKs), makes sure PostgreSQL runs,
# builds the workspace once, then runs the Rust tests and the interop tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bash ops/scripts/install-tools.sh --test

# A full test build writes ~3 GB under target/; say so up front rather than fail mid-build.
avail_kb=$(df -Pk "$root" | awk 'NR==2 {print $4}')
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt 4194304 ]; then
  echo "[test] only $((avail_kb / 1024)) MiB free on $(df -P "$root" | awk 'NR==2 {print $6}'): the build needs ~4 GiB; free some space (old target/ directories, /tmp clones) and run again" >&2
  exit 1
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`): start it if it is down.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
fi

echo "[test] building the workspace" >&2
cargo build --workspace --all-targets -q
echo "[test] Rust unit and integration tests" >&2
cargo test --workspace -q -- --test-threads 4
echo "[test] interop: official SDK clients and the conformance suite" >&2
bash ops/scripts/interop.sh
echo "[test] sign-in: the conformance suite's authorization-server scenarios with headless Chromium" >&2
bash ops/scripts/auth-interop.sh
echo "[test] sign-in end to end: Python SDK and mcp-remote through gateway + sidecar + fake Google; the local demo (run-local.sh) with headless Chromium" >&2
bash ops/scripts/oauth-e2e.sh
echo "[test] deployment: Terraform parses and passes checkov; the images' runtime layout starts" >&2
bash ops/scripts/check-terraform.sh
echo "[test] compose.yaml: files, ports and configuration keys (no Docker here)" >&2
CHECK_COMPOSE_BIN_DIR="$root/target/debug" .tools/venv/bin/python ops/scripts/check-compose.py
# The layout check starts the binaries this run already built (no second, release build).
CHECK_IMAGE_BIN_DIR="$root/target/debug" bash ops/scripts/check-image-layout.sh
