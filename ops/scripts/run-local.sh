#!/usr/bin/env bash
# The one command to try the gateway: installs what is missing, builds, starts two demo
# MCP servers and the gateway on ops/config/local.toml. Ctrl-C stops everything.
#
#   ops/scripts/run-local.sh            # gateway at http://127.0.0.1:8080/mcp
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bash ops/scripts/install-tools.sh
echo "[run-local] building (release)…" >&2
cargo build --release -q -p mcp-gateway -p mcp-backends
bin="$root/target/release"
work=$(mktemp -d)
. "$root/ops/scripts/lib.sh"
proc_init "$work"
cleanup() { proc_stop_all; rm -rf "$work"; }
trap cleanup EXIT INT TERM
proc_start alpha TERM 15 "$bin/mcp-mock" --http 127.0.0.1:9101 --name alpha >/dev/null
proc_start beta TERM 15 "$bin/mcp-mock" --http 127.0.0.1:9102 --name beta >/dev/null
echo "[run-local] demo backends alpha (:9101) and beta (:9102) started" >&2
"$bin/mcp-gateway" --config ops/config/local.toml -c ops/pingora.yaml "$@" &
proc_track $!
wait $!
