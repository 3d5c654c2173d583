#!/usr/bin/env bash
# Stopping loses no call, at a real rate: the two drain tests of gateway/tests/it/drain.rs
# on release binaries, with a client that never retries (mcp-load --no-retry) offering
# --rate calls/s:
#   - --upgrades successive `-u` hand-overs (SIGQUIT to the old process each time);
#   - SIGTERM of one of two replicas behind HAProxy (round-robin, /readyz checked).
# Both require zero failed calls; prints a Markdown table of what each run saw.
#
#   ops/scripts/bench-drain.sh [--rate N] [--upgrades N] [--connections N]
#                                       (defaults 5500 calls/s offered, 20, 16: the
#                                       paced client reaches a little under its offer)
#
# Needs HAProxy (ops/scripts/install-tools.sh --test installs it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rate=5500
upgrades=20
connections=16
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="${2:?--rate needs a number}"; shift 2 ;;
    --upgrades) upgrades="${2:?--upgrades needs a number}"; shift 2 ;;
    --connections) connections="${2:?--connections needs a number}"; shift 2 ;;
    *) echo "unknown option $1 (--rate N, --upgrades N, --connections N)" >&2; exit 2 ;;
  esac
done
for n in "$rate" "$upgrades" "$connections"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "--rate, --upgrades and --connections take positive whole numbers" >&2; exit 2; }
done
cargo build --release -q -p mcp-gateway -p mcp-backends -p mcp-loadgen
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# One test at a time, each report kept apart: "load: {json}" is the test's own line.
for t in upgrades_lose_no_call_without_retry sigterm_behind_haproxy_loses_no_call; do
  MCP_DRAIN_RATE="$rate" MCP_DRAIN_UPGRADES="$upgrades" MCP_DRAIN_CONNECTIONS="$connections" \
    cargo test --release -q -p mcp-gateway --test it -- --exact --nocapture "drain::$t" \
    2>&1 | tee "$out/$t.log" >&2
done
python3 - "$out" "$rate" "$upgrades" "$connections" <<'EOF2'
import json, os, re, sys
out, rate, upgrades, conns = sys.argv[1:5]
runs = [("upgrades_lose_no_call_without_retry", f"{upgrades} `-u` upgrades"),
        ("sigterm_behind_haproxy_loses_no_call", "SIGTERM of one of two replicas behind HAProxy")]
print()
print(f"| run (offered {rate} calls/s on {conns} connections, client never retries) | calls | failed | answered `Connection: close` | calls/s |")
print("|---|---|---|---|---|")
missing = []
for test, name in runs:
    text = open(os.path.join(out, test + ".log"), encoding="utf-8", errors="replace").read()
    m = re.search(r"load: (\{.*\})", text)
    if not m:
        missing.append(test)
        continue
    r = json.loads(m.group(1))
    print(f"| {name} | {r['ok']} | {r['failed']} | {r['connection_close']} | {r['rps']:.0f} |")
if missing:
    sys.exit(f"no report from {', '.join(missing)}: see the output above")
EOF2
