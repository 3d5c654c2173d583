"""MCP 2026-07-28 (the stateless era) through the gateway, with official clients.

One gateway in front of four backends, all prefixed, each test run twice:
with `protocol` left to discovery ("auto") and with it set ("2025" / "2026-07-28"):
  legacy   mcp-mock (2025 revisions only: the gateway keeps a session with it)
  modern   mcp-mock --protocol modern (2026-07-28 only: spoken to statelessly)
  ts       ts_server.mjs, a server written with the official TypeScript SDK 2.4
           (@modelcontextprotocol/server), 2026-07-28 only (`legacy: 'reject'`)
  ts1      ts_server_v1.mjs, a server written with the TypeScript SDK 1.x
           (@modelcontextprotocol/sdk), 2025 era: its tools ask the client for input
Three clients run one plan (PLAN: a tool, a prompt and a resource of each backend):
  - Python `mcp` 2.3 (`mcp.Client`, mode="auto"), in process, its HTTP seen through an
    httpx event hook;
  - npm `@modelcontextprotocol/client` 2.4 with versionNegotiation {mode: 'auto'}
    (modern_client.mjs, its HTTP seen through the transport's fetch);
  - a 2025-only client, Python `mcp` 1.x (legacy_client_v1.py under .tools/venv1).
The modern clients must adopt 2026-07-28 from `server/discover` (no `initialize` on
the wire, no session); the 2025-only one must reach the modern backends through its
initialize-based session. Both kinds must get the same answers from every backend.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_modern_era.py
(ops/scripts/interop.sh python runs it with test_python_sdk.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    Root,
    TextContent,
    TextResourceContents,
)

from conftest import (
    NODE,
    NPM_MODULES,
    REPO,
    Group,
    start,
    start_gateway_config,
    start_mock,
    tracked,
)
from mcp_helpers import all_pages, all_resources, all_tools

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
TS_SERVER = HERE / "ts_server.mjs"
TS_SERVER_V1 = HERE / "ts_server_v1.mjs"
TS_CLIENT = HERE / "modern_client.mjs"
V1_CLIENT = HERE / "legacy_client_v1.py"
V1_PYTHON = Path(os.environ.get("MCP_INTEROP_PYTHON_V1", REPO / ".tools/venv1/bin/python"))
TS_CLIENT_PKG = NPM_MODULES / "@modelcontextprotocol/client"
TS_SERVER_PKG = NPM_MODULES / "@modelcontextprotocol/server"
CLIENT_DEADLINE_S = 60
EVENT_DEADLINE_S = 10

MODERN = "2026-07-28"
BACKEND_UNAVAILABLE = -32001  # docs/errors.md: a backend unreachable or failing
LEGACY = "2025-11-25"
MARKER = f"modern-era-{uuid.uuid4()}"
TS_MOTTO = "typed all the way down"  # ts_server.mjs's resource

# What every client does, and what it must get back.
PLAN = {
    "tools": [
        ["legacy__echo", {"text": MARKER}],
        ["legacy__whoami", {}],
        ["modern__echo", {"text": MARKER}],
        ["modern__whoami", {}],
        ["ts__greet", {"name": MARKER}],
    ],
    "prompts": [
        ["legacy__test_simple_prompt", {}],
        ["modern__test_prompt_with_arguments", {"arg1": MARKER, "arg2": "two"}],
        ["ts__haiku", {"topic": MARKER}],
    ],
    "resources": ["mock://legacy/info", "mock://modern/info", "ts://server/motto"],
}
PROMPT_TEXTS = {
    "legacy__test_simple_prompt": "This is a simple prompt for testing.",
    "modern__test_prompt_with_arguments": f"Prompt with arguments: arg1='{MARKER}', arg2='two'",
    "ts__haiku": f"Write a haiku about {MARKER}.",
}
RESOURCE_TEXTS = {
    "mock://legacy/info": {"server": "legacy"},
    "mock://modern/info": {"server": "modern"},
    "ts://server/motto": TS_MOTTO,
}


@dataclass
class Era:
    group: Group
    gateway: object
    ts: object
    protocols: str  # a key of PROTOCOLS


# Each backend's `protocol`: left to discovery, or set (the same eras, named).
PROTOCOLS = {
    "auto": {},
    "configured": {"legacy": "2025", "modern": "2026-07-28", "ts": "2026-07-28", "ts1": "2025"},
}


@pytest.fixture(scope="module", params=sorted(PROTOCOLS))
def era(request, tmp_path_factory):
    for path, what in [(NODE, "Node"), (TS_SERVER_PKG, "@modelcontextprotocol/server 2.x"),
                       (TS_CLIENT_PKG, "@modelcontextprotocol/client 2.x"), (V1_PYTHON, "the mcp 1.x venv")]:
        if not Path(path).exists():
            pytest.fail(f"{what} is missing ({path}): run ops/scripts/install-tools.sh --test")
    workdir = tmp_path_factory.mktemp(f"modern-era-{request.param}")
    g = Group(workdir)
    with tracked(g):
        legacy = g.add(start_mock("legacy", workdir))
        modern = g.add(start_mock("modern", workdir, "--protocol", "modern"))
        ts = g.add(start("ts-server", [str(NODE), str(TS_SERVER)], workdir,
                         env={"MCP_INTEROP_NODE_MODULES": str(NPM_MODULES)}))
        ts1 = g.add(start("ts-server-v1", [str(NODE), str(TS_SERVER_V1)], workdir,
                          env={"MCP_INTEROP_NODE_MODULES": str(NPM_MODULES)}))
        protocols = PROTOCOLS[request.param]
        backends = [
            {"name": name, "url": p.url, "prefix": True, "timeout_ms": 10000}
            | ({"protocol": protocols[name]} if name in protocols else {})
            for name, p in (("legacy", legacy), ("modern", modern), ("ts", ts), ("ts1", ts1))
        ]
        yield Era(g, g.add(start_gateway_config(backends, workdir)), ts, request.param)


# ---------------------------------------------------------------- the checks, per report


def check_answers(report: dict) -> None:
    """What any client must have got from the three backends through the gateway
    (report: modern_client.mjs's JSON shape)."""
    for name, _ in PLAN["tools"]:
        assert name in report["tools"], f"{name} not listed: {report['tools']}"
    for name, _ in PLAN["prompts"]:
        assert name in report["prompts"], f"{name} not listed: {report['prompts']}"
    for uri in PLAN["resources"]:
        assert uri in report["resources"], f"{uri} not listed: {report['resources']}"

    called = report["called"]
    for name, result in called.items():
        assert not result["isError"], (name, result)
    assert called["legacy__echo"]["text"] == MARKER
    assert called["modern__echo"]["text"] == MARKER
    assert called["ts__greet"]["text"] == f"Hello, {MARKER}! (from ts-server)"
    # The gateway's side of the wire, as each mock saw it: a session with the legacy
    # backend, none and the 2026-07-28 header with the modern one.
    legacy_who = json.loads(called["legacy__whoami"]["text"])
    assert legacy_who["server"] == "legacy" and legacy_who["session"], legacy_who
    modern_who = json.loads(called["modern__whoami"]["text"])
    assert modern_who["server"] == "modern" and modern_who["session"] is None, modern_who
    assert modern_who["headers"]["mcp-protocol-version"] == MODERN, modern_who
    assert modern_who["headers"]["mcp-method"] == "tools/call", modern_who

    assert report["prompted"] == PROMPT_TEXTS
    read = report["read"]
    assert json.loads(read["mock://legacy/info"]) == RESOURCE_TEXTS["mock://legacy/info"]
    assert json.loads(read["mock://modern/info"]) == RESOURCE_TEXTS["mock://modern/info"]
    assert read["ts://server/motto"] == TS_MOTTO


def check_modern_wire(wire: list[dict]) -> None:
    """A modern client's HTTP exchanges with the gateway: discover answered first, no
    initialize, no session handed out."""
    methods = [w["method"] for w in wire]
    assert "initialize" not in methods, f"the client sent initialize: {wire}"
    assert wire and wire[0]["method"] == "server/discover", f"discover was not first: {wire}"
    assert wire[0]["status"] == 200, f"server/discover was not answered: {wire}"
    assert all(w["session"] is None for w in wire), f"the gateway handed out a session: {wire}"
    for m in ("tools/list", "tools/call", "prompts/get", "resources/read"):
        assert m in methods, f"{m} never went over the wire: {wire}"


def asking_plan(asks: list) -> dict:
    """A plan of tools that ask the client for input (answered by the client's callbacks,
    sampling with `Hi MARKER`)."""
    return {"tools": [], "prompts": [], "resources": [], "sampled": f"Hi {MARKER}", "asks": asks}


def answered(report: dict) -> dict:
    """The text of each call of a report that did not fail."""
    return {name: c["text"] for name, c in report["called"].items() if not c["isError"]}


def run_client(argv: list[str], what: str, plan: dict = PLAN) -> dict:
    done = subprocess.run(
        [*argv, json.dumps(plan)], capture_output=True, text=True, timeout=CLIENT_DEADLINE_S,
        env={**os.environ, "MCP_INTEROP_NODE_MODULES": str(NPM_MODULES)},
    )
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the clients


async def python_modern_report(url: str) -> dict:
    """PLAN with mcp 2.3's Client (mode="auto"), as modern_client.mjs reports it."""
    wire: list[dict] = []

    async def on_response(response) -> None:
        method = None
        if response.request.method == "POST":
            method = json.loads(response.request.content).get("method")
        wire.append({"http": response.request.method, "method": method,
                     "status": response.status_code,
                     "session": response.headers.get("mcp-session-id")})

    http = create_mcp_http_client()
    http.event_hooks = {"request": [], "response": [on_response]}
    report: dict = {"wire": wire}
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        report["protocolVersion"] = client.protocol_version
        report["serverName"] = client.server_info.name if client.server_info else None
        report["tools"] = [t.name for t in await all_tools(client)]
        report["prompts"] = [p.name for p in await all_pages(client.list_prompts, "prompts")]
        report["resources"] = [r.uri for r in await all_resources(client)]
        report["called"] = {}
        for name, args in PLAN["tools"]:
            r = await client.call_tool(name, args)
            text = "\n".join(c.text for c in r.content if isinstance(c, TextContent))
            report["called"][name] = {"text": text, "isError": bool(r.is_error)}
        report["prompted"] = {}
        for name, args in PLAN["prompts"]:
            r = await client.get_prompt(name, args)
            report["prompted"][name] = r.messages[0].content.text
        report["read"] = {}
        for uri in PLAN["resources"]:
            (content,) = (await client.read_resource(uri)).contents
            assert isinstance(content, TextResourceContents), content
            report["read"][uri] = content.text
    return report


async def test_python_sdk_2_speaks_the_modern_era(era):
    report = await python_modern_report(era.gateway.url)
    assert report["protocolVersion"] == MODERN
    assert report["serverName"] == "mcp-gateway"
    check_modern_wire(report["wire"])
    check_answers(report)


def test_typescript_client_2_speaks_the_modern_era(era):
    report = run_client([str(NODE), str(TS_CLIENT), era.gateway.url], "modern_client.mjs")
    assert report["protocolVersion"] == MODERN
    assert report["serverName"] == "mcp-gateway"
    check_modern_wire(report["wire"])
    check_answers(report)


def test_a_2025_only_client_reaches_the_modern_backends(era):
    # mcp 1.x knows nothing of server/discover: it opens a session with initialize and
    # must get the same answers, the modern backends included.
    report = run_client([str(V1_PYTHON), str(V1_CLIENT), era.gateway.url], "legacy_client_v1.py")
    assert report["protocolVersion"] == LEGACY
    assert report["serverName"] == "mcp-gateway"
    methods = [w["method"] for w in report["wire"]]
    assert methods[0] == "initialize" and "server/discover" not in methods, report["wire"]
    assert any(w["session"] for w in report["wire"]), "no session for a 2025 client"
    check_answers(report)


def test_the_ts_server_speaks_only_the_modern_era(era):
    # Why the 2025-only client's answers from `ts` above prove the gateway spoke
    # 2026-07-28 to it: asked directly with initialize, the TS server refuses.
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {},
        "clientInfo": {"name": "interop", "version": "0"}}}).encode()
    request = urllib.request.Request(era.ts.url, data=body, method="POST", headers={
        "content-type": "application/json", "accept": "application/json, text/event-stream"})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            status, answer = r.status, json.load(r)
    except urllib.error.HTTPError as e:
        status, answer = e.code, json.load(e)
    assert "error" in answer and "result" not in answer, (status, answer)
    assert answer["error"]["code"] == -32022, answer


async def test_listen_relays_a_modern_backends_change(era):
    # subscriptions/listen on the gateway: it listens upstream on the modern backends
    # and relays their change notifications to the client's stream. (A legacy
    # backend's list_changed, sent on its 2025 GET stream, is not bridged to listen
    # yet: test_python_sdk.py checks it in the 2025 era.)
    async with Client(era.gateway.url) as client:
        assert client.protocol_version == MODERN
        async with client.listen(tools_list_changed=True) as sub:
            assert sub.honored.tools_list_changed
            trigger = await client.call_tool("modern__test_trigger_tool_change", {})
            assert not trigger.is_error, trigger
            # The mock counts the listen streams it told: the gateway's own.
            assert "announced to 1 listen stream" in trigger.content[0].text, trigger
            with anyio.fail_after(EVENT_DEADLINE_S):
                event = await anext(aiter(sub))
    assert isinstance(event, ToolsListChanged), event


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_modern_only_backend_forced_to_2025_fails_as_a_backend(era, tmp_path, mode):
    # protocol = "2025" on a server that speaks only 2026-07-28 (a configuration
    # mistake): the key is honoured (the gateway opens 2025 sessions and is refused),
    # and the refusal is the backend's failure, not the client's protocol version.
    if era.protocols != "auto":
        pytest.skip("one gateway of its own: once is enough")
    gw = era.group.add(start_gateway_config(
        [{"name": "ts", "url": era.ts.url, "prefix": True, "protocol": "2025"}],
        tmp_path, name=f"gateway-ts-2025-{mode}"))
    async with Client(gw.url, mode=mode) as client:
        assert await all_tools(client) == []  # left out of the merged list
        with pytest.raises(MCPError) as refused:
            await client.call_tool("ts__greet", {"name": MARKER})
    error = refused.value.error
    assert error.code == BACKEND_UNAVAILABLE, error
    assert (error.data or {}).get("backend") == "ts", error


async def test_input_required_results_of_a_modern_backend_reach_the_client(era):
    # Multi round-trip requests: the modern backend answers input_required, the SDK
    # asks its callbacks and retries with inputResponses (and the backend's opaque
    # requestState) through the gateway, which routes the retry back to it.
    asked: list[str] = []

    async def on_elicit(context, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={k: f"ada-{k}" for k in params.requested_schema["properties"]})

    async def on_sample(context, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=MARKER), model="m")

    async def on_roots(context) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work/modern", name="modern")])

    async with Client(era.gateway.url, elicitation_callback=on_elicit, sampling_callback=on_sample,
                      list_roots_callback=on_roots) as client:
        assert client.protocol_version == MODERN

        async def text(tool: str) -> str:
            r = await client.call_tool(f"modern__{tool}", {})
            assert not r.is_error, (tool, r)
            return "\n".join(c.text for c in r.content if isinstance(c, TextContent))

        assert await text("test_input_required_result_elicitation") == "Hello, ada-name!"
        assert await text("test_input_required_result_multi_round") == (
            "Multi-round complete for ada-name who likes ada-color")
        assert await text("test_input_required_result_sampling") == f"Sampling result: {MARKER}"
        assert await text("test_input_required_result_list_roots") == "Found 1 root(s)"
        r = await client.call_tool("ts__confirm_twice", {})
        assert not r.is_error, r
        assert r.content[0].text == f"name=ada-name; sampled={MARKER}", r
    assert asked[:3] == ["What is your name?", "Step 1: What is your name?",
                         "Step 2: What is your favorite color?"], asked


async def test_a_legacy_backends_requests_to_the_client_are_bridged(era):
    # The 2025 backend asks by server-to-client requests; the modern SDK only knows
    # input-required results: the gateway holds the backend's call, hands the SDK its
    # requests as inputRequests, and answers them with the SDK's retry.
    asked: list[str] = []

    async def on_elicit(context, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": "Ada", "username": "ada"})

    async def on_sample(context, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"Hi {MARKER}"),
                                   model="m")

    async def on_roots(context) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work/bridged", name="bridged")])

    async with Client(era.gateway.url, elicitation_callback=on_elicit, sampling_callback=on_sample,
                      list_roots_callback=on_roots) as client:
        assert client.protocol_version == MODERN

        async def text(tool: str, args: dict) -> str:
            r = await client.call_tool(f"legacy__{tool}", args)
            assert not r.is_error, (tool, r)
            return "\n".join(c.text for c in r.content if isinstance(c, TextContent))

        elicited = await text("test_elicitation", {"message": "Who are you?"})
        assert "action=accept" in elicited and "ada" in elicited, elicited
        sampled = await text("test_sampling", {"prompt": "Say hi"})
        assert MARKER in sampled, sampled
        assert "file:///work/bridged" in await text("list_roots", {})
        # Two rounds: a name by elicitation, then a sampling that uses it.
        assert await text("confirm_twice", {}) == f"name=Ada; sampled=Hi {MARKER}"
        # The same through a server written with the TypeScript SDK 1.x.
        r = await client.call_tool("ts1__ask_twice", {})
        assert not r.is_error, r
        assert r.content[0].text == f"name=Ada; sampled=Hi {MARKER}", r
    assert asked == ["Who are you?", "Say hi", "Your name?", "Greet Ada",
                     "Your name, please?", "Greet Ada"], asked


def test_a_2025_client_answers_input_requests_of_both_eras(era):
    # The modern backends (the mock and the TypeScript SDK's server) answer
    # input_required; mcp 1.x knows only server-to-client requests. The gateway asks
    # them on the call's stream, retries with the answers, and the client sees one call
    # with one result, two rounds or not. The legacy backend's requests reach it as
    # they are.
    plan = asking_plan([
        ["modern__test_input_required_result_elicitation", {}],
        ["modern__test_input_required_result_sampling", {}],
        ["modern__test_input_required_result_list_roots", {}],
        ["modern__test_input_required_result_multi_round", {}],
        ["ts__confirm_twice", {}],
        # The same era on both sides: the 2025 backends' requests relayed as they are.
        ["legacy__test_elicitation", {"message": "Who are you?"}],
        ["legacy__test_sampling", {"prompt": "Say hi"}],
        ["legacy__confirm_twice", {}],
        ["ts1__ask_name", {}],
        ["ts1__ask_llm", {}],
        ["ts1__ask_twice", {}],
    ])
    report = run_client([str(V1_PYTHON), str(V1_CLIENT), era.gateway.url], "legacy_client_v1.py", plan)
    assert report["protocolVersion"] == LEGACY
    texts = answered(report)
    assert "action=accept" in texts.pop("legacy__test_elicitation", ""), report["called"]
    assert MARKER in texts.pop("legacy__test_sampling", ""), report["called"]
    assert texts == {
        "modern__test_input_required_result_elicitation": "Hello, ada-name!",
        "modern__test_input_required_result_sampling": f"Sampling result: Hi {MARKER}",
        "modern__test_input_required_result_list_roots": "Found 1 root(s)",
        "modern__test_input_required_result_multi_round":
            "Multi-round complete for ada-name who likes ada-color",
        "ts__confirm_twice": f"name=ada-name; sampled=Hi {MARKER}",
        "legacy__confirm_twice": f"name=ada-name; sampled=Hi {MARKER}",
        "ts1__ask_name": "Hello, ada-name!",
        "ts1__ask_llm": f"The model says: Hi {MARKER}",
        "ts1__ask_twice": f"name=ada-name; sampled=Hi {MARKER}",
    }, report["called"]
    assert report["asked"] == [
        "What is your name?", "What is the capital of France?",
        "Step 1: What is your name?", "Step 2: What is your favorite color?",
        "Your name?", "Greet ada-name",
        "Who are you?", "Say hi", "Your name?", "Greet ada-name",
        "Who are you?", "Say something", "Your name, please?", "Greet ada-name",
    ], report["asked"]


def test_the_typescript_client_2_answers_input_requests_of_both_eras(era):
    # @modelcontextprotocol/client 2.4 speaks 2026-07-28: the modern backends' input
    # requests reach it as they are, the legacy backend's are bridged (held calls).
    plan = asking_plan([
        ["modern__test_input_required_result_multi_round", {}],
        ["ts__confirm_twice", {}],
        ["legacy__test_elicitation", {"message": "Who are you?"}],
        ["legacy__confirm_twice", {}],
        ["ts1__ask_name", {}],
        ["ts1__ask_llm", {}],
        ["ts1__ask_twice", {}],
    ])
    report = run_client([str(NODE), str(TS_CLIENT), era.gateway.url], "modern_client.mjs", plan)
    assert report["protocolVersion"] == MODERN
    texts = answered(report)
    assert texts.keys() == {name for name, _ in plan["asks"]}, report["called"]
    assert texts["modern__test_input_required_result_multi_round"] == (
        "Multi-round complete for ada-name who likes ada-color")
    assert texts["ts__confirm_twice"] == f"name=ada-name; sampled=Hi {MARKER}"
    assert "action=accept" in texts["legacy__test_elicitation"], texts
    assert texts["legacy__confirm_twice"] == f"name=ada-name; sampled=Hi {MARKER}", texts
    # The TypeScript SDK 1.x server's requests, held by the gateway: SDKs on both sides.
    assert texts["ts1__ask_name"] == "Hello, ada-name!", texts
    assert texts["ts1__ask_llm"] == f"The model says: Hi {MARKER}", texts
    assert texts["ts1__ask_twice"] == f"name=ada-name; sampled=Hi {MARKER}", texts
    assert report["asked"][:4] == ["Step 1: What is your name?", "Step 2: What is your favorite color?",
                                   "Your name?", "Greet ada-name"], report["asked"]


@pytest.mark.parametrize("backend", ["modern", "ts"])
async def test_pass_through_in_the_modern_era(era, backend):
    if era.protocols != "auto":
        pytest.skip("the pass-through route ignores the configured protocol: once is enough")
    url = era.gateway.url.removesuffix("/mcp") + f"/backends/{backend}/mcp"
    async with Client(url) as client:
        assert client.protocol_version == MODERN
        names = {t.name for t in await all_tools(client)}
        tool, args = ("echo", {"text": MARKER}) if backend == "modern" else ("greet", {"name": MARKER})
        assert tool in names, names
        r = await client.call_tool(tool, args)
        assert not r.is_error, r
