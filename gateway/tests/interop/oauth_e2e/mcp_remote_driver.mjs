#!/usr/bin/env node
// mcp-remote (npm), headless, against the gateway with OAuth (the stack of stack.py).
//
//   node mcp_remote_driver.mjs STACK_JSON WORK_DIR
//
// mcp-remote is a stdio <-> remote proxy: this driver is its stdio client. On start it
// finds the gateway's 401, discovers the sidecar, registers (DCR), and opens the
// browser with the `open` package, which on Linux without a desktop runs
// `xdg-open URL` → `$BROWSER URL`: browser.sh, which signs the person in over HTTP and
// finally hits mcp-remote's own localhost callback. Then, over stdio: initialize,
// tools/list, tools/call. Its config dir (tokens, client registration) is in a temp HOME.
//
//   1. alice (SRE): signs in through the browser; sees grafana__*; grafana__echo works;
//      open__whoami shows x-forwarded-email: alice and no authorization header.
//   2. alice again, same config dir: the stored tokens are used, no browser opens.
//   3. bob, fresh config dir: no grafana__* tools; calling grafana__echo gets -32003.
//
// Env: OAUTH_E2E_NODE (Node 22; default this node), MCP_REMOTE_JS (mcp-remote's
// dist/proxy.js), OAUTH_E2E_PID_DIR (PID files for the runner's cleanup).
// Exit 0 when every check passed.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [stackJson, workDir] = process.argv.slice(2);
if (!stackJson || !workDir) {
  console.error("usage: mcp_remote_driver.mjs STACK_JSON WORK_DIR");
  process.exit(2);
}
const stack = JSON.parse(fs.readFileSync(stackJson, "utf8"));
const NODE = process.env.OAUTH_E2E_NODE || process.execPath;
const MCP_REMOTE_JS = process.env.MCP_REMOTE_JS;
const PID_DIR = process.env.OAUTH_E2E_PID_DIR || "";
const REQUEST_DEADLINE_MS = 20000;
const FIRST_REQUEST_DEADLINE_MS = 60000; // the first one waits for the whole sign-in
const STOP_DEADLINE_MS = 5000;
const FORBIDDEN = -32003;

if (!MCP_REMOTE_JS || !fs.existsSync(MCP_REMOTE_JS)) {
  console.error(`MCP_REMOTE_JS (${MCP_REMOTE_JS}) is not mcp-remote's proxy.js`);
  process.exit(2);
}
fs.mkdirSync(workDir, { recursive: true });
const browserLog = path.join(workDir, "browser.log");
fs.writeFileSync(browserLog, "");

const results = [];
function check(name, ok, detail = "") {
  results.push({ name, ok: !!ok, detail });
  console.log(`${ok ? "PASS" : "FAIL"} ${name}${detail && !ok ? `: ${detail}` : ""}`);
  return !!ok;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const browserOpenings = () => (fs.readFileSync(browserLog, "utf8").match(/^browser\.sh \d+: opening /gm) || []).length;

/** One mcp-remote process and a JSON-RPC client on its stdio. */
class McpRemote {
  constructor(label, { home, email, callbackPort }) {
    this.label = label;
    this.stderrPath = path.join(workDir, `mcp-remote-${label}.stderr`);
    const env = {
      // A clean environment: no desktop, so `open` → xdg-open → $BROWSER.
      PATH: process.env.PATH,
      LANG: process.env.LANG || "C.UTF-8",
      HOME: home,
      MCP_REMOTE_CONFIG_DIR: path.join(home, ".mcp-auth"),
      BROWSER: path.join(here, "browser.sh"),
      OAUTH_E2E_NODE: NODE,
      OAUTH_E2E_EMAIL: email,
      OAUTH_E2E_BROWSER_LOG: browserLog,
      OAUTH_E2E_PID_DIR: PID_DIR,
    };
    const args = [MCP_REMOTE_JS, stack.gateway_url, String(callbackPort), "--auth-timeout", "60", "--debug"];
    const err = fs.openSync(this.stderrPath, "w");
    this.child = spawn(NODE, args, { env, stdio: ["pipe", "pipe", err] });
    fs.closeSync(err);
    this.pidFile = PID_DIR ? path.join(PID_DIR, `mcp-remote-${label}.pid`) : null;
    if (this.pidFile) fs.writeFileSync(this.pidFile, `${this.child.pid} 15\n`);
    this.exited = new Promise((resolve) => this.child.once("exit", (code, signal) => resolve({ code, signal })));
    this.nextId = 1;
    this.pending = new Map();
    readline.createInterface({ input: this.child.stdout }).on("line", (line) => this.onLine(line));
    this.exited.then(({ code, signal }) => {
      for (const [, p] of this.pending) p.reject(new Error(`mcp-remote exited (code ${code}, signal ${signal})`));
      this.pending.clear();
    });
  }

  onLine(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not JSON-RPC
    }
    if (msg.id !== undefined && msg.method === undefined) {
      const p = this.pending.get(msg.id);
      if (p) {
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        p.resolve(msg);
      }
    } else if (msg.id !== undefined && msg.method !== undefined) {
      // A request from the server side (ping, roots/list, …).
      const reply =
        msg.method === "ping"
          ? { jsonrpc: "2.0", id: msg.id, result: {} }
          : msg.method === "roots/list"
            ? { jsonrpc: "2.0", id: msg.id, result: { roots: [] } }
            : { jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: `not supported: ${msg.method}` } };
      this.send(reply);
    }
  }

  send(msg) {
    this.child.stdin.write(JSON.stringify(msg) + "\n");
  }

  request(method, params, deadlineMs = REQUEST_DEADLINE_MS) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method}: no answer within ${deadlineMs} ms`));
      }, deadlineMs);
      this.pending.set(id, { resolve, reject, timer });
      this.send({ jsonrpc: "2.0", id, method, params });
    });
  }

  notify(method, params) {
    this.send({ jsonrpc: "2.0", method, ...(params ? { params } : {}) });
  }

  async initialize() {
    const r = await this.request(
      "initialize",
      {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "oauth-e2e-mcp-remote-driver", version: "1" },
      },
      FIRST_REQUEST_DEADLINE_MS,
    );
    if (r.error) throw new Error(`initialize failed: ${JSON.stringify(r.error)}`);
    this.notify("notifications/initialized");
    return r.result;
  }

  async toolNames() {
    const names = [];
    let cursor;
    for (let i = 0; i < 100; i++) {
      const r = await this.request("tools/list", cursor ? { cursor } : {});
      if (r.error) throw new Error(`tools/list failed: ${JSON.stringify(r.error)}`);
      names.push(...r.result.tools.map((t) => t.name));
      cursor = r.result.nextCursor;
      if (!cursor) return names;
    }
    throw new Error("tools/list never ended");
  }

  call(name, args) {
    return this.request("tools/call", { name, arguments: args });
  }

  async stop() {
    // Closing stdin is how a host ends a stdio server; then TERM, then KILL.
    this.child.stdin.end();
    const exited = (ms) => Promise.race([this.exited, new Promise((r) => setTimeout(() => r(null), ms))]);
    if (!(await exited(STOP_DEADLINE_MS))) {
      this.child.kill("SIGTERM");
      if (!(await exited(STOP_DEADLINE_MS))) {
        this.child.kill("SIGKILL");
        await this.exited;
      }
    }
    if (this.pidFile) fs.rmSync(this.pidFile, { force: true });
  }

  stderrTail(limit = 6000) {
    try {
      return fs.readFileSync(this.stderrPath, "utf8").slice(-limit);
    } catch {
      return "";
    }
  }
}

// Stopped from outside (the runner's timeout or trap): take the current mcp-remote down too.
let current = null;
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    console.log(`driver: ${sig}, stopping`);
    if (current) {
      current.child.kill("SIGTERM");
      if (current.pidFile) fs.rmSync(current.pidFile, { force: true });
    }
    process.exit(1);
  });
}

const textOf = (result) => (result?.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

async function scenario(label, opts, body) {
  console.log(`--- ${label}`);
  const remote = new McpRemote(label, opts);
  current = remote;
  const failedBefore = results.filter((r) => !r.ok).length;
  try {
    await body(remote);
  } catch (e) {
    check(`${label}: no exception`, false, e.stack || String(e));
  } finally {
    await remote.stop();
    current = null;
  }
  if (results.filter((r) => !r.ok).length > failedBefore) {
    console.log(`--- mcp-remote ${label} stderr (${remote.stderrPath}) ---\n${remote.stderrTail()}`);
    console.log(`--- browser log (${browserLog}) ---\n${fs.readFileSync(browserLog, "utf8").slice(-6000)}`);
  }
}

async function main() {
  const alice = stack.users.alice;
  const bob = stack.users.bob;
  const aliceHome = path.join(workDir, "home-alice");
  const bobHome = path.join(workDir, "home-bob");
  fs.mkdirSync(aliceHome, { recursive: true });
  fs.mkdirSync(bobHome, { recursive: true });
  const alicePort = await freePort();

  await scenario("alice-first-run", { home: aliceHome, email: alice, callbackPort: alicePort }, async (r) => {
    const init = await r.initialize();
    check("alice: initialize through mcp-remote", init?.serverInfo?.name === "mcp-gateway", JSON.stringify(init));
    check("alice: the browser was opened once", browserOpenings() === 1, `openings: ${browserOpenings()}`);
    const landed = fs.readFileSync(browserLog, "utf8").match(/"landed":"([^"]+)","callback_status":(\d+)/);
    check(
      "alice: the browser reached mcp-remote's callback with a code",
      landed && landed[1].startsWith(`http://localhost:${alicePort}/oauth/callback?`) && landed[1].includes("code=") && Number(landed[2]) < 400,
      landed ? landed[0] : "no landing in the browser log",
    );
    const names = await r.toolNames();
    check("alice: tools/list has grafana__echo and open__whoami", names.includes("grafana__echo") && names.includes("open__whoami"), names.join(","));
    const echo = await r.call("grafana__echo", { text: "hello via mcp-remote" });
    check("alice: grafana__echo answers", !echo.error && !echo.result?.isError && textOf(echo.result) === "hello via mcp-remote", JSON.stringify(echo));
    const who = await r.call("open__whoami", {});
    let headers = {};
    try {
      headers = JSON.parse(textOf(who.result)).headers || {};
    } catch {}
    check("alice: open__whoami has x-forwarded-email: alice", headers["x-forwarded-email"] === alice, JSON.stringify(who));
    check("alice: no authorization header reaches the backend", !("authorization" in headers), JSON.stringify(headers));
    const stored = fs.existsSync(path.join(aliceHome, ".mcp-auth"))
      ? fs.readdirSync(path.join(aliceHome, ".mcp-auth"), { recursive: true }).filter((f) => String(f).endsWith("_tokens.json"))
      : [];
    check("alice: tokens stored in the temp config dir", stored.length >= 1, `files: ${stored}`);
  });

  await scenario("alice-second-run", { home: aliceHome, email: alice, callbackPort: alicePort }, async (r) => {
    const before = browserOpenings();
    const init = await r.initialize();
    check("alice again: initialize with the stored tokens", init?.serverInfo?.name === "mcp-gateway", JSON.stringify(init));
    const names = await r.toolNames();
    check("alice again: tools/list has grafana__echo", names.includes("grafana__echo"), names.join(","));
    check("alice again: no browser opened", browserOpenings() === before, `openings: ${before} -> ${browserOpenings()}`);
  });

  await scenario("bob", { home: bobHome, email: bob, callbackPort: await freePort() }, async (r) => {
    const init = await r.initialize();
    check("bob: initialize through mcp-remote", init?.serverInfo?.name === "mcp-gateway", JSON.stringify(init));
    const names = await r.toolNames();
    check("bob: no grafana__ tools", !names.some((n) => n.startsWith("grafana__")) && names.includes("open__whoami"), names.join(","));
    const echo = await r.call("grafana__echo", { text: "let me in" });
    check(
      "bob: grafana__echo refused with -32003 naming him",
      echo.error?.code === FORBIDDEN && echo.error.message.includes(`${bob} may not use`),
      JSON.stringify(echo),
    );
    const who = await r.call("open__whoami", {});
    let headers = {};
    try {
      headers = JSON.parse(textOf(who.result)).headers || {};
    } catch {}
    check("bob: open__whoami has x-forwarded-email: bob", headers["x-forwarded-email"] === bob, JSON.stringify(who));
  });

  const failed = results.filter((r) => !r.ok);
  console.log(`mcp-remote: ${results.length - failed.length}/${results.length} checks passed`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e.stack || e);
    process.exit(1);
  },
);
