"""The demo's tour with the official Python SDK (mcp 2.x): sign in, list the tools your
groups allow, call one tool of each demo backend.

    .tools/venv/bin/python ops/demo/tour.py [http://127.0.0.1:8080/mcp]

Nothing is configured beforehand: the first request is refused (401), the SDK finds
the sidecar, registers itself and opens your browser at the sign-in (the `BROWSER`
environment variable chooses the browser, as for every Python program); approve, pick a
demo person at the fake Google, and the browser comes back to this program's loopback
callback. Then it prints who you are, your tools, and what each call answered, a
refusal included. Exit status: 0 when signed in, 1 when the sign-in was refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sys
import threading
import webbrowser
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp import Client, MCPError
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

CALLS = [  # (tool, arguments): one of each demo backend
    ("public__echo", {"text": "hello from the tour"}),
    ("engineering__echo", {"text": "hello, engineering"}),
    ("everything__echo", {"message": "hello, everything"}),
]
class SignInRefused(Exception):
    pass


PAGE = "<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>"


class MemoryStorage:
    """Tokens and the registration, for this run only."""

    def __init__(self):
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


class Callback:
    """The loopback redirect URI: a one-request HTTP server on 127.0.0.1."""

    async def start(self) -> str:
        self.result: asyncio.Future = asyncio.get_running_loop().create_future()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/callback"

    async def _serve(self, reader, writer):
        line = (await reader.readline()).decode(errors="replace")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass  # the headers
        target = line.split(" ")[1] if line.count(" ") >= 2 else "/"
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        if "code" in query:
            page = PAGE.format(title="Signed in", text="You can close this window.")
        else:
            page = PAGE.format(title="Not signed in", text=query.get("error_description", "See the terminal."))
        body = page.encode()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n")
        writer.write(f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()
        if urlsplit(target).path == "/callback" and not self.result.done():
            self.result.set_result(query)

    async def wait(self) -> AuthorizationCodeResult:
        query = await self.result
        self.server.close()
        if "code" not in query:
            raise SignInRefused(f"{query.get('error')}: {query.get('error_description', '')}")
        return AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))


async def open_browser(url: str) -> None:
    print(f"Sign in at: {url}", flush=True)
    # webbrowser.open may wait for the browser command: off the event loop, which must
    # keep serving the callback.
    done = threading.Event()

    def run():
        if not webbrowser.open(url):
            print("(no browser found: open the address above yourself)", flush=True)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    await asyncio.to_thread(done.wait, 600)


def email_of(token: OAuthToken) -> str:
    payload = token.access_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{claims.get('email')} (groups: {', '.join(claims.get('groups', [])) or 'none'})"


async def main(url: str) -> int:
    callback = Callback()
    redirect_uri = await callback.start()
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="MCP gateway tour (Python SDK)",
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=open_browser,
        callback_handler=callback.wait,
    )
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30.0, read=120.0)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            print(f"signed in as {email_of(storage.tokens)}", flush=True)
            tools = await client.list_tools()
            per_backend: dict[str, int] = {}
            for t in tools.tools:
                backend = t.name.split("__", 1)[0]
                per_backend[backend] = per_backend.get(backend, 0) + 1
            print("tools by backend: " + ", ".join(f"{b} ({n})" for b, n in sorted(per_backend.items())), flush=True)
            for name, args in CALLS:
                try:
                    result = await client.call_tool(name, args)
                    text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")
                    print(f"{name} -> {text}", flush=True)
                except MCPError as e:
                    print(f"{name} -> refused ({e.error.code}): {e.error.message}", flush=True)
    return 0


def refusal_in(e: BaseException | None) -> SignInRefused | None:
    """The SignInRefused inside e (the SDK wraps it in exception groups)."""
    if e is None or isinstance(e, SignInRefused):
        return e
    for inner in [*getattr(e, "exceptions", ()), e.__cause__, e.__context__]:
        if inner is not e and (found := refusal_in(inner)):
            return found
    return None


def not_a_refusal(record: logging.LogRecord) -> bool:
    """Hides the SDK's traceback of a refused sign-in (printed in one line instead)."""
    return not (record.exc_info and refusal_in(record.exc_info[1]))


if __name__ == "__main__":
    logging.basicConfig()
    logging.getLogger().handlers[0].addFilter(not_a_refusal)
    try:
        sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/mcp")))
    except BaseException as e:
        if (refused := refusal_in(e)) is None:
            raise
        print(f"sign-in refused: {refused}", flush=True)
        sys.exit(1)
