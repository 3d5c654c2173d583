"""Small helpers the SDK interop tests share (importable: pytest puts this folder, the
conftest's, on sys.path)."""

from __future__ import annotations

from mcp import Client
from mcp_types import CallToolResult, CreateMessageRequestParams, CreateMessageResult, TextContent


def text_of(result: CallToolResult) -> str:
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert texts, f"no text content in {result!r}"
    return "\n".join(texts)


async def all_pages(list_page, field: str) -> list:
    """Every item of a paginated list: `list_page(cursor=…)` until no next cursor."""
    items, cursor = [], None
    for _ in range(100):
        page = await list_page(cursor=cursor)
        items += getattr(page, field)
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError(f"the {field} list never ended (100 pages)")


async def all_tools(client: Client) -> list:
    return await all_pages(client.list_tools, "tools")


async def all_resources(client: Client) -> list:
    return await all_pages(client.list_resources, "resources")


def recording_sampler(answer: str):
    """A sampling callback that answers `answer` and records what it was asked: (the list
    of requests' params, the callback)."""
    seen: list[CreateMessageRequestParams] = []

    async def on_sample(context, params: CreateMessageRequestParams) -> CreateMessageResult:
        seen.append(params)
        return CreateMessageResult(
            role="assistant", content=TextContent(type="text", text=answer),
            model="interop-test-model", stop_reason="endTurn",
        )

    return seen, on_sample
