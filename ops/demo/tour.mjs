// The demo's tour with the official TypeScript SDK (@modelcontextprotocol/sdk 1.x):
// sign in, list the tools your groups allow, call one tool of each demo backend.
//
//   node ops/demo/tour.mjs [http://127.0.0.1:8080/mcp]
//
// The SDK is taken from .tools/npm (ops/scripts/install-tools.sh --test), or from
// NPM_DIR. As ops/demo/tour.py: the first request is refused (401), the SDK registers
// itself at the sidecar and this program opens the browser at the sign-in ($BROWSER,
// else xdg-open); the browser comes back to this program's loopback callback, the SDK
// exchanges the code, and the calls follow. Exit status 1 when the sign-in was refused.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(process.env.NPM_DIR || join(here, "../../.tools/npm"), "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { UnauthorizedError } = require("@modelcontextprotocol/sdk/client/auth.js");

const url = new URL(process.argv[2] || "http://127.0.0.1:8080/mcp");
const CALLS = [
  ["public__echo", { text: "hello from the tour" }],
  ["engineering__echo", { text: "hello, engineering" }],
  ["everything__echo", { message: "hello, everything" }],
];

// The loopback redirect URI: resolves with the callback's query.
const callback = await new Promise((ready) => {
  let deliver;
  const result = new Promise((r) => (deliver = r));
  const server = createServer((req, res) => {
    const q = Object.fromEntries(new URL(req.url, "http://127.0.0.1").searchParams);
    const title = q.code ? "Signed in" : "Not signed in";
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><title>${title}</title><h1>${title}</h1><p>You can close this window.</p>`);
    deliver(q);
    server.close();
  });
  server.listen(0, "127.0.0.1", () => {
    ready({ uri: `http://127.0.0.1:${server.address().port}/callback`, result });
  });
});

// The SDK's OAuthClientProvider, in memory for this run.
const saved = {};
const provider = {
  get redirectUrl() { return callback.uri; },
  get clientMetadata() {
    return {
      client_name: "MCP gateway tour (TypeScript SDK)",
      redirect_uris: [callback.uri],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  state: () => (saved.state = randomBytes(16).toString("base64url")),
  clientInformation: () => saved.client,
  saveClientInformation: (c) => { saved.client = c; },
  tokens: () => saved.tokens,
  saveTokens: (t) => { saved.tokens = t; },
  saveCodeVerifier: (v) => { saved.verifier = v; },
  codeVerifier: () => saved.verifier,
  redirectToAuthorization: async (authUrl) => {
    console.log(`Sign in at: ${authUrl}`);
    const browser = process.env.BROWSER || "xdg-open";
    await new Promise((done) => {
      const p = spawn(browser, [authUrl.href], { stdio: "ignore" });
      p.on("error", () => { console.log("(no browser found: open the address above yourself)"); done(); });
      p.on("exit", done);
    });
  },
};

const connect = async () => {
  const client = new Client({ name: "mcp-gateway-tour", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(url, { authProvider: provider }));
  return client;
};

let client;
try {
  client = await connect();
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
  const q = await callback.result;
  if (q.code && q.state !== saved.state) throw new Error("the callback's state is not the one sent");
  if (!q.code) {
    console.log(`sign-in refused: ${q.error}: ${q.error_description ?? ""}`);
    process.exit(1);
  }
  await new StreamableHTTPClientTransport(url, { authProvider: provider }).finishAuth(q.code);
  client = await connect();
}
const claims = JSON.parse(Buffer.from(saved.tokens.access_token.split(".")[1], "base64url"));
console.log(`signed in as ${claims.email} (groups: ${(claims.groups || []).join(", ") || "none"})`);
const perBackend = {};
for (const t of (await client.listTools()).tools) {
  const b = t.name.split("__")[0];
  perBackend[b] = (perBackend[b] || 0) + 1;
}
console.log(`tools by backend: ${Object.keys(perBackend).sort().map((b) => `${b} (${perBackend[b]})`).join(", ")}`);
for (const [name, args] of CALLS) {
  try {
    const r = await client.callTool({ name, arguments: args });
    console.log(`${name} -> ${r.content.filter((c) => c.type === "text").map((c) => c.text).join(" ")}`);
  } catch (e) {
    console.log(`${name} -> refused (${e.code}): ${e.message.replace(/^MCP error -?\d+: /, "")}`);
  }
}
await client.close();
process.exit(0);
