"""Life and death of STDIO backends, seen from the official Python SDK client.

Each test starts its own gateway (ephemeral port) with STDIO backends: the published
PyPI `mcp-server-time` for `sharing = "per_session"`, the project's `mcp-mock --stdio`
where a tool must crash on demand. Checks: one process per downstream session and the
`max_processes` limit, idle reaping with a transparent restart, a crashed shared child
restarted, and no child outliving a killed gateway.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_stdio_lifecycle.py
"""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request
from contextlib import AsyncExitStack

import anyio
import pytest
from mcp import Client, MCPError

from mcp_helpers import text_of

# The tests of per-session processes open 2025-era sessions (initialize): through the
# gateway the SDK's default is the stateless 2026-07-28 era, which has no sessions.
SESSIONS = "legacy"

from conftest import (
    EVERYTHING_JS,
    GATEWAY_BIN,
    MOCK_BIN,
    NODE,
    TIME_SERVER,
    Group,
    alive,
    backend_health,
    children_running,
    gateway_toml,
    start,
    start_gateway_config,
    tracked,
    wait_until,
)

pytestmark = pytest.mark.anyio


def time_backend(**extra) -> dict:
    return {
        "name": "time",
        "transport": "stdio",
        "command": str(TIME_SERVER),
        "args": ["--local-timezone", "UTC"],
        "timeout_ms": 15000,
        **extra,
    }


@pytest.fixture
def group(tmp_path):
    g = Group(tmp_path)
    with tracked(g):
        yield g


def facts(gateway, name: str) -> dict:
    return backend_health(gateway.url, name)["transport"]


class RawSession:
    """A minimal Streamable HTTP client (urllib, JSON replies): no GET stream, so the
    gateway sees exactly the requests the test makes."""

    def __init__(self, url: str):
        self.url = url
        self.sid = None
        self.next_id = 0
        reply, headers = self._post(
            {
                "jsonrpc": "2.0", "id": self._id(), "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "interop-raw", "version": "1"}},
            }
        )
        assert "result" in reply, reply
        self.sid = headers["mcp-session-id"]
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _post(self, message: dict):
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if self.sid:
            headers |= {"mcp-session-id": self.sid, "mcp-protocol-version": "2025-11-25"}
        req = urllib.request.Request(self.url, json.dumps(message).encode(), headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read().decode()
            ctype = r.headers.get("content-type", "")
            if r.status == 202 or not body:
                return None, r.headers
            if ctype.startswith("text/event-stream"):  # last data line carries the response
                datas = [l[5:].strip() for l in body.splitlines() if l.startswith("data:") and l[5:].strip()]
                return json.loads(datas[-1]), r.headers
            return json.loads(body), r.headers

    def call(self, tool: str, arguments: dict) -> dict:
        reply, _ = self._post(
            {"jsonrpc": "2.0", "id": self._id(), "method": "tools/call",
             "params": {"name": tool, "arguments": arguments}}
        )
        return reply

    def delete(self) -> None:
        req = urllib.request.Request(self.url, headers={"mcp-session-id": self.sid}, method="DELETE")
        urllib.request.urlopen(req, timeout=10).close()


async def test_per_session_processes_and_their_limit(group):
    gw = group.add(start_gateway_config(
        [time_backend(sharing="per_session", max_processes=2)], group.workdir))
    f = facts(gw, "time")
    assert (f["transport"], f["sharing"], f["processes"]) == ("stdio", "per_session", 0), f

    async with AsyncExitStack() as stack:
        # mode="legacy" (SESSIONS): per-session processes need downstream sessions,
        # which only the 2025 era has; a 2026-07-28 client has none.
        a = await stack.enter_async_context(Client(gw.url, mode=SESSIONS))
        b = await stack.enter_async_context(Client(gw.url, mode=SESSIONS))
        for client, zone in ((a, "Europe/Berlin"), (b, "America/Sao_Paulo")):
            r = await client.call_tool("time__get_current_time", {"timezone": zone})
            assert json.loads(text_of(r))["timezone"] == zone
        # One process per session, both alive at once.
        assert facts(gw, "time")["processes"] == 2
        assert len(children_running(gw, str(TIME_SERVER))) == 2

        # A third session finds the limit: an error that names the backend and why.
        c = await stack.enter_async_context(Client(gw.url, mode=SESSIONS))
        with pytest.raises(MCPError) as full:
            await c.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert full.value.error.code == -32001, full.value.error
        assert "time" in full.value.error.message and "max_processes" in full.value.error.message

        # The first two still work, each on its own process.
        for client in (a, b):
            r = await client.call_tool("time__get_current_time", {"timezone": "Asia/Tokyo"})
            assert not r.is_error
        assert facts(gw, "time")["started_total"] == 2


async def test_idle_process_is_reaped_and_restarted_transparently(group):
    gw = group.add(start_gateway_config(
        [time_backend(sharing="per_session", idle_timeout_s=1)], group.workdir))
    s = RawSession(gw.url)
    first = s.call("time__get_current_time", {"timezone": "Europe/Paris"})
    assert json.loads(first["result"]["content"][0]["text"])["timezone"] == "Europe/Paris"
    assert facts(gw, "time")["processes"] == 1

    wait_until(lambda: facts(gw, "time")["processes"] == 0, timeout=15,
               what="the idle per-session process to be reaped")
    assert not children_running(gw, str(TIME_SERVER))

    # Same downstream session: a fresh process is started and initialized on demand.
    again = s.call("time__get_current_time", {"timezone": "Asia/Tokyo"})
    assert "result" in again, again
    assert json.loads(again["result"]["content"][0]["text"])["timezone"] == "Asia/Tokyo"
    assert facts(gw, "time")["started_total"] == 2
    s.delete()
    wait_until(lambda: facts(gw, "time")["processes"] == 0, timeout=10,
               what="DELETE to end the session's process")


async def test_crashed_shared_child_is_restarted(group):
    gw = group.add(start_gateway_config(
        [{
            "name": "crashy",
            "transport": "stdio",
            "command": str(MOCK_BIN),
            "args": ["--stdio", "--name", "crashy", "--no-dynamic"],
            "timeout_ms": 10000,
        }],
        group.workdir,
    ))
    async with Client(gw.url) as client:
        assert text_of(await client.call_tool("crashy__echo", {"text": "before"})) == "before"
        (pid_before,) = children_running(gw, str(MOCK_BIN))

        with pytest.raises(MCPError) as crashed:
            await client.call_tool("crashy__crash", {})  # the child exits with status 3
        assert crashed.value.error.code == -32001, crashed.value.error
        assert "crashy" in crashed.value.error.message

        with anyio.fail_after(20):
            while True:
                try:
                    r = await client.call_tool("crashy__echo", {"text": "after"})
                    if text_of(r) == "after":
                        break
                except MCPError:
                    pass
                await anyio.sleep(0.2)
    f = facts(gw, "crashy")
    assert f["restarts"] >= 1, f
    assert "3" in (f["last_exit"] or ""), f
    assert not alive(pid_before)
    assert len(children_running(gw, str(MOCK_BIN))) == 1


async def test_no_child_outlives_a_killed_gateway(group):
    gw = group.add(start_gateway_config(
        [
            time_backend(),
            {"name": "everything", "transport": "stdio", "command": str(NODE),
             "args": [str(EVERYTHING_JS), "stdio"], "timeout_ms": 15000},
        ],
        group.workdir,
    ))
    async with Client(gw.url) as client:
        r = await client.call_tool("everything__echo", {"message": "hi"})
        assert text_of(r) == "Echo: hi"
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    children = children_running(gw, str(TIME_SERVER)) + children_running(gw, str(EVERYTHING_JS))
    assert len(children) == 2, children

    gw.popen.send_signal(signal.SIGKILL)  # no chance to clean up
    gw.popen.wait(timeout=10)
    group.procs.remove(gw)
    gw.stop()
    wait_until(lambda: not any(alive(p) for p in children), timeout=10,
               what=f"the children {children} of a SIGKILLed gateway to exit")


async def test_an_ended_session_leaves_no_process(group):
    gw = group.add(start_gateway_config(
        [time_backend(sharing="per_session", max_processes=2)], group.workdir))
    # A 2025-era session (SESSIONS): opens a GET stream, DELETEs on exit.
    async with Client(gw.url, mode=SESSIONS) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    started = facts(gw, "time")["started_total"]
    await anyio.sleep(3)
    f = facts(gw, "time")
    assert (f["processes"], f["started_total"]) == (0, started), f


async def test_children_still_start_after_the_gateway_binary_is_replaced(group):
    bindir = group.workdir / "bin"
    bindir.mkdir()
    copy = bindir / "mcp-gateway"
    shutil.copy2(GATEWAY_BIN, copy)
    config = group.workdir / "replaced.toml"
    config.write_text(gateway_toml([time_backend(sharing="per_session")]))
    gw = group.add(start("gateway-replaced", [str(copy), "--config", str(config)],
                         group.workdir, signal.SIGINT))
    shutil.copy2(GATEWAY_BIN, bindir / "next")
    (bindir / "next").replace(copy)  # what an in-place upgrade does
    s = RawSession(gw.url)
    reply = s.call("time__get_current_time", {"timezone": "UTC"})
    assert "result" in reply, reply
