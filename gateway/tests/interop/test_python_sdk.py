"""The official MCP Python SDK (mcp 2.x) as a client of the gateway.

Three mcp-mock backends (alpha, beta, gamma) sit behind one gateway with prefixed
names; every test talks to the gateway's /mcp over Streamable HTTP with
`mcp.Client`, exactly as an application would.

The SDK's default (mode="auto") probes `server/discover` and, since the gateway
answers it, speaks the stateless 2026-07-28 era. The tests of 2025-era features the
gateway relays from its (legacy) backends, server-to-client requests (elicitation,
sampling, roots), `logging/setLevel` and list_changed on the GET stream, pin
mode="legacy" (LEGACY_ERA): in the modern era those need the gateway to bridge them to
input-required results and `subscriptions/listen`, which it does not do yet. The rest
stay on auto. test_modern_era.py covers the modern era across kinds of backend.

Run: .tools/venv/bin/python -m pytest gateway/tests/interop/test_python_sdk.py
"""

from __future__ import annotations

import json
import uuid

import anyio
import pytest
from mcp import Client, MCPError
from mcp_types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    LoggingMessageNotificationParams,
    Root,
    TextContent,
    TextResourceContents,
    ToolListChangedNotification,
)

from mcp_helpers import all_pages, all_resources, all_tools, recording_sampler, text_of

pytestmark = pytest.mark.anyio

BACKENDS = ("alpha", "beta", "gamma")
NOTIFICATION_DEADLINE_S = 10
# The initialize handshake (2025-11-25): see the module docstring for who needs it.
LEGACY_ERA = "legacy"


async def test_initialize(stack):
    async with Client(stack.url) as client:
        # The SDK probes server/discover first (mode="auto"); the gateway answers it,
        # so the SDK adopts the stateless era rather than falling back to initialize.
        assert client.protocol_version == "2026-07-28"
        assert client.server_info is not None and client.server_info.name == "mcp-gateway"
        caps = client.server_capabilities
        assert caps.tools is not None
        assert caps.prompts is not None
        assert caps.resources is not None


async def test_tools_are_merged_and_prefixed(stack):
    # What one backend offers, asked directly…
    async with Client(stack.mocks["alpha"].url) as direct:
        backend_tools = {t.name for t in await all_tools(direct)}
    assert {"echo", "whoami", "test_sampling", "test_elicitation"} <= backend_tools

    # …appears once per backend, prefixed, through the gateway; nothing else does.
    async with Client(stack.url) as client:
        names = [t.name for t in await all_tools(client)]
    assert len(names) == len(set(names)), f"duplicate tool names: {names}"
    for b in BACKENDS:
        assert f"{b}__echo" in names
    expected = {f"{b}__{t}" for b in BACKENDS for t in backend_tools}
    assert set(names) == expected
    assert "echo" not in names


async def test_call_a_tool_of_each_backend(stack):
    async with Client(stack.url) as client:
        for b in BACKENDS:
            who = await client.call_tool(f"{b}__whoami", {})
            assert not who.is_error, who
            assert json.loads(text_of(who))["server"] == b

            marker = f"hello from {b} {uuid.uuid4()}"
            echoed = await client.call_tool(f"{b}__echo", {"text": marker})
            assert not echoed.is_error, echoed
            assert text_of(echoed) == marker


async def test_elicitation_is_relayed_to_the_client(stack):
    seen: list[ElicitRequestParams] = []

    async def on_elicit(context, params: ElicitRequestParams) -> ElicitResult:
        seen.append(params)
        return ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    message = f"Who are you? {uuid.uuid4()}"
    async with Client(stack.url, elicitation_callback=on_elicit, mode=LEGACY_ERA) as client:
        result = await client.call_tool("alpha__test_elicitation", {"message": message})

    assert len(seen) == 1, f"elicitation callback ran {len(seen)} times"
    assert seen[0].message == message
    assert "username" in seen[0].requested_schema["properties"]
    assert not result.is_error, result
    text = text_of(result)
    assert "action=accept" in text
    assert "ada@example.com" in text and "ada" in text


async def test_sampling_is_relayed_to_the_client(stack):
    answer = f"sampled answer {uuid.uuid4()}"
    seen, on_sample = recording_sampler(answer)

    prompt = f"What is 2+2? {uuid.uuid4()}"
    async with Client(stack.url, sampling_callback=on_sample, mode=LEGACY_ERA) as client:
        result = await client.call_tool("beta__test_sampling", {"prompt": prompt})

    assert len(seen) == 1, f"sampling callback ran {len(seen)} times"
    first = seen[0].messages[0].content
    assert isinstance(first, TextContent) and first.text == prompt
    assert not result.is_error, result
    assert text_of(result) == f"LLM response: {answer}"


async def test_concurrent_sampling_answers_find_their_backend(stack):
    # Nine sampling requests in flight at once from three backends, which number their
    # own server-to-client requests independently: each answer must reach the backend
    # (and the tool call) that asked, which only works if the gateway rewrites ids.
    in_flight = 0
    max_in_flight = 0
    all_arrived = anyio.Event()

    async def on_sample(context, params: CreateMessageRequestParams) -> CreateMessageResult:
        nonlocal in_flight, max_in_flight
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        if max_in_flight == 9:
            all_arrived.set()
        with anyio.move_on_after(NOTIFICATION_DEADLINE_S):
            await all_arrived.wait()  # hold every answer until all nine requests are out
        in_flight -= 1
        return CreateMessageResult(
            role="assistant",
            content=TextContent(type="text", text=f"answer to {params.messages[0].content.text}"),
            model="interop-test-model",
        )

    results: dict[str, str] = {}
    async with Client(stack.url, sampling_callback=on_sample, mode=LEGACY_ERA) as client:

        async def one(tool: str, prompt: str) -> None:
            results[prompt] = text_of(await client.call_tool(tool, {"prompt": prompt}))

        async with anyio.create_task_group() as tg:
            for b in BACKENDS:
                for i in range(3):
                    tg.start_soon(one, f"{b}__test_sampling", f"{b}-{i}-{uuid.uuid4()}")

    assert max_in_flight == 9, f"only {max_in_flight} sampling requests were in flight together"
    assert len(results) == 9
    for prompt, text in results.items():
        assert text == f"LLM response: answer to {prompt}"


async def test_roots_request_is_relayed(stack):
    async def on_roots(context) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work/interop", name="interop")])

    async with Client(stack.url, list_roots_callback=on_roots, mode=LEGACY_ERA) as client:
        result = await client.call_tool("gamma__list_roots", {})
    assert not result.is_error, result
    assert json.loads(text_of(result))["roots"] == [{"uri": "file:///work/interop", "name": "interop"}]


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # logging: deprecated in 2026-07-28 only
async def test_log_messages_are_relayed(stack):
    logs: list[LoggingMessageNotificationParams] = []
    done = anyio.Event()

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)
        if params.data == "Tool execution completed":
            done.set()

    async with Client(stack.url, logging_callback=on_log, mode=LEGACY_ERA) as client:
        await client.set_logging_level("debug")
        result = await client.call_tool("alpha__test_tool_with_logging", {})
        assert not result.is_error, result
        with anyio.fail_after(NOTIFICATION_DEADLINE_S):
            await done.wait()
    from_tool = [(l.logger, l.data) for l in logs if l.logger == "alpha"]
    assert ("alpha", "Tool execution started") in from_tool
    assert ("alpha", "Tool execution completed") in from_tool


async def test_list_changed_reaches_the_client_stream(stack):
    # The backend sends notifications/tools/list_changed on its standalone stream; the
    # gateway must relay it to the client's GET stream.
    changed = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    async with Client(stack.url, message_handler=on_message, mode=LEGACY_ERA) as client:
        result = await client.call_tool("beta__notify_list_changed", {})
        assert not result.is_error, result
        with anyio.fail_after(NOTIFICATION_DEADLINE_S):
            await changed.wait()


async def test_errors_are_reported(stack):
    async with Client(stack.url) as client:
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("nosuchbackend__echo", {"text": "x"})
        assert unknown.value.error.code == -32602
        failing = await client.call_tool("alpha__test_error_handling", {})
        assert failing.is_error
        assert text_of(failing) == "This tool intentionally returns an error for testing"


async def test_pass_through_route(stack):
    # /backends/{name}/mcp: one backend, relayed as it answers, names as it wrote them.
    url = stack.url.removesuffix("/mcp") + "/backends/beta/mcp"

    async def on_sample(context, params: CreateMessageRequestParams) -> CreateMessageResult:
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text="through"), model="m"
        )

    async with Client(url, sampling_callback=on_sample) as client:
        assert client.server_info is not None and client.server_info.name == "beta"
        names = {t.name for t in await all_tools(client)}
        assert "echo" in names and "beta__echo" not in names
        who = await client.call_tool("whoami", {})
        assert json.loads(text_of(who))["server"] == "beta"
        sampled = await client.call_tool("test_sampling", {"prompt": "p"})
        assert text_of(sampled) == "LLM response: through"


async def test_sampling_and_elicitation_without_capability_are_refused_by_the_backend(stack):
    # No callbacks: the SDK declares neither capability, the gateway must pass that
    # through, and the backend must refuse (rather than the call hanging).
    async with Client(stack.url) as client:
        sampled = await client.call_tool("gamma__test_sampling", {"prompt": "x"})
        elicited = await client.call_tool("gamma__test_elicitation", {"message": "x"})
    assert sampled.is_error and "sampling" in text_of(sampled)
    assert elicited.is_error and "elicitation" in text_of(elicited)


async def test_progress_notifications_are_relayed(stack):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async with Client(stack.url) as client:
        result = await client.call_tool(
            "gamma__test_tool_with_progress", {}, progress_callback=on_progress
        )
    assert not result.is_error, result
    assert "progress token" in text_of(result)
    assert progress, "no progress notification reached the client"
    assert progress[-1][0] == 100


async def test_read_resources(stack):
    async with Client(stack.url) as client:
        uris = [r.uri for r in await all_resources(client)]
        assert len(uris) == len(set(uris)), f"duplicate resource URIs: {uris}"
        # Each backend's own info resource keeps its URI and is routed to its backend.
        for b in BACKENDS:
            uri = f"mock://{b}/info"
            assert uri in uris
            read = await client.read_resource(uri)
            (content,) = read.contents
            assert isinstance(content, TextResourceContents)
            assert json.loads(content.text)["server"] == b

        # The URI all three publish: the first backend keeps it, the others get the
        # documented collision form mcpgw://{backend}/{uri}.
        assert "test://static-text" in uris
        assert "mcpgw://beta/test://static-text" in uris
        assert "mcpgw://gamma/test://static-text" in uris
        for uri in ("test://static-text", "mcpgw://gamma/test://static-text"):
            read = await client.read_resource(uri)
            (content,) = read.contents
            assert isinstance(content, TextResourceContents)
            assert content.text == "This is the content of the static text resource."


async def test_get_prompts(stack):
    async with Client(stack.url) as client:
        names = [p.name for p in await all_pages(client.list_prompts, "prompts")]
        for b in BACKENDS:
            assert f"{b}__test_simple_prompt" in names
        assert "test_simple_prompt" not in names

        simple = await client.get_prompt("alpha__test_simple_prompt")
        assert simple.messages[0].role == "user"
        assert simple.messages[0].content.text == "This is a simple prompt for testing."

        arg1, arg2 = f"one-{uuid.uuid4()}", "two"
        with_args = await client.get_prompt(
            "beta__test_prompt_with_arguments", {"arg1": arg1, "arg2": arg2}
        )
        assert with_args.messages[0].content.text == (
            f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        )


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # ping: deprecated in 2026-07-28 only
async def test_legacy_handshake(stack):
    # mode="legacy": straight to initialize, no server/discover probe.
    async with Client(stack.url, mode=LEGACY_ERA) as client:
        assert client.protocol_version == "2025-11-25"
        assert client.server_info is not None and client.server_info.name == "mcp-gateway"
        caps = client.server_capabilities
        assert caps.tools is not None and caps.prompts is not None and caps.resources is not None
        await client.send_ping()  # raises MCPError unless the gateway answers it
        who = await client.call_tool("beta__whoami", {})
        assert json.loads(text_of(who))["server"] == "beta"
