"""Servers published with loose tool lists (no root `type` in an input schema, no input schema, an output
schema that is not an object) work behind the gateway as they do for a lax client: every tool listed with
a schema clients accept, callable live and replayable from its recording."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import fixture_server, mcp_session, provenance, running_gateway
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio


def _text(result: object) -> str:
    return "".join(getattr(block, "text", "") for block in getattr(result, "content", []))


async def test_a_loose_tool_list_is_served_repaired_and_its_tools_answer(tmp_path: Path) -> None:
    config = {"gateway": {"record": "new_episodes"},
              "mcpServers": {"loose": fixture_server("loose_schema_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url()) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == {"loose__search_notes", "loose__bare", "loose__count", "loose__listing",
                                  "loose__broken"}
            assert tools["loose__search_notes"].input_schema == {
                "$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
            assert tools["loose__bare"].input_schema == {"type": "object"}
            assert tools["loose__count"].output_schema == {
                "type": "object", "properties": {"words": {"type": "integer"}}, "required": ["words"]}
            assert tools["loose__listing"].output_schema is None  # an array root cannot be carried: dropped
            found = await session.call_tool("loose__search_notes", {"query": "A"})
            assert _text(found) == 'search_notes: {"query": "A"}' and not found.is_error
            assert _text(await session.call_tool("loose__bare", {})) == "bare: {}"
            counted = await session.call_tool("loose__count", {"text": "one two three"})
            assert counted.structured_content == {"words": 3}
            listed = await session.call_tool("loose__listing", {})  # its structuredContent is an array
            assert _text(listed) == '["a", "b"]' and listed.structured_content is None and not listed.is_error
            with pytest.raises(MCPError) as broken:
                await session.call_tool("loose__broken", {})
            assert broken.value.error.code == -32009
            assert broken.value.error.message == ("upstream server 'loose' answered tool 'broken' with an invalid "
                                                  "result (content.0.TextContent.text: Field required)")
        async with mcp_session(gateway.mcp_url(), headers={"X-Simgate-Mode": "replay"}) as session:
            replayed = await session.call_tool("loose__search_notes", {"query": "A"})
            assert _text(replayed) == 'search_notes: {"query": "A"}'
            assert provenance(replayed)["source"] == "cache"
            relisted = await session.call_tool("loose__listing", {})
            assert _text(relisted) == '["a", "b"]' and provenance(relisted)["source"] == "cache"
