"""A minimal MCP client of a running gateway, used by the CLI."""

from __future__ import annotations

from typing import Any

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from simgate.gateway.auth.api_keys import auth_headers


async def call_tool(url: str, tool: str, arguments: dict[str, Any], mode: str | None = None) -> dict[str, Any]:
    headers = {**auth_headers(), **({"X-Simgate-Mode": mode} if mode else {})}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                result = await session.call_tool(tool, arguments)
                return result.model_dump(by_alias=True, mode="json", exclude_none=True)
