#!/bin/sh
# ExecReload of mcp-gateway.service: a zero-downtime restart onto the installed binary
# and configuration (Pingora graceful upgrade).
#
#   1. validate the binary and configuration (-t); a bad one never gets to step 3;
#   2. start the new process with -u -d: it binds upgrade_sock and waits there for the
#      running process's listening sockets;
#   3. SIGQUIT the running process ($MAINPID): it sends its listening sockets over
#      upgrade_sock (the same kernel sockets: no connection is refused), both accept
#      for 5 s, then it stops accepting and finishes what it serves within
#      grace_period_seconds;
#   4. the new process daemonizes and writes the pid file; systemd (PIDFile=) adopts it
#      as the main process when the old one exits.
#
# Environment: MAINPID (set by systemd), MCP_GATEWAY_BIN, MCP_GATEWAY_CONFIG,
# MCP_GATEWAY_PINGORA (defaults below; the unit sets them).
set -eu
: "${MAINPID:?run by systemd as ExecReload, which sets MAINPID}"
bin="${MCP_GATEWAY_BIN:-/usr/local/bin/mcp-gateway}"
config="${MCP_GATEWAY_CONFIG:-/etc/mcp-gateway/gateway.toml}"
pingora="${MCP_GATEWAY_PINGORA:-/etc/mcp-gateway/pingora.yaml}"
sock=$(sed -n 's/^upgrade_sock:[[:space:]]*//p' "$pingora" | tr -d "\"'")
[ -n "$sock" ] || { echo "reload: $pingora sets no upgrade_sock" >&2; exit 1; }
kill -0 "$MAINPID" 2>/dev/null || { echo "reload: main process $MAINPID is not running" >&2; exit 1; }

# 1. Validate.
"$bin" --config "$config" -c "$pingora" -t

# 2. The new process. A stale socket file would look like a ready one.
rm -f "$sock"
"$bin" --config "$config" -c "$pingora" -u -d &
new=$!

# 3. Once it waits on the upgrade socket, hand over.
i=0
while [ ! -S "$sock" ]; do
  if ! kill -0 "$new" 2>/dev/null; then
    wait "$new" || true
    echo "reload: the new process exited before opening $sock; the running one keeps serving" >&2
    exit 1
  fi
  i=$((i + 1))
  if [ "$i" -gt 200 ]; then
    kill "$new" 2>/dev/null || true
    echo "reload: the new process did not open $sock within 20 s; the running one keeps serving" >&2
    exit 1
  fi
  sleep 0.1
done
kill -QUIT "$MAINPID"

# 4. The new process's foreground part exits 0 once it holds the sockets and has
#    forked into the background; the daemon then writes the pid file. Return when it
#    names the new process, so that `systemctl reload` ends with the new one in place.
if ! wait "$new"; then
  echo "reload: the new process failed after the handover; systemd restarts the service (Restart=always)" >&2
  exit 1
fi
pid_file=$(sed -n 's/^pid_file:[[:space:]]*//p' "$pingora" | tr -d "\"'")
[ -n "$pid_file" ] || exit 0
i=0
while :; do
  pid=$(cat "$pid_file" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$pid" != "$MAINPID" ] && kill -0 "$pid" 2>/dev/null; then
    exit 0
  fi
  i=$((i + 1))
  if [ "$i" -gt 100 ]; then
    echo "reload: $pid_file does not name a new running process after 10 s" >&2
    exit 1
  fi
  sleep 0.1
done
