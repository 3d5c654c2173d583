"""The official Python SDK 1.x (`mcp` 1.x: 2025 revisions only, initialize handshake)
as a client of one MCP URL: run by test_modern_era.py under .tools/venv1/bin/python.

    python legacy_client_v1.py URL PLAN_JSON

PLAN_JSON and the JSON report printed on stdout are modern_client.mjs's (the wire:
each POST's JSON-RPC method and HTTP status, seen by an httpx event hook), plus
PLAN_JSON's optional "asks": tools whose backends ask the client for input (answered
by the callbacks below: elicitation accepts `ada-<field>` for each field, sampling
answers PLAN_JSON's "sampled", roots lists one root), reported as "asked" (each
request's message or prompt, in order) and their texts in "called". Exits 1 (report
on stderr) when a step fails.
"""

from __future__ import annotations

import json
import sys

import anyio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.context import RequestContext
from mcp.types import (
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequestParams,
    ElicitResult,
    ListRootsResult,
    Root,
    TextContent,
)


async def main(url: str, plan: dict) -> dict:
    report: dict = {"wire": []}

    async def on_response(response: httpx.Response) -> None:
        method = None
        if response.request.method == "POST":
            try:
                method = json.loads(response.request.content).get("method")
            except (ValueError, AttributeError):
                pass
        report["wire"].append({"http": response.request.method, "method": method,
                               "status": response.status_code,
                               "session": response.headers.get("mcp-session-id")})

    def factory(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=headers, timeout=timeout, auth=auth,
                                 event_hooks={"response": [on_response]})

    async def all_pages(list_page, field: str) -> list:
        items, cursor = [], None
        for _ in range(100):
            page = await list_page(cursor=cursor)
            items += getattr(page, field)
            cursor = page.nextCursor
            if cursor is None:
                return items
        raise AssertionError(f"the {field} list never ended")

    asked: list[str] = []
    report["asked"] = asked

    async def on_elicit(context: RequestContext, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        fields = (getattr(params, "requestedSchema", None) or {}).get("properties", {})
        return ElicitResult(action="accept", content={k: f"ada-{k}" for k in fields})

    async def on_sample(context: RequestContext, params: CreateMessageRequestParams) -> CreateMessageResult:
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", model="m",
                                   content=TextContent(type="text", text=plan.get("sampled", "hi")))

    async def on_roots(context: RequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri="file:///work/v1", name="v1")])

    def text_of(content) -> str:
        return "\n".join(c.text for c in content if isinstance(c, TextContent))

    try:
        async with streamablehttp_client(url, httpx_client_factory=factory) as (read, write, _):
            async with ClientSession(read, write, sampling_callback=on_sample,
                                     elicitation_callback=on_elicit,
                                     list_roots_callback=on_roots) as session:
                init = await session.initialize()
                report["protocolVersion"] = init.protocolVersion
                report["serverName"] = init.serverInfo.name
                report["tools"] = [t.name for t in await all_pages(session.list_tools, "tools")]
                report["prompts"] = [p.name for p in await all_pages(session.list_prompts, "prompts")]
                report["resources"] = [
                    str(r.uri) for r in await all_pages(session.list_resources, "resources")
                ]
                report["called"] = {}
                for name, args in plan["tools"] + plan.get("asks", []):
                    r = await session.call_tool(name, args)
                    report["called"][name] = {"text": text_of(r.content), "isError": bool(r.isError)}
                report["prompted"] = {}
                for name, args in plan["prompts"]:
                    r = await session.get_prompt(name, args)
                    report["prompted"][name] = r.messages[0].content.text
                report["read"] = {}
                for uri in plan["resources"]:
                    r = await session.read_resource(uri)
                    report["read"][uri] = r.contents[0].text
    except BaseException:
        print(json.dumps(report), file=sys.stderr)
        raise
    return report


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, sys.argv[1], json.loads(sys.argv[2]))))
