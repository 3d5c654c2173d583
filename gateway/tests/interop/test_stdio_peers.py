"""Published STDIO MCP servers behind the gateway, driven by the official Python SDK 2.x.

One gateway, three backends of three kinds:
  everything  the npm package @modelcontextprotocol/server-everything, run by Node
              (`node dist/index.js stdio`): transport = "stdio", shared process;
  time        the PyPI package mcp-server-time (`mcp-server-time --local-timezone
              UTC`): transport = "stdio", shared process;
  mock        the project's mcp-mock over Streamable HTTP.
Every test talks to the gateway's /mcp with `mcp.Client`; what each server offers is
also asked directly (the SDK's own stdio / HTTP client) to compare.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_stdio_peers.py
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters

from mcp_helpers import all_tools, recording_sampler, text_of

from conftest import (
    EVERYTHING_JS,
    NODE,
    STDIO_BASE_ENV,
    TIME_SERVER,
    Group,
    alive,
    backend_health,
    children_running,
    start_gateway_config,
    start_mock,
    tracked,
    wait_until,
)

pytestmark = pytest.mark.anyio

BACKENDS = ("everything", "time", "mock")
MARKER = f"interop-{uuid.uuid4()}"
# Set in the gateway's own environment: a STDIO child must not inherit it.
GATEWAY_ONLY_VAR = "MCP_INTEROP_GATEWAY_SECRET"


def everything_params() -> tuple[str, list[str]]:
    return str(NODE), [str(EVERYTHING_JS), "stdio"]


def time_params() -> tuple[str, list[str]]:
    return str(TIME_SERVER), ["--local-timezone", "UTC"]


class Peers(Group):
    gateway = None
    mock = None
    child_cwd: Path


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    for path, what in [(NODE, "Node"), (EVERYTHING_JS, "@modelcontextprotocol/server-everything"),
                       (TIME_SERVER, "mcp-server-time")]:
        if not Path(path).is_file():
            pytest.fail(f"{what} is missing ({path}): run ops/scripts/install-tools.sh --test")
    workdir = tmp_path_factory.mktemp("stdio-peers")
    g = Peers(workdir)
    with tracked(g):
        g.mock = g.add(start_mock("mock", workdir))
        g.child_cwd = workdir / "everything-cwd"
        g.child_cwd.mkdir()
        node, node_args = everything_params()
        time_cmd, time_args = time_params()
        g.gateway = g.add(
            start_gateway_config(
                [
                    {
                        "name": "everything",
                        "transport": "stdio",
                        "command": node,
                        "args": node_args,
                        "env": {"INTEROP_MARKER": MARKER},
                        "cwd": str(g.child_cwd),
                        "timeout_ms": 15000,
                    },
                    {
                        "name": "time",
                        "transport": "stdio",
                        "command": time_cmd,
                        "args": time_args,
                        "sharing": "shared",
                        "timeout_ms": 15000,
                    },
                    {"name": "mock", "url": g.mock.url, "timeout_ms": 10000},
                ],
                workdir,
                env={GATEWAY_ONLY_VAR: "must-not-leak"},
            )
        )
        yield g
        children = children_running(g.gateway, str(EVERYTHING_JS)) + children_running(g.gateway, str(TIME_SERVER))
        assert len(children) == 2, f"expected one everything and one time process, found {children}"
    # The gateway is stopped: its STDIO children must be gone with it.
    wait_until(lambda: not any(alive(p) for p in children), timeout=10,
               what=f"the STDIO children {children} to exit after the gateway stopped")


async def direct_tools(server) -> dict:
    """name -> Tool, asked of the server directly (no gateway)."""
    with anyio.fail_after(60):
        async with Client(server) as direct:
            return {t.name: t for t in await all_tools(direct)}


async def test_merged_tool_list_has_all_three_peers(peers):
    node, node_args = everything_params()
    time_cmd, time_args = time_params()
    everything = await direct_tools(StdioServerParameters(command=node, args=node_args))
    time_tools = await direct_tools(StdioServerParameters(command=time_cmd, args=time_args))
    mock = await direct_tools(peers.mock.url)
    assert {"echo", "get-sum", "get-env"} <= set(everything)
    assert set(time_tools) == {"get_current_time", "convert_time"}
    assert "echo" in mock

    async with Client(peers.gateway.url) as client:
        tools = {t.name: t for t in await all_tools(client)}
    names = list(tools)
    assert len(names) == len(set(names))
    by_backend: dict[str, set[str]] = {b: set() for b in BACKENDS}
    for n in names:
        prefix, sep, rest = n.partition("__")
        assert sep and prefix in by_backend, f"tool {n!r} is not prefixed with a backend name"
        by_backend[prefix].add(rest)

    assert by_backend["time"] == set(time_tools)
    assert by_backend["mock"] == set(mock)
    # server-everything adds a few tools only for clients that declare sampling,
    # elicitation or roots; the gateway is its client here, the bare SDK was above.
    assert set(everything) <= by_backend["everything"]

    # Schemas and descriptions pass through unchanged.
    for backend, direct in (("time", time_tools), ("everything", everything)):
        for name, tool in direct.items():
            via = tools[f"{backend}__{name}"]
            assert via.input_schema == tool.input_schema, name
            assert via.description == tool.description, name
    assert tools["time__get_current_time"].output_schema == time_tools["get_current_time"].output_schema


async def test_call_a_tool_of_each_peer(peers):
    async with Client(peers.gateway.url) as client:
        echoed = await client.call_tool("everything__echo", {"message": MARKER})
        assert not echoed.is_error, echoed
        assert text_of(echoed) == f"Echo: {MARKER}"

        summed = await client.call_tool("everything__get-sum", {"a": 2, "b": 40})
        assert not summed.is_error, summed
        assert text_of(summed) == "The sum of 2 and 40 is 42."

        before = datetime.now(timezone.utc)
        now = await client.call_tool("time__get_current_time", {"timezone": "Asia/Tokyo"})
        assert not now.is_error, now
        result = json.loads(text_of(now))
        assert result["timezone"] == "Asia/Tokyo"
        assert result["datetime"].endswith("+09:00")
        assert abs(datetime.fromisoformat(result["datetime"]) - before) < timedelta(minutes=5)
        assert now.structured_content == result

        converted = await client.call_tool(
            "time__convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Kolkata"},
        )
        assert not converted.is_error, converted
        conv = json.loads(text_of(converted))
        assert conv["target"]["timezone"] == "Asia/Kolkata"
        assert "T17:30:00+05:30" in conv["target"]["datetime"]
        assert conv["time_difference"] == "+5.5h"

        mocked = await client.call_tool("mock__echo", {"text": MARKER})
        assert not mocked.is_error, mocked
        assert text_of(mocked) == MARKER


async def test_peer_errors_come_back(peers):
    async with Client(peers.gateway.url) as client:
        bad_zone = await client.call_tool("time__get_current_time", {"timezone": "Mars/Olympus_Mons"})
        assert bad_zone.is_error
        assert "Invalid timezone" in text_of(bad_zone)
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("time__no_such_tool", {})
        assert unknown.value.error.code == -32602
        # A published server's own argument validation, relayed.
        bad_args = None
        try:
            bad_args = await client.call_tool("everything__get-sum", {"a": "two", "b": 1})
        except MCPError as e:
            assert e.error.code == -32602, e
        if bad_args is not None:
            assert bad_args.is_error, bad_args
        # The backend still serves afterwards.
        ok = await client.call_tool("everything__echo", {"message": "still here"})
        assert text_of(ok) == "Echo: still here"


async def test_child_gets_only_the_minimal_environment_and_its_cwd(peers):
    async with Client(peers.gateway.url) as client:
        env = json.loads(text_of(await client.call_tool("everything__get-env", {})))
    assert env.get("INTEROP_MARKER") == MARKER
    assert GATEWAY_ONLY_VAR not in env
    extra = set(env) - STDIO_BASE_ENV - {"INTEROP_MARKER"}
    assert not extra, f"the child inherited more than PATH, HOME, LANG, TMPDIR, USER: {sorted(extra)}"

    (pid,) = children_running(peers.gateway, str(EVERYTHING_JS))
    assert Path(f"/proc/{pid}/cwd").resolve() == peers.child_cwd.resolve()


async def test_concurrent_sessions_share_one_process(peers):
    # Shared sharing: many downstream sessions, concurrent calls, one child each; the
    # answers must not cross (the gateway renumbers requests on the shared pipe).
    results: dict[str, str] = {}

    async def session(i: int) -> None:
        async with Client(peers.gateway.url) as client:
            for j in range(5):
                m = f"s{i}-c{j}-{uuid.uuid4()}"
                r = await client.call_tool("everything__echo", {"message": m})
                results[m] = text_of(r)
                zone = ("Europe/Paris", "America/New_York", "Asia/Tokyo")[(i + j) % 3]
                t = await client.call_tool("time__get_current_time", {"timezone": zone})
                results[f"{m}/time"] = json.loads(text_of(t))["timezone"] + f" {zone}"

    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(session, i)

    assert len(results) == 80
    for k, v in results.items():
        if k.endswith("/time"):
            got, want = v.split(" ")
            assert got == want, k
        else:
            assert v == f"Echo: {k}"

    assert len(children_running(peers.gateway, str(EVERYTHING_JS))) == 1
    assert len(children_running(peers.gateway, str(TIME_SERVER))) == 1
    for name in ("everything", "time"):
        facts = backend_health(peers.gateway.url, name)["transport"]
        assert facts["transport"] == "stdio"
        assert facts["sharing"] == "shared"
        assert facts["restarts"] == 0, facts
        assert facts["live_connections"] == 1, facts


async def test_sampling_and_progress_cross_the_stdio_pipe(peers):
    # server-everything asks the client for a sampling/createMessage over its stdout;
    # the gateway relays it to this client and the answer back down the pipe.
    answer = f"sampled {uuid.uuid4()}"
    seen, on_sample = recording_sampler(answer)

    progress: list[tuple[float, float | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total))

    # mode="legacy": the server-to-client request is relayed as it is (a 2026-07-28
    # client gets it bridged: the next test).
    async with Client(peers.gateway.url, sampling_callback=on_sample, mode="legacy") as client:
        with anyio.fail_after(30):
            sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": MARKER})
        assert not sampled.is_error, sampled
        assert len(seen) == 1
        assert MARKER in seen[0].messages[0].content.text
        assert answer in text_of(sampled)

        with anyio.fail_after(30):
            done = await client.call_tool(
                "everything__trigger-long-running-operation",
                {"duration": 0.6, "steps": 3},
                progress_callback=on_progress,
            )
        assert not done.is_error, done
        assert "Long running operation completed" in text_of(done)
        assert progress == [(1, 3), (2, 3), (3, 3)]


async def test_a_modern_clients_retry_answers_a_2025_servers_sampling(peers):
    # A 2026-07-28 client takes no server-to-client request: the gateway holds
    # server-everything's call, hands the client its sampling request as an
    # input-required result, and answers the held request with the SDK's retry.
    answer = f"bridged {uuid.uuid4()}"
    seen, on_sample = recording_sampler(answer)

    async with Client(peers.gateway.url, sampling_callback=on_sample) as client:
        assert client.protocol_version == "2026-07-28"
        with anyio.fail_after(30):
            sampled = await client.call_tool("everything__trigger-sampling-request", {"prompt": MARKER})
        assert not sampled.is_error, sampled
        assert len(seen) == 1 and MARKER in seen[0].messages[0].content.text, seen
        assert answer in text_of(sampled)


async def test_readyz_reports_the_transports(peers):
    for name in ("everything", "time"):
        b = backend_health(peers.gateway.url, name)
        assert b["state"] == "up", b
        facts = b["transport"]
        assert facts["transport"] == "stdio"
        assert facts["sharing"] == "shared"
        assert facts["last_exit"] is None
    assert backend_health(peers.gateway.url, "mock")["transport"]["transport"] == "http"
