# Process harness for the scripts in ops/scripts (and gateway/tests/interop): start a
# process, wait for its `listening on URL` line with a deadline, record its PID, stop
# everything at exit. Sourced, never run:
#
#   . "$root/ops/scripts/lib.sh"
#   proc_init "$work"                      # logs and the PID file go under $work
#   trap 'proc_stop_all; rm -rf "$work"' EXIT
#   url=$(proc_start mock TERM 15 "$bin/mcp-mock" --http 127.0.0.1:0 --name alpha)
#
# Every PID goes to a file ($PROC_DIR/pids, one "PID SIGNAL" a line), not a variable,
# so that processes started inside $(…) are stopped too. Each process has its stop
# signal: INT for the gateway when a fast stop is wanted (TERM starts Pingora's graceful
# shutdown), TERM for the rest. What this does not do: build binaries or install the
# caller's trap (each script knows what else it must clean up), except for the
# benchmarks that need nothing else (bench_init).

# bench_init : the start the gateway benchmarks share (bench.sh, bench-bridge.sh,
# bench-instructions.sh): the release binaries built, `bin` their directory, `work` a
# new scratch directory for the harness, everything stopped and `work` removed at exit.
# Needs $root (the checkout).
# bench_options SECS ROUNDS ARGS… : reads --seconds N and --rounds R (defaults SECS and
# ROUNDS) into $secs and $rounds; anything else, or a number that is not positive, exits 2.
bench_options() {
  secs=$1 rounds=$2; shift 2
  while [ $# -gt 0 ]; do
    case "$1" in
      --seconds) secs="${2:?--seconds needs a number}"; shift 2 ;;
      --rounds) rounds="${2:?--rounds needs a number}"; shift 2 ;;
      *) echo "unknown option $1 (--seconds N, --rounds R)" >&2; exit 2 ;;
    esac
  done
  [[ "$secs" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--seconds and --rounds take positive whole numbers" >&2; exit 2; }
}

# bench_start ARGV… : starts a process whose first stdout line is "listening on URL"
# (15 s), its stderr dropped; echoes URL; exits when it does not start. Runs in a
# subshell ($(…)): lib.sh records every PID in a file, not a variable.
bench_start() {
  PROC_STDERR=/dev/null proc_start "p$RANDOM" TERM 15 "$@" || { echo "could not start: $*" >&2; exit 1; }
}

bench_init() {
  cargo build --release -q -p mcp-gateway -p mcp-backends -p mcp-loadgen
  bin="$root/target/release"
  work=$(mktemp -d)
  proc_init "$work"
  trap 'proc_stop_all; rm -rf "$work"' EXIT
}

# proc_init DIR : where logs (DIR/NAME.out, DIR/NAME.err) and the PID file go.
proc_init() {
  PROC_DIR=$1
  mkdir -p "$PROC_DIR"
  : >>"$PROC_DIR/pids"
}

# proc_track PID [SIGNAL] : records a process started by the caller (default TERM).
proc_track() {
  echo "$1 ${2:-TERM}" >>"$PROC_DIR/pids"
}

# proc_spawn NAME SIGNAL ARGV… : starts ARGV in the background, stdout to
# $PROC_DIR/NAME.out, stderr to $PROC_DIR/NAME.err (PROC_STDERR=/dev/null to drop it),
# stdin from /dev/null; records it; sets PROC_PID.
proc_spawn() {
  local name=$1 sig=$2; shift 2
  # Create the files first: the background redirection may not have run yet when read.
  : >"$PROC_DIR/$name.out"; : >"$PROC_DIR/$name.err"
  "$@" >"$PROC_DIR/$name.out" 2>"${PROC_STDERR:-$PROC_DIR/$name.err}" </dev/null &
  PROC_PID=$!
  proc_track "$PROC_PID" "$sig"
}

# proc_url NAME : the URL of NAME's first `listening on URL` line, or nothing yet.
proc_url() {
  sed -n 's/^listening on \([^ ]*\)$/\1/p' "$PROC_DIR/$1.out" | head -n1
}

# proc_wait_url NAME PID DEADLINE_S : polls for NAME's listening line; echoes the URL.
# Fails (the tail of its stderr on ours) when PID exits first or at the deadline.
proc_wait_url() {
  local name=$1 pid=$2 end=$((SECONDS + $3)) url
  while :; do
    url=$(proc_url "$name")
    if [ -n "$url" ]; then echo "$url"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited before listening:" >&2; tail -n 30 "$PROC_DIR/$name.err" >&2; return 1
    fi
    if [ $SECONDS -ge $end ]; then
      echo "$name did not print 'listening on URL' within $3 s:" >&2
      tail -n 30 "$PROC_DIR/$name.err" >&2; return 1
    fi
    sleep 0.05 # poll interval, bounded by the deadline above
  done
}

# proc_start NAME SIGNAL DEADLINE_S ARGV… : proc_spawn, then proc_wait_url; echoes the
# URL (works inside $(…): the PID is in the file; proc_last_pid reads it back).
proc_start() {
  local name=$1 sig=$2 deadline=$3; shift 3
  proc_spawn "$name" "$sig" "$@"
  proc_wait_url "$name" "$PROC_PID" "$deadline"
}

# proc_last_pid : the PID recorded last (the process a `$(proc_start …)` started).
proc_last_pid() {
  tail -n1 "$PROC_DIR/pids" | cut -d' ' -f1
}

# free_port : a TCP port on 127.0.0.1 nothing listens on right now (for a listener that
# announces nothing, or a callback whose port must be known in advance).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for DEADLINE_S CMD… : runs CMD until it succeeds; fails at the deadline.
wait_for() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.05 # poll interval, bounded by the deadline above
  done
}

# proc_alive PID : the process runs (a zombie waiting to be reaped does not count).
proc_alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# proc_stop PID SIGNAL [GRACE_S] : SIGNAL, then SIGKILL if it still runs after GRACE_S
# (default 5); reaps it when it is our child.
proc_stop() {
  local pid=$1 sig=$2 end=$((SECONDS + ${3:-5}))
  if proc_alive "$pid"; then
    kill -"$sig" "$pid" 2>/dev/null || true
    while proc_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.05; done # bounded poll
    if proc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
}

# proc_stop_all [GRACE_S] : stops every recorded process (newest first, each with its
# signal; the grace periods, default 5 s, run side by side), then forgets them.
proc_stop_all() {
  if [ -z "${PROC_DIR:-}" ] || [ ! -s "$PROC_DIR/pids" ]; then return 0; fi
  local pid sig end=$((SECONDS + ${1:-5}))
  while read -r pid sig; do
    if proc_alive "$pid"; then kill -"$sig" "$pid" 2>/dev/null || true; fi
  done < <(tac "$PROC_DIR/pids")
  while read -r pid sig; do
    while proc_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.05; done # bounded poll
    if proc_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
  done <"$PROC_DIR/pids"
  : >"$PROC_DIR/pids"
}
