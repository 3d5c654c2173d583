// The official TypeScript client SDK 2.4 (@modelcontextprotocol/client) with
// versionNegotiation {mode: 'auto'} against one MCP URL: run by test_modern_era.py.
//
//   node modern_client.mjs URL PLAN_JSON
// PLAN_JSON: {"tools": [[name, args], …], "prompts": [[name, args], …], "resources": [uri, …]},
// and optionally "asks": tools whose backends ask for input, answered by the handlers
// below (elicitation accepts `ada-<field>` for each field, sampling answers "sampled",
// roots lists one root); each request's message or prompt is reported in "asked".
// Prints one JSON report on stdout (test_modern_era.py's Report): the negotiated
// version, the server's name, the wire (each POST's JSON-RPC method and HTTP status,
// seen through the transport's fetch), the listed names and what each call returned.
// Exits 1 (report on stderr) when a step throws. Environment: MCP_INTEROP_NODE_MODULES.

import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules =
  process.env.MCP_INTEROP_NODE_MODULES || join(resolve(here, '../../..'), '.tools/npm/node_modules');
const require = createRequire(join(nodeModules, 'noop.js'));
const { Client, StreamableHTTPClientTransport } = require('@modelcontextprotocol/client');

const [url, planText] = process.argv.slice(2);
const plan = JSON.parse(planText);

const wire = [];
async function recordingFetch(input, init) {
  let method = null;
  if (typeof init?.body === 'string') {
    try {
      method = JSON.parse(init.body).method ?? null;
    } catch {}
  }
  const response = await fetch(input, init);
  wire.push({ http: init?.method ?? 'GET', method, status: response.status,
              session: response.headers.get('mcp-session-id') });
  return response;
}

async function allPages(list, field) {
  const items = [];
  let cursor;
  for (let i = 0; i < 100; i++) {
    const page = await list(cursor === undefined ? {} : { cursor });
    items.push(...page[field]);
    cursor = page.nextCursor;
    if (cursor === undefined || cursor === null) return items;
  }
  throw new Error(`the ${field} list never ended`);
}

const textOf = (content) => content.filter((c) => c.type === 'text').map((c) => c.text).join('\n');

const client = new Client(
  { name: 'interop-ts-client-2.4', version: '1.0.0' },
  {
    versionNegotiation: { mode: 'auto' },
    capabilities: { elicitation: {}, sampling: {}, roots: {} },
  },
);
const asked = [];
client.setRequestHandler('elicitation/create', async (request) => {
  asked.push(request.params.message);
  const fields = Object.keys(request.params.requestedSchema?.properties ?? {});
  return { action: 'accept', content: Object.fromEntries(fields.map((k) => [k, `ada-${k}`])) };
});
client.setRequestHandler('sampling/createMessage', async (request) => {
  asked.push(request.params.messages[0].content.text);
  return { role: 'assistant', model: 'm', content: { type: 'text', text: plan.sampled ?? 'hi' } };
});
client.setRequestHandler('roots/list', async () => ({ roots: [{ uri: 'file:///work/ts', name: 'ts' }] }));
const report = { wire, asked };
try {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch }));
  report.protocolVersion = client.getNegotiatedProtocolVersion();
  report.serverName = client.getServerVersion()?.name ?? null;
  report.tools = (await allPages((p) => client.listTools(p), 'tools')).map((t) => t.name);
  report.prompts = (await allPages((p) => client.listPrompts(p), 'prompts')).map((p) => p.name);
  report.resources = (await allPages((p) => client.listResources(p), 'resources')).map((r) => r.uri);
  report.called = {};
  for (const [name, args] of [...plan.tools, ...(plan.asks ?? [])]) {
    const r = await client.callTool({ name, arguments: args });
    report.called[name] = { text: textOf(r.content), isError: Boolean(r.isError) };
  }
  report.prompted = {};
  for (const [name, args] of plan.prompts) {
    const r = await client.getPrompt({ name, arguments: args });
    report.prompted[name] = r.messages[0].content.text;
  }
  report.read = {};
  for (const uri of plan.resources) {
    const r = await client.readResource({ uri });
    report.read[uri] = r.contents[0].text;
  }
  await client.close();
  console.log(JSON.stringify(report));
} catch (err) {
  console.error(JSON.stringify(report));
  console.error(err?.stack || String(err));
  process.exit(1);
}
