"""The gateway's tool catalogue as the pipeline sees it: servers, their tools (with the names an agent
calls them by) and a category per server (from onboarding's report, else the keyword classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, Field

from simgate.gateway.naming import exposed_names
from simgate.runner.errors import GatewayUnreachable
from simgate.runner.mcp_tools import list_all_tools
from simgate.runner.onboard.categories import keyword_category
from simgate.runner.onboard.reports import load_reports


class CatalogueTool(BaseModel):
    name: str = Field(description="the name on the gateway's /mcp endpoint ({server}__{tool})")
    tool: str = Field(description="the server's own name for it")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)


class CatalogueServer(BaseModel):
    name: str
    description: str = ""
    category: str
    secondary: list[str] = Field(default_factory=list)
    tools: list[CatalogueTool]


class Catalogue(BaseModel):
    servers: list[CatalogueServer]

    def server(self, name: str) -> CatalogueServer:
        return next(server for server in self.servers if server.name == name)

    def tool_names(self) -> set[str]:
        return {tool.name for server in self.servers for tool in server.tools}


def _base(gateway: str) -> str:
    return gateway.removesuffix("/").removesuffix("/mcp")


async def fetch_catalogue(gateway: str, *, onboard_report: Path | None = None, servers: list[str] | None = None,
                          headers: dict[str, str] | None = None) -> Catalogue:
    """Every ready server's tools, through its own endpoint (original names and instructions)."""
    base = _base(gateway)
    try:
        async with httpx.AsyncClient(timeout=30, trust_env=False, headers=headers) as http:
            listing = (await http.get(f"{base}/admin/servers")).raise_for_status().json()["servers"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise GatewayUnreachable(f"cannot list the servers of the gateway at {base}: {exc}") from None
    labels = {report.name: report for report in load_reports(onboard_report.parent)} if onboard_report else {}
    found: list[CatalogueServer] = []
    for status in listing:
        name = status["name"]
        if status.get("state") != "ready" or (servers is not None and name not in servers):
            continue
        tools, instructions = await _server_tools(f"{base}/servers/{name}/mcp", headers or {})
        exposed = {original: shown for shown, original in exposed_names(name, [tool.name for tool in tools]).items()}
        entries = [CatalogueTool(name=exposed[tool.name], tool=tool.name, description=tool.description or "",
                                 input_schema=tool.input_schema or {}) for tool in tools]
        if not entries:
            continue
        report = labels.get(name)
        description = (report.description if report and report.description else None) or instructions or ""
        category = report.category if report and report.category else keyword_category(
            name, description, [{"name": t.tool, "description": t.description} for t in entries])
        found.append(CatalogueServer(name=name, description=description, category=category.primary,
                                     secondary=category.secondary, tools=entries))
    if not found:
        raise GatewayUnreachable(f"the gateway at {base} has no ready server with tools")
    return Catalogue(servers=found)


async def _server_tools(url: str, headers: dict[str, str]) -> tuple[list[Any], str]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120), headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                result = await session.initialize()
                return await list_all_tools(session), result.instructions or ""
