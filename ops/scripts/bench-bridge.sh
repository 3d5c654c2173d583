#!/usr/bin/env bash
# What bridging the protocol eras costs a call that asks the client for input, in one
# run: one elicitation round trip, one call at a time (mcp-load --mode asking), through
# one gateway in front of a 2025 mock (old) and a 2026-07-28 mock (new):
#   2025 client → old   relayed as it is        2026-07-28 client → old   bridged (held call)
#   2026-07-28 → new    passed through          2025 client → new         bridged (asked on the stream)
# Each pairing runs --rounds times for --seconds, the four in a rotating order; the
# median p50 of each is reported with the difference bridging adds (target: ≤ 1 ms).
# Prints a Markdown table (docs/benchmarks.md keeps the last one).
#
#   ops/scripts/bench-bridge.sh [--seconds N] [--rounds R]     (defaults 3, 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. "$root/ops/scripts/lib.sh"
bench_options 3 5 "$@"
bench_init

old=$(bench_start "$bin/mcp-mock" --http 127.0.0.1:0 --name old --no-dynamic)
new=$(bench_start "$bin/mcp-mock" --http 127.0.0.1:0 --name new --no-dynamic --protocol modern)
cat > "$work/gw.toml" <<EOT
[server]
listen = "127.0.0.1:0"
[audit]
enabled = false
[[backend]]
name = "old"
url = "$old"
[[backend]]
name = "new"
url = "$new"
EOT
gw=$(bench_start "$bin/mcp-gateway" --config "$work/gw.toml" -c ops/pingora.yaml)

# The four pairings: name, client era, tool.
names=("2025 client → 2025 backend" "2026-07-28 client → 2025 backend"
       "2026-07-28 client → 2026-07-28 backend" "2025 client → 2026-07-28 backend")
eras=(2025 2026-07-28 2026-07-28 2025)
tools=(old__test_elicitation old__test_elicitation
       new__test_input_required_result_elicitation new__test_input_required_result_elicitation)
declare -a p50s
for round in $(seq 1 "$rounds"); do
  for k in 0 1 2 3; do
    i=$(( (k + round) % 4 ))
    j=$("$bin/mcp-load" --json --mode asking --url "$gw" --era "${eras[$i]}" --tool "${tools[$i]}" \
          --arguments '{"message":"bench"}' --duration "$secs" --warmup 0.5)
    p=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['p50_ms'])" "$j")
    p50s[$i]="${p50s[$i]:-} $p"
    echo "  round $round: ${names[$i]}: p50 $p ms" >&2
  done
done
python3 - "${names[@]}" -- "${p50s[@]}" <<'EOF'
import statistics, sys
sep = sys.argv.index("--")
names, runs = sys.argv[1:sep], [[float(x) for x in r.split()] for r in sys.argv[sep + 1:]]
med = [statistics.median(r) for r in runs]
print()
print("| one elicitation round trip, one call at a time | p50 (median of rounds) | bridging adds | target |")
print("|---|---|---|---|")
print(f"| {names[0]} (relayed) | {med[0]:.3f} ms | | |")
print(f"| {names[1]} (bridged: held call) | {med[1]:.3f} ms | {med[1] - med[0]:+.3f} ms | ≤ 1 ms |")
print(f"| {names[2]} (passed through) | {med[2]:.3f} ms | | |")
print(f"| {names[3]} (bridged: asked on the stream) | {med[3]:.3f} ms | {med[3] - med[2]:+.3f} ms | ≤ 1 ms |")
worst = max(med[1] - med[0], med[3] - med[2])
if worst > 1.0:
    sys.exit(f"bridging adds {worst:.3f} ms p50: over the 1 ms target")
EOF
