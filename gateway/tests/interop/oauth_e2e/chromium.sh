#!/bin/sh
# $BROWSER for a client under test (Python's webbrowser runs `$BROWSER URL`): signs in
# with headless Chromium (chromium_signin.mjs) as $DEMO_EMAIL. Needs DEMO_NODE (Node 22)
# and NPM_DIR (playwright-core's node_modules parent); the log goes to $DEMO_BROWSER_LOG.
here=$(cd "$(dirname "$0")" && pwd)
exec "${DEMO_NODE:-node}" "$here/chromium_signin.mjs" "$1" >>"${DEMO_BROWSER_LOG:-/dev/stderr}" 2>&1
