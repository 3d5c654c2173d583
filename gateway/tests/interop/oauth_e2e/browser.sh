#!/bin/sh
# $BROWSER for mcp-remote (xdg-open runs `$BROWSER URL`): signs in with browser.mjs,
# whose PID goes to $OAUTH_E2E_PID_DIR for the runner's cleanup while it runs; the
# log goes to $OAUTH_E2E_BROWSER_LOG. Needs OAUTH_E2E_NODE (Node 22), OAUTH_E2E_EMAIL.
here=$(cd "$(dirname "$0")" && pwd)
log=${OAUTH_E2E_BROWSER_LOG:-/dev/stderr}
echo "browser.sh $$: opening $1" >> "$log"
"${OAUTH_E2E_NODE:-node}" "$here/browser.mjs" "$1" >> "$log" 2>&1 &
child=$!
pidfile=
if [ -n "${OAUTH_E2E_PID_DIR:-}" ]; then
  pidfile="$OAUTH_E2E_PID_DIR/browser-$child.pid"
  echo "$child 15" > "$pidfile"
fi
wait "$child"
rc=$?
[ -n "$pidfile" ] && rm -f "$pidfile"
echo "browser.sh $$: exit $rc" >> "$log"
exit $rc
