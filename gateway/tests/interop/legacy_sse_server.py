"""A legacy HTTP+SSE MCP server (the 2024-11-05 transport) built with the official
Python SDK 2.x: `MCPServer.sse_app()`, i.e. `SseServerTransport` (GET /sse opens the
event stream and announces the POST endpoint `/messages/?session_id=…` in an
`endpoint` event; client messages are POSTed there, answers come on the stream).

    python legacy_sse_server.py [--name NAME] [--host 127.0.0.1] [--port 0]

Binds the port first (0 = ephemeral), then prints exactly one line to stdout,
`listening on http://HOST:PORT/sse`, and serves until SIGTERM/SIGINT.

Tools:
  echo(text)        -> text equal to `text`
  whoami()          -> JSON {"server": NAME, "transport": "sse"}
  add(a, b)         -> text str(a + b)
  log_and_echo(text)-> sends two log messages to the client, then returns `text`
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def build(name: str) -> MCPServer:
    server = MCPServer(name)

    @server.tool(description="Echoes back the input text")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Names this server")
    def whoami() -> str:
        return json.dumps({"server": name, "transport": "sse"})

    @server.tool(description="Adds two integers")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(description="Logs twice to the client, then echoes")
    async def log_and_echo(text: str, ctx: Context) -> str:
        await ctx.info(f"{name} got {text}")
        await ctx.info(f"{name} done")
        return text

    return server


async def serve(name: str, host: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]

    app = build(name).sse_app(host=host)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"listening on http://{host}:{bound_port}/sse", flush=True)
    await server.serve(sockets=[sock])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="legacy")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    try:
        anyio.run(serve, a.name, a.host, a.port)
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
