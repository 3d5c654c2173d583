"""A legacy HTTP+SSE server (2024-11-05 transport) behind the gateway.

The server is the official Python SDK 2.x's own SSE transport (`MCPServer.sse_app()`,
see legacy_sse_server.py), on an ephemeral port. The gateway has it as
`transport = "sse"` next to an mcp-mock over Streamable HTTP; the official Python SDK
client talks Streamable HTTP to the gateway, which talks legacy SSE upstream. The same
server is also asked directly with the SDK's legacy `sse_client` to compare.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_legacy_sse.py
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.sse import sse_client
from mcp_types import LoggingMessageNotificationParams

from mcp_helpers import all_tools, text_of

from conftest import (
    Group,
    backend_health,
    start,
    start_gateway_config,
    start_mock,
    tracked,
)

pytestmark = pytest.mark.anyio

SERVER_SCRIPT = Path(__file__).resolve().parent / "legacy_sse_server.py"
LEGACY_TOOLS = {"echo", "whoami", "add", "log_and_echo"}


def start_legacy(workdir: Path, port: int = 0, tag: str = ""):
    return start(
        f"legacy-sse{tag}",
        [sys.executable, str(SERVER_SCRIPT), "--name", "legacy", "--port", str(port)],
        workdir,
    )


class Legacy(Group):
    gateway = None
    legacy = None
    mock = None


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("legacy-sse")
    g = Legacy(workdir)
    with tracked(g):
        g.legacy = g.add(start_legacy(workdir))
        assert g.legacy.url.endswith("/sse"), g.legacy.url
        g.mock = g.add(start_mock("mock", workdir))
        g.gateway = g.add(
            start_gateway_config(
                [
                    {"name": "legacy", "transport": "sse", "url": g.legacy.url, "timeout_ms": 10000},
                    {"name": "mock", "url": g.mock.url, "timeout_ms": 10000},
                ],
                workdir,
            )
        )
        yield g


async def test_the_server_really_is_legacy_sse(legacy):
    # Straight at it with the SDK's legacy client: GET /sse, then POSTs to the
    # announced endpoint. (Streamable HTTP would POST to the URL itself.)
    with anyio.fail_after(30):
        async with Client(sse_client(legacy.legacy.url)) as direct:
            names = {t.name for t in await all_tools(direct)}
            assert text_of(await direct.call_tool("echo", {"text": "direct"})) == "direct"
    assert names == LEGACY_TOOLS


async def test_tools_are_listed_through_the_gateway(legacy):
    with anyio.fail_after(30):
        async with Client(sse_client(legacy.legacy.url)) as direct:
            direct_tools = {t.name: t for t in await all_tools(direct)}

    async with Client(legacy.gateway.url) as client:
        tools = {t.name: t for t in await all_tools(client)}
    legacy_names = {n.removeprefix("legacy__") for n in tools if n.startswith("legacy__")}
    assert legacy_names == LEGACY_TOOLS
    assert "mock__echo" in tools
    for name, tool in direct_tools.items():
        via = tools[f"legacy__{name}"]
        assert via.input_schema == tool.input_schema, name
        assert via.description == tool.description, name


async def test_call_tools_through_the_gateway(legacy):
    marker = f"through the gateway {uuid.uuid4()}"
    async with Client(legacy.gateway.url) as client:
        echoed = await client.call_tool("legacy__echo", {"text": marker})
        assert not echoed.is_error, echoed
        assert text_of(echoed) == marker

        added = await client.call_tool("legacy__add", {"a": 20, "b": 22})
        assert not added.is_error, added
        assert text_of(added) == "42"

        who = await client.call_tool("legacy__whoami", {})
        assert json.loads(text_of(who)) == {"server": "legacy", "transport": "sse"}

        mocked = await client.call_tool("mock__echo", {"text": marker})
        assert text_of(mocked) == marker

        # An unknown tool under the backend's prefix: the SDK server itself answers
        # with an error result (MCPServer's behaviour, as when asked directly), or the
        # gateway refuses it with -32602; either way the caller learns the name.
        try:
            unknown = await client.call_tool("legacy__no_such_tool", {})
        except MCPError as e:
            assert e.error.code == -32602, e.error
            assert "no_such_tool" in e.error.message
        else:
            assert unknown.is_error, unknown
            assert "Unknown tool: no_such_tool" in text_of(unknown)


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # logging: deprecated in 2026-07-28 only
async def test_log_messages_from_the_sse_stream_are_relayed(legacy):
    marker = f"log-{uuid.uuid4()}"
    logs: list[LoggingMessageNotificationParams] = []
    done = anyio.Event()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)
        if params.data == "legacy done":
            done.set()

    # mode="legacy": logging/setLevel is not part of 2026-07-28 (the SDK's default era
    # through the gateway); the level travels in each request's _meta there.
    async with Client(legacy.gateway.url, logging_callback=on_log, mode="legacy") as client:
        await client.set_logging_level("debug")
        result = await client.call_tool("legacy__log_and_echo", {"text": marker})
        assert text_of(result) == marker
        with anyio.fail_after(10):
            await done.wait()
    assert f"legacy got {marker}" in [l.data for l in logs]


async def test_concurrent_sessions_get_their_own_answers(legacy):
    results: dict[str, str] = {}

    async def session(i: int) -> None:
        async with Client(legacy.gateway.url) as client:
            for j in range(5):
                m = f"s{i}-c{j}-{uuid.uuid4()}"
                results[m] = text_of(await client.call_tool("legacy__echo", {"text": m}))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(session, i)
    assert len(results) == 30
    assert all(k == v for k, v in results.items()), results

    b = backend_health(legacy.gateway.url, "legacy")
    assert b["state"] == "up", b
    assert b["transport"]["transport"] == "sse"
    assert b["transport"]["live_connections"] >= 1, b


async def test_gateway_reconnects_after_the_server_restarts(legacy):
    # Runs last in this module: replaces the legacy server by a new one on the same port.
    port = int(legacy.legacy.url.rsplit(":", 1)[1].split("/")[0])
    legacy.legacy.stop()
    legacy.procs.remove(legacy.legacy)

    async with Client(legacy.gateway.url) as client:
        with pytest.raises(MCPError) as down:
            await client.call_tool("legacy__echo", {"text": "nobody home"})
        assert down.value.error.code in (-32001, -32002), down.value.error
        assert "legacy" in down.value.error.message

        legacy.legacy = legacy.add(start_legacy(legacy.workdir, port=port, tag="-2"))
        # The gateway opens a new SSE connection (and MCP session) on its own.
        last = None
        with anyio.fail_after(30):
            while True:
                try:
                    r = await client.call_tool("legacy__echo", {"text": "back"})
                    if not r.is_error and text_of(r) == "back":
                        break
                    last = r
                except MCPError as e:
                    last = e
                await anyio.sleep(0.2)
    facts = backend_health(legacy.gateway.url, "legacy")
    assert facts["state"] == "up", (facts, last)
