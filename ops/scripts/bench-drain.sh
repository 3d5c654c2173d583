#!/usr/bin/env bash
# Stopping loses no call, at a real rate: the two drain tests of gateway/tests/it/drain.rs
# on release binaries, with a client that never retries (mcp-load --no-retry) offering
# --rate calls/s:
#   - --upgrades successive `-u` hand-overs (SIGQUIT to the old process each time);
#   - SIGTERM of one of two replicas behind HAProxy (round-robin, /readyz checked).
# Both require zero failed calls; prints a Markdown table of what each run saw.
#
#   ops/scripts/bench-drain.sh [--rate N] [--upgrades N]     (defaults 5000 and 20)
#
# Needs HAProxy (ops/scripts/install-tools.sh --test installs it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
rate=5000
upgrades=20
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="${2:?--rate needs a number}"; shift 2 ;;
    --upgrades) upgrades="${2:?--upgrades needs a number}"; shift 2 ;;
    *) echo "unknown option $1 (--rate N, --upgrades N)" >&2; exit 2 ;;
  esac
done
[[ "$rate" =~ ^[1-9][0-9]*$ && "$upgrades" =~ ^[1-9][0-9]*$ ]] || { echo "--rate and --upgrades take positive whole numbers" >&2; exit 2; }
cargo build --release -q -p mcp-gateway -p mcp-backends -p mcp-loadgen
out=$(mktemp)
trap 'rm -f "$out"' EXIT
MCP_DRAIN_RATE="$rate" MCP_DRAIN_UPGRADES="$upgrades" \
  cargo test --release -q -p mcp-gateway --test it -- --test-threads 1 --nocapture \
  drain::upgrades_lose_no_call_without_retry drain::sigterm_behind_haproxy_loses_no_call \
  2>&1 | tee "$out" >&2
# The tests' own report lines: "load: {json}" once per test, in the order above.
python3 - "$out" "$rate" "$upgrades" <<'EOF'
import json, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
reports = [json.loads(l[len("load: "):]) for l in lines if l.startswith("load: {")]
names = [f"{sys.argv[3]} `-u` upgrades", "SIGTERM of one of two replicas behind HAProxy"]
print()
print(f"| run (offered {sys.argv[2]} calls/s, client never retries) | calls | failed | answered `Connection: close` | calls/s |")
print("|---|---|---|---|---|")
for name, r in zip(names, reports):
    print(f"| {name} | {r.get('ok')} | {r.get('failed')} | {r.get('connection_close')} | {r.get('rps', 0):.0f} |")
if len(reports) < 2:
    sys.exit("a drain test did not report: see the output above")
EOF
