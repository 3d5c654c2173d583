"""The official Python SDK (mcp 2.x) as an OAuth client of the gateway.

`signed_in_client(gateway_url, browser)` is what an application does: an
`OAuthClientProvider` (token storage, client metadata, redirect and callback handlers)
as the `auth` of the HTTP client under `streamable_http_client`, then `mcp.Client`.
Nothing is pre-registered or pre-fetched: the first request gets 401 and the SDK
discovers, registers and signs in by itself; `Browser` plays the person at the browser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from dataclasses import dataclass, field

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from .browser import Browser
from .stack import free_port


@dataclass
class StoredToken:
    token: OAuthToken
    stored_at: float  # time.time() when the SDK stored it


@dataclass
class MemoryStorage:
    """The SDK's TokenStorage, in memory, keeping every token it was given."""

    history: list[StoredToken] = field(default_factory=list)
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.history[-1].token if self.history else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.history.append(StoredToken(tokens, time.time()))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info

    @property
    def current(self) -> StoredToken:
        assert self.history, "the SDK stored no token"
        return self.history[-1]


def jwt_claims(token: str) -> dict:
    """The payload of a JWT (not verified here: the gateway verifies it)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@dataclass
class Session:
    client: Client
    provider: OAuthClientProvider
    storage: MemoryStorage
    browser: Browser
    redirect_uri: str


@contextlib.asynccontextmanager
async def signed_in_client(gateway_url: str, browser: Browser, client_name: str = "oauth-e2e (Python SDK)"):
    """Connects to the gateway as the person at `browser`; yields a Session."""
    # The SDK's loopback redirect URI. Nothing needs to listen there: the scripted
    # browser stops when it is sent to it and hands the query to the callback handler.
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=gateway_url,
        client_metadata=OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    async with httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(30.0, read=300.0)) as http:
        async with Client(streamable_http_client(gateway_url, http_client=http)) as client:
            yield Session(client, provider, storage, browser, redirect_uri)


async def tool_names(client: Client) -> list[str]:
    names, cursor = [], None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return names
    raise AssertionError("tools/list never ended (100 pages)")


def text_of(result) -> str:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    assert texts, f"no text content in {result!r}"
    return "\n".join(texts)


def find_exception(exc: BaseException, kind: type) -> BaseException | None:
    """exc, or an exception inside it (groups, causes, contexts), of type kind."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        todo += list(getattr(e, "exceptions", ()) or ())
        todo += [e.__cause__, e.__context__]
    return None
