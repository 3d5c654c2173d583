"""Small helpers the SDK interop tests share (importable: pytest puts this folder, the
conftest's, on sys.path)."""

from __future__ import annotations

from mcp import Client
from mcp_types import CallToolResult, TextContent


def text_of(result: CallToolResult) -> str:
    texts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert texts, f"no text content in {result!r}"
    return "\n".join(texts)


async def all_tools(client: Client) -> list:
    tools, cursor = [], None
    for _ in range(100):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            return tools
    raise AssertionError("tools/list never ended (100 pages)")
