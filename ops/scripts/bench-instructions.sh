#!/usr/bin/env bash
# Instructions per proxied call, counted (not timed): the gateway runs under valgrind's
# callgrind, instrumented only while mcp-load sends calls on one connection; the count of
# every gateway thread over that window, divided by the calls answered. A shared VM's
# req/s swing by ±20 % from minute to minute; instruction counts move by ~2 %, so this is
# where a change of a few % per call shows. What it does not see: time spent waiting, in
# the kernel, or on other cores (the req/s rows of bench.sh do). Prints a Markdown table.
#
#   ops/scripts/bench-instructions.sh [--seconds N]
#
# --seconds: the counted window of each row (default 8; under callgrind a call takes ~5 ms).
# Rows: the 2025 call, the 2026-07-28 call (both to a legacy backend), the 2026-07-28 call
# to a modern backend, the legacy backend's own count for each era's call and the modern
# backend's for a 2026-07-28 call (mcp-mock under callgrind, the gateway not), the 2025
# call with tracing on at 1 % (to a
# real OTLP/HTTP receiver: .tools/, from install-tools.sh --test), and with
# BASELINE_GATEWAY: another gateway binary to count the 2025 call on (the tracing
# row of bench.sh uses the same variable); without it that row is left out.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
secs=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) secs="${2:?--seconds needs a number}"; shift 2 ;;
    *) echo "unknown option $1 (--seconds N)" >&2; exit 2 ;;
  esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds takes a positive whole number" >&2; exit 2; }
if ! command -v valgrind >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "valgrind is missing: sudo apt-get install -y valgrind" >&2; exit 1; }
  echo "installing valgrind…" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
. "$root/ops/scripts/lib.sh"
bench_init

mock=$(PROC_STDERR=/dev/null proc_start mock TERM 15 "$bin/mcp-mock" --http 127.0.0.1:0 --name fast --no-dynamic --json)
# config [SECTION…]: the gateway's configuration, with SECTION (TOML lines) added.
config() {
  cat <<EOT
[server]
listen = "127.0.0.1:0"
[audit]
enabled = false
${1:-}
[[backend]]
name = "fast"
url = "$mock"
EOT
}
config > "$work/gw.toml"
# The same gateway in front of a modern backend (the 2026-07-28 era end to end).
mockm=$(PROC_STDERR=/dev/null proc_start mockm TERM 15 "$bin/mcp-mock" --http 127.0.0.1:0 --name fast --no-dynamic --json --protocol modern)
sed "s|$mock|$mockm|" "$work/gw.toml" > "$work/gwmodern.toml"
# Tracing on at 1 %, exporting to a real OTLP/HTTP receiver (as bench.sh's row).
otlp=$(PROC_STDERR=/dev/null proc_start otlp TERM 30 .tools/venv/bin/python gateway/tests/interop/otlp_receiver.py)
config "[tracing]
endpoint = \"${otlp%/mcp}\"
sample_ratio = 0.01" > "$work/gwtrace.toml"

# counted NAME PID URL [load args…]: instructions per call of the callgrind process PID
# (its output $work/NAME.cg*) while mcp-load calls URL on one connection (echoed).
counted() {
  local name=$1 pid=$2 url=$3 out ok ir; shift 3
  # Warm: connections pooled, upstream sessions open, code translated.
  "$bin/mcp-load" --json --duration 3 --url "$url" --connections 1 --tool fast__echo "$@" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  # No warm-up in the counted run: its calls would be counted but not in `ok`.
  out=$("$bin/mcp-load" --json --warmup 0 --duration "$secs" --url "$url" --connections 1 --tool fast__echo "$@")
  callgrind_control -d "$pid" >/dev/null 2>&1
  callgrind_control -i off "$pid" >/dev/null 2>&1
  ok=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['ok'])" "$out")
  ir=$(cat "$work/$name".cg* | awk '/^summary:/ {s += $2} END {print s + 0}')
  kill -INT "$pid" 2>/dev/null || true
  [ "$ok" -gt 0 ] && [ "$ir" -gt 0 ] || { echo "no calls counted for $name" >&2; exit 1; }
  echo $(( ir / ok ))
}

# count NAME GATEWAY CONFIG [load args…]: instructions per call of GATEWAY (echoed).
count() {
  local name=$1 gw=$2 cfg=$3 url; shift 3
  url=$(proc_start "$name" INT 120 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$name.cg" "$gw" --config "$cfg" -c ops/pingora.yaml)
  counted "$name" "$(proc_last_pid)" "$url" "$@"
}

# count_backend NAME PROTOCOL [load args…]: instructions per call of an mcp-mock of its
# own (--protocol PROTOCOL) behind the gateway (echoed): what each era's calls cost the
# backend.
count_backend() {
  local name=$1 protocol=$2 url pid gwurl; shift 2
  url=$(PROC_STDERR=/dev/null proc_start "$name" INT 120 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$name.cg" "$bin/mcp-mock" --http 127.0.0.1:0 --name fast --no-dynamic --json --protocol "$protocol")
  pid=$(proc_last_pid)
  sed "s|$mock|$url|" "$work/gw.toml" > "$work/$name.toml"
  gwurl=$(PROC_STDERR=/dev/null proc_start "$name-gw" TERM 15 "$bin/mcp-gateway" --config "$work/$name.toml" -c ops/pingora.yaml)
  counted "$name" "$pid" "$gwurl" "$@"
}

echo "2025 call…" >&2
legacy=$(count legacy "$bin/mcp-gateway" "$work/gw.toml" --era 2025)
echo "2026-07-28 call…" >&2
modern=$(count modern "$bin/mcp-gateway" "$work/gw.toml" --era 2026-07-28)
echo "2026-07-28 call to a modern backend…" >&2
ended=$(count ended "$bin/mcp-gateway" "$work/gwmodern.toml" --era 2026-07-28)
echo "the legacy backend's side of each era's call…" >&2
back_legacy=$(count_backend backlegacy legacy --era 2025)
back_modern=$(count_backend backmodern legacy --era 2026-07-28)
echo "the modern backend's side of a 2026-07-28 call…" >&2
back_ended=$(count_backend backended modern --era 2026-07-28)
echo "2025 call, tracing on at 1 %…" >&2
traced=$(count traced "$bin/mcp-gateway" "$work/gwtrace.toml" --era 2025)
rows=("| tools/call, 2025 session | $legacy | |")
rows+=("| tools/call, 2026-07-28 stateless | $modern | $(python3 -c "print(f'{$modern/$legacy:.3f}× the 2025 call')") |")
rows+=("| tools/call, 2026-07-28 stateless, modern backend | $ended | $(python3 -c "print(f'{$ended/$legacy:.3f}× the 2025 call')") |")
rows+=("| tools/call, 2025 session: the legacy backend (\`mcp-mock\`) behind the gateway | $back_legacy | |")
rows+=("| tools/call, 2026-07-28 stateless: the same backend | $back_modern | $(python3 -c "print(f'{$back_modern/$back_legacy:.3f}× the 2025 call')") |")
rows+=("| tools/call, 2026-07-28 stateless: a modern backend (\`mcp-mock --protocol modern\`) behind the gateway | $back_ended | $(python3 -c "print(f'{$back_ended/$back_legacy:.3f}× the legacy backend\'s 2025 call')") |")
rows+=("| tools/call, 2025 session, tracing on at 1 % | $traced | $(python3 -c "print(f'{$traced/$legacy:.3f}× tracing off')") |")
if [ -n "${BASELINE_GATEWAY:-}" ]; then
  echo "2025 call on the baseline build…" >&2
  base=$(count baseline "$BASELINE_GATEWAY" "$work/gw.toml" --era 2025)
  rows+=("| tools/call, 2025 session, baseline build | $base | this build: $(python3 -c "print(f'{$legacy/$base:.3f}×')") |")
fi
echo "| call (1 connection, ${secs}s counted) | instructions per call | note |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
