#!/usr/bin/env bash
# Benchmarks of the gateway on this machine, all rows in the same run. Prints a
# Markdown table (docs/benchmarks.md keeps the last one). Loopback only; every load is bounded.
#
#   ops/scripts/bench.sh [--seconds N] [--rounds R]
#
# --seconds: length of each single run (default 10; the ratio rows run N/2, at least 3).
# --rounds: rounds of each ratio row (default 10; more narrows the median on a noisy VM).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. "$root/ops/scripts/lib.sh"
bench_options 10 10 "$@"
bench_init

load() { "$bin/mcp-load" --json --duration "$secs" --warmup 1 "$@"; }
# The ratio rows compare two gateways over $rounds rounds of one short run each, the order
# swapping every round (A then B, B then A: a machine that speeds up or slows down during a
# round favours neither side; on a shared 2-core VM the same run swings by ±10-20% over
# tens of seconds), and report the round whose ratio is the median.
pair_secs=$(( secs / 2 > 3 ? secs / 2 : 3 ))
# Each round's ratio b/a, two decimals, comma-separated (the spread behind the median).
round_ratios() { python3 -c "import sys; n=len(sys.argv)//2; print(', '.join(f'{float(b)/float(a):.2f}' for a,b in zip(sys.argv[1:n+1], sys.argv[n+1:])))" "$@"; }
median_round() { python3 -c "import sys; n=len(sys.argv)//2; a=[float(x) for x in sys.argv[1:n+1]]; b=[float(x) for x in sys.argv[n+1:]]; r=[y/x for x,y in zip(a,b)]; print(sorted(range(n), key=lambda i: r[i])[n//2])" "$@"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }
# CPU time (clock ticks) of a process, and of every PostgreSQL process on the machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_ticks() { local t=0 p; for p in $(pgrep -x postgres 2>/dev/null); do t=$((t + $(ticks "$p"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# One run of the pair against gateway $1 ("a" or "b") at URL $2 (process $3), calling
# tool $4: adds its req/s to rps_$1, its successful calls to ok_$1, the gateway's CPU
# ticks to cpu_$1 and PostgreSQL's to pg_$1.
pair_run() {
  local -n rps=rps_$1 ok=ok_$1 cpu=cpu_$1 pg=pg_$1
  local url=$2 pid=$3 tool=$4 c0 p0 j; shift 4
  c0=$(ticks "$pid"); p0=$(pg_ticks)
  j=$("$bin/mcp-load" --json --duration "$pair_secs" --warmup 1 --url "$url" --connections 16 --tool "$tool" "$@")
  rps+=("$(field "$j" rps)")
  ok=$((ok + $(field "$j" ok))); cpu=$((cpu + $(ticks "$pid") - c0)); pg=$((pg + $(pg_ticks) - p0))
  errs=$((errs + $(field "$j" errors)))
}
# pair NAME_A URL_A PID_A TOOL_A NAME_B URL_B PID_B TOOL_B [load args for B]: $rounds
# rounds, order swapping each round; then `mid` is the median round (by B/A). A's load
# arguments, if any, are in the array a_args (reset after).
pair() {
  rps_a=(); rps_b=(); ok_a=0; ok_b=0; cpu_a=0; cpu_b=0; pg_a=0; pg_b=0; errs=0
  local round
  for round in $(seq 1 "$rounds"); do
    if (( round % 2 )); then
      pair_run a "$2" "$3" "$4" "${a_args[@]}"; pair_run b "$6" "$7" "$8" "${@:9}"
    else
      pair_run b "$6" "$7" "$8" "${@:9}"; pair_run a "$2" "$3" "$4" "${a_args[@]}"
    fi
    echo "  round $round: $1 ${rps_a[-1]%.*} req/s, $5 ${rps_b[-1]%.*} req/s" >&2
  done
  mid=$(median_round "${rps_a[@]}" "${rps_b[@]}")
  a_args=()
}
a_args=()

# A fresh backend and base gateway (audit off: the rows below measure proxying; the audit
# rows measure what the audit log adds). Every ratio row starts from fresh processes: one
# that has served a minute of load costs several % more per call than a new one (seen
# with every build, the b1b0fa9 baseline too), so a row comparing a process that served
# the rows before it with a new one would measure their ages.
fresh() {
  local p
  for p in ${mock_pid:-} ${gw_pid:-}; do kill -KILL "$p" 2>/dev/null || true; done
  mock=$(bench_start "$bin/mcp-mock" --http 127.0.0.1:0 --name fast --no-dynamic --json)
  mock_pid=$(proc_last_pid)
  cat > "$work/gw.toml" <<EOT
[server]
listen = "127.0.0.1:0"
[audit]
enabled = false
[[backend]]
name = "fast"
url = "$mock"
EOT
  gw=$(bench_start "$bin/mcp-gateway" --config "$work/gw.toml" -c ops/pingora.yaml)
  gw_pid=$(proc_last_pid)
  pass="${gw%/mcp}/backends/fast/mcp"
}
fresh

rows=()
row() { rows+=("| $1 | $2 | $3 |"); }

echo "throughput, 16 connections, ${secs}s…" >&2
d16=$(load --url "$mock" --connections 16 --tool echo)
echo "latency, 1 connection…" >&2
d1=$(load --url "$mock" --connections 1 --tool echo)
p1=$(load --url "$pass" --connections 1 --tool echo)
a1=$(load --url "$gw" --connections 1 --tool fast__echo)

dr=$(field "$d16" rps)
row "tools/call, 16 conns: direct to backend" "$(printf '%.0f req/s' "$dr")" "errors $(field "$d16" errors)"
fresh
echo "aggregated against pass-through…" >&2
pair "pass-through" "$pass" "$gw_pid" echo "aggregated" "$gw" "$gw_pid" fast__echo
pr=${rps_a[$mid]}; ar=${rps_b[$mid]}
row "tools/call, 16 conns: pass-through route" "$(printf '%.0f req/s' "$pr")" "median round of $rounds"
row "tools/call, 16 conns: aggregated /mcp" "$(printf '%.0f req/s' "$ar")" "$(python3 -c "print(f'{$ar/$pr:.2f}× pass-through (target ≥ 0.8×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"
dp=$(field "$d1" p50_ms); pp=$(field "$p1" p50_ms); ap=$(field "$a1" p50_ms)
row "tools/call p50, 1 conn: direct" "$(printf '%.3f ms' "$dp")" ""
row "tools/call p50, 1 conn: pass-through" "$(printf '%.3f ms' "$pp")" ""
row "tools/call p50, 1 conn: aggregated" "$(printf '%.3f ms' "$ap")" "$(python3 -c "print(f'direct + {($ap-$dp):.3f} ms (target ≤ +0.3 ms)')")"

fresh
echo "2026-07-28 against 2025 on /mcp…" >&2
pair "2025" "$gw" "$gw_pid" fast__echo "2026-07-28" "$gw" "$gw_pid" fast__echo --era 2026-07-28
lr=${rps_a[$mid]}; mr=${rps_b[$mid]}
row "tools/call, 16 conns: aggregated, 2025 session" "$(printf '%.0f req/s' "$lr")" "median round of $rounds"
row "tools/call, 16 conns: aggregated, 2026-07-28 stateless" "$(printf '%.0f req/s' "$mr")" "$(python3 -c "print(f'{$mr/$lr:.3f}× 2025 (target ≥ 1.0×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"

# Each era end to end: a 2026-07-28 client to a modern backend (stateless on both sides:
# the call keeps the client's id, the answer passes as it is) against a 2025 client to a
# legacy backend (sessions on both sides), each behind a fresh gateway of its own.
fresh
echo "2026-07-28 end to end against 2025 end to end…" >&2
mockm=$(bench_start "$bin/mcp-mock" --http 127.0.0.1:0 --name fast --no-dynamic --json --protocol modern)
sed "s|$mock|$mockm|" "$work/gw.toml" > "$work/gwmodern.toml"
gwm=$(bench_start "$bin/mcp-gateway" --config "$work/gwmodern.toml" -c ops/pingora.yaml)
gwm_pid=$(proc_last_pid)
pair "2025 to a legacy backend" "$gw" "$gw_pid" fast__echo "2026-07-28 to a modern backend" "$gwm" "$gwm_pid" fast__echo --era 2026-07-28
er=${rps_a[$mid]}; emr=${rps_b[$mid]}
row "tools/call, 16 conns: 2025 client, legacy backend" "$(printf '%.0f req/s' "$er")" "median round of $rounds"
row "tools/call, 16 conns: 2026-07-28 client, modern backend" "$(printf '%.0f req/s' "$emr")" "$(python3 -c "print(f'{$emr/$er:.3f}× 2025 end to end (median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"

# Tracing: off must cost nothing against the build before it (BASELINE_GATEWAY: a
# gateway binary built from the commit before tracing landed; without it the row says
# so), and on at 1 % sampling, exporting to a real OTLP receiver, at least 0.95×.
if [ -n "${BASELINE_GATEWAY:-}" ]; then
  fresh
  echo "tracing off against the baseline binary…" >&2
  gwb=$(bench_start "$BASELINE_GATEWAY" --config "$work/gw.toml" -c ops/pingora.yaml)
  gwb_pid=$(proc_last_pid)
  pair "baseline" "$gwb" "$gwb_pid" fast__echo "tracing off" "$gw" "$gw_pid" fast__echo
  br=${rps_a[$mid]}; tr=${rps_b[$mid]}
  row "tools/call, 16 conns: aggregated, tracing off" "$(printf '%.0f req/s' "$tr")" "$(python3 -c "print(f'{$tr/$br:.3f}× baseline build (target ≥ 0.98×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"
else
  row "tools/call, 16 conns: aggregated, tracing off" "not measured" "set BASELINE_GATEWAY to a build without tracing (target ≥ 0.98×)"
fi
fresh
echo "tracing on at 1 % sampling…" >&2
otlp=$(bench_start .tools/venv/bin/python gateway/tests/interop/otlp_receiver.py)
cat > "$work/gwtrace.toml" <<EOT
[server]
listen = "127.0.0.1:0"
[audit]
enabled = false
[tracing]
endpoint = "${otlp%/mcp}"
sample_ratio = 0.01
[[backend]]
name = "fast"
url = "$mock"
EOT
gwt=$(bench_start "$bin/mcp-gateway" --config "$work/gwtrace.toml" -c ops/pingora.yaml)
gwt_pid=$(proc_last_pid)
pair "tracing off" "$gw" "$gw_pid" fast__echo "tracing 1 %" "$gwt" "$gwt_pid" fast__echo
fr0=${rps_a[$mid]}; tr1=${rps_b[$mid]}
row "tools/call, 16 conns: aggregated, tracing on (1 %)" "$(printf '%.0f req/s' "$tr1")" "$(python3 -c "print(f'{$tr1/$fr0:.3f}× tracing off (target ≥ 0.95×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"

fresh
echo "authenticated tools/call (oauth, cached validation)…" >&2
iss_dir="$work/issuer"
mkdir -p "$iss_dir/.well-known"
iss_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iss="http://127.0.0.1:$iss_port"
printf '{"issuer":"%s","jwks_uri":"%s/jwks"}' "$iss" "$iss" > "$iss_dir/.well-known/oauth-authorization-server"
python3 ops/scripts/mint-test-token.py --jwk gateway/tests/keys/test-es256-1.pem k1 > "$iss_dir/jwks"
(cd "$iss_dir" && exec python3 -m http.server "$iss_port" --bind 127.0.0.1 >/dev/null 2>&1) &
proc_track $!
cat > "$work/gwauth.toml" <<EOT
[server]
listen = "127.0.0.1:0"
[auth]
mode = "oauth"
issuer = "$iss"
[audit]
enabled = false
[[backend]]
name = "fast"
url = "$mock"
EOT
gwa=$(bench_start "$bin/mcp-gateway" --config "$work/gwauth.toml" -c ops/pingora.yaml)
gwa_pid=$(proc_last_pid)
token=$(python3 ops/scripts/mint-test-token.py gateway/tests/keys/test-es256-1.pem k1 "$iss" "$gwa")
pair "auth none" "$gw" "$gw_pid" fast__echo "oauth" "$gwa" "$gwa_pid" fast__echo --header "authorization: Bearer $token"
nr=${rps_a[$mid]}; orr=${rps_b[$mid]}
row "tools/call, 16 conns: aggregated, auth none" "$(printf '%.0f req/s' "$nr")" "median round of $rounds"
row "tools/call, 16 conns: aggregated, auth oauth" "$(printf '%.0f req/s' "$orr")" "$(python3 -c "print(f'{$orr/$nr:.2f}× auth none (target ≥ 0.95×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"

echo "tool policy from the 2026-07-28 headers…" >&2
fresh
kill -KILL "$gwa_pid" 2>/dev/null || true
sed -i "s|^url = .*|url = \"$mock\"|" "$work/gwauth.toml"
gwa=$(bench_start "$bin/mcp-gateway" --config "$work/gwauth.toml" -c ops/pingora.yaml)
gwa_pid=$(proc_last_pid)
token=$(python3 ops/scripts/mint-test-token.py gateway/tests/keys/test-es256-1.pem k1 "$iss" "$gwa")
sed 's/^url = .*/&\ntools = { echo = { allow_users = ["bench@example.com"] } }/' "$work/gwauth.toml" > "$work/gwpolicy.toml"
gwp=$(bench_start "$bin/mcp-gateway" --config "$work/gwpolicy.toml" -c ops/pingora.yaml)
gwp_pid=$(proc_last_pid)
tokp=$(python3 ops/scripts/mint-test-token.py gateway/tests/keys/test-es256-1.pem k1 "$iss" "$gwp")
a_args=(--era 2026-07-28 --header "authorization: Bearer $token")
pair "no tool policy" "$gwa" "$gwa_pid" fast__echo "tool policy" "$gwp" "$gwp_pid" fast__echo --era 2026-07-28 --header "authorization: Bearer $tokp"
xr=${rps_a[$mid]}; yr=${rps_b[$mid]}
row "tools/call, 16 conns: 2026-07-28, oauth, no tool policy" "$(printf '%.0f req/s' "$xr")" "median round of $rounds"
row "tools/call, 16 conns: 2026-07-28, oauth, tool policy from headers" "$(printf '%.0f req/s' "$yr")" "$(python3 -c "print(f'{$yr/$xr:.3f}× no policy (target ≥ 0.97×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")), errors $errs')")"

fresh
echo "tools/call with the PostgreSQL audit log on…" >&2
schema="bench_$RANDOM$RANDOM"
cat > "$work/gwaudit.toml" <<EOT
[server]
listen = "127.0.0.1:0"
[audit]
postgres_url = "postgres://postgres@127.0.0.1:5432/test"
schema = "$schema"
spool_dir = "$work/spool"
[[backend]]
name = "fast"
url = "$mock"
EOT
gwq=$(bench_start "$bin/mcp-gateway" --config "$work/gwaudit.toml" -c ops/pingora.yaml)
gwq_pid=$(proc_last_pid)
# PostgreSQL shares the two cores with the gateway, the backend and the load.
pair "audit off" "$gw" "$gw_pid" fast__echo "audit on" "$gwq" "$gwq_pid" fast__echo
fr=${rps_a[$mid]}; qr=${rps_b[$mid]}
nrows=$(psql -At "postgres://postgres@127.0.0.1:5432/test" -c "SELECT count(*) FROM $schema.audit_events" 2>/dev/null || echo "?")
psql -q "postgres://postgres@127.0.0.1:5432/test" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
row "tools/call, 16 conns: aggregated, audit off" "$(printf '%.0f req/s' "$fr")" "median round of $rounds"
# What each call costs in CPU (warm-up calls included in the time, not in the count, so
# slightly high): the gateway's own share is what a deployment pays on the gateway's host;
# PostgreSQL's share lands on the database's host in production, on these same cores here.
cpu_row=$(python3 -c "
off=$cpu_a*1e6/$hz/max($ok_a,1); on=$cpu_b*1e6/$hz/max($ok_b,1); pg=$pg_b*1e6/$hz/max($ok_b,1)
print(f'{off:.0f} µs off, {on:.0f} µs on (+{on-off:.0f} µs, {on/off:.2f}×) | PostgreSQL: {pg:.0f} µs per row, on the same two cores')")
row "tools/call, 16 conns: aggregated, audit to PostgreSQL" "$(printf '%.0f req/s' "$qr")" "$(python3 -c "print(f'{$qr/$fr:.3f}× audit off (target ≥ 0.9×, median of $rounds rounds of ${pair_secs}s, order swapping: $(round_ratios "${rps_a[@]}" "${rps_b[@]}")); {\"$nrows\"} rows written, errors $errs')")"
row "gateway CPU per tools/call, audit off vs on" "${cpu_row%% | *}" "${cpu_row#* | }"

echo "tools/list over 10 backends at 50 ms each…" >&2
cfg="$work/gw10.toml"
printf '[server]\nlisten = "127.0.0.1:0"\n' > "$cfg"
for i in $(seq 0 9); do
  u=$(bench_start "$bin/mcp-mock" --http 127.0.0.1:0 --name "slow$i" --no-dynamic --json --latency-ms 50)
  printf '[[backend]]\nname = "slow%s"\nurl = "%s"\n' "$i" "$u" >> "$cfg"
done
gw10=$(bench_start "$bin/mcp-gateway" --config "$cfg" -c ops/pingora.yaml)
l10=$("$bin/mcp-load" --json --warmup 1 --url "$gw10" --connections 1 --mode list --duration "$(( secs < 5 ? secs : 5 ))")
row "tools/list over 10 backends (50 ms each), p50" "$(printf '%.1f ms' "$(field "$l10" p50_ms)")" "target ≤ 70 ms; p99 $(printf '%.1f' "$(field "$l10" p99_ms)") ms"

echo "10,000 idle sessions…" >&2
gwpid=$(pgrep -f "mcp-gateway --config $work/gw.toml" | head -1)
[ -n "$gwpid" ] || { echo "gateway process not found" >&2; exit 1; }
rss_before=$(awk '/VmRSS/ {print $2}' /proc/"$gwpid"/status)
"$bin/mcp-load" --url "$gw" --mode sessions --sessions 10000 --connections 16 --json >/dev/null
rss_after=$(awk '/VmRSS/ {print $2}' /proc/"$gwpid"/status)
row "10,000 idle sessions: gateway RSS" "$((rss_after / 1024)) MB" "before: $((rss_before / 1024)) MB; target ≤ 150 MB"

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $(date -u +%Y-%m-%d)"
echo "Command: ops/scripts/bench.sh --seconds $secs --rounds $rounds"
echo
echo "| measurement | result | note |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
