#!/usr/bin/env bash
# Benchmark of the audit writer: sustained insert rate into PostgreSQL (events/s),
# printed as a Markdown table. Loopback only; bounded in count and time.
#
#   ops/scripts/bench-audit.sh [--events N] [--rate R] [--write-ahead]
#
#   --events N  events recorded (default 200000)
#   --rate R    offered load, events/s, from one producer (default 25000); above the
#               writer's rate the queue fills and `record` spills to the spool, which
#               is then replayed: the figure is still end-to-end (recorded -> in the table)
#   --write-ahead  with `write_ahead = true`: every event is appended to the spool inside
#               `record`, and the writer inserts from the spool
#
# The database is the local one: postgres://postgres@127.0.0.1:5432/test (the run
# creates a schema of its own and drops it afterwards).
#
# What is measured: `Auditor::record` of N events (a request's worth of fields each)
# at the offered rate, until every one is a row (rows == N, no duplicate, checked),
# divided into the elapsed time. The writer batches up to 5000 rows per binary COPY
# (INSERT … ON CONFLICT DO NOTHING when replaying the spool), default config otherwise. Target: >= 10,000
# events/s on this machine. Exits 0 when the run completed (a missed target is
# reported, not an error), non-zero if the run failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

events=200000
rate=25000
wal=()
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events="${2:?--events needs a value}"; shift 2 ;;
    --rate) rate="${2:?--rate needs a value}"; shift 2 ;;
    --write-ahead) wal=(AUDIT_BENCH_WRITE_AHEAD=1); shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 1 ;;
  esac
done
if ! command -v pg_isready >/dev/null || ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "PostgreSQL is not answering on 127.0.0.1:5432 (ops/scripts/test.sh starts it)" >&2
  exit 1
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
env AUDIT_BENCH_EVENTS="$events" AUDIT_BENCH_RATE="$rate" "${wal[@]}" \
  timeout 900 cargo test --release -q -p mcp-gateway --test it -- \
  --ignored --exact audit::rows::bench_insert_rate --nocapture >"$out" 2>&1 || {
  cat "$out" >&2
  echo "the benchmark failed" >&2
  exit 1
}
row="$(grep '^| audit writer' "$out" || true)"
if [ -z "$row" ]; then
  cat "$out" >&2
  echo "the benchmark printed no result" >&2
  exit 1
fi
echo "| what | events | sustained insert rate | offered | spooled | worst record() |"
echo "|---|---|---|---|---|---|"
echo "$row"
rate_now="$(sed -E 's/.*\| ([0-9]+) events\/s sustained.*/\1/' <<<"$row")"
if [ "${rate_now:-0}" -ge 10000 ]; then
  echo "target >= 10,000 events/s: met (${rate_now}/s)"
else
  echo "target >= 10,000 events/s: MISSED (${rate_now}/s)"
fi
