"""An exposure is a set of upstreams served as one MCP server.

`/mcp` exposes every server with `{server}__{name}` tool and prompt names; `/servers/{name}/mcp`
exposes one server with its own names, forwarding its list requests (cursors and all) as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate

from simgate.gateway.errors import Forbidden, UnknownServer, UnknownTool
from simgate.gateway.naming import exposed_names
from simgate.gateway.upstream.connection import Upstream
from simgate.gateway.upstream.origin_protocol import Origin
from simgate.gateway.upstream.pool import UpstreamPool

# What a client may use (from its API key); None: everything.
ServerFilter = Callable[[str], bool] | None
ToolFilter = Callable[[str, str], bool] | None


def _permit(allowed: ServerFilter, server: str) -> None:
    if allowed is not None and not allowed(server):
        raise Forbidden(f"this client's API key may not use server {server!r}", data={"server": server})


class ToolEntry:
    __slots__ = ("definition", "exposed", "server", "tool")

    def __init__(self, exposed: str, server: str, tool: str, definition: dict[str, Any]) -> None:
        self.exposed = exposed
        self.server = server
        self.tool = tool
        self.definition = definition


class Exposure:
    def __init__(self, pool: UpstreamPool, servers: list[str], *, aggregate: bool, gateway_name: str) -> None:
        self.pool = pool
        self.servers = servers
        self.aggregate = aggregate
        self.gateway_name = gateway_name
        self.endpoint = "/mcp" if aggregate else f"/servers/{servers[0]}/mcp"
        self._tool_index: dict[str, ToolEntry] = {}
        self._tool_index_source: tuple[int, ...] = ()
        self._prompt_names: dict[str, tuple[str, str]] = {}
        self._resource_owner: dict[str, str] = {}
        self._templates: list[tuple[UriTemplate, str]] = []

    def upstreams(self) -> list[Upstream]:
        return [self.pool.get(name) for name in self.servers]

    def name_for(self, server: str, names: list[str]) -> dict[str, str]:
        """Exposed name -> original name."""
        return exposed_names(server, names) if self.aggregate else {name: name for name in names}

    # ---------------------------------------------------------------- tools

    def tool_index(self) -> dict[str, ToolEntry]:
        upstreams = self.upstreams()
        source = tuple(id(upstream.tools) for upstream in upstreams)
        if source != self._tool_index_source:  # rebuilt only when some server's tool list changed
            index: dict[str, ToolEntry] = {}
            for upstream in upstreams:
                by_name = {tool.get("name", ""): tool for tool in upstream.tools}
                for exposed, original in self.name_for(upstream.name, list(by_name)).items():
                    index[exposed] = ToolEntry(exposed, upstream.name, original, by_name[original])
            self._tool_index, self._tool_index_source = index, source
        return self._tool_index

    def list_tools(self, allowed: ToolFilter = None) -> dict[str, Any]:
        tools = []
        for entry in self.tool_index().values():
            if allowed is not None and not allowed(entry.server, entry.tool):
                continue
            tools.append(entry.definition if entry.exposed == entry.tool else {**entry.definition, "name": entry.exposed})
        return {"tools": tools}

    def resolve_tool(self, name: str) -> ToolEntry:
        entry = self.tool_index().get(name)
        if entry is None:
            raise UnknownTool(f"unknown tool {name!r}" + ("" if self.aggregate else f" on server {self.servers[0]!r}"),
                              data={"tool": name})
        return entry

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        entry = self.tool_index().get(name)
        return entry.definition.get("inputSchema") if entry is not None else None

    # ---------------------------------------------------------------- forwarding helpers

    def _single(self) -> Upstream | None:
        return None if self.aggregate else self.pool.get(self.servers[0])

    def _capable(self, capability: str) -> list[Upstream]:
        found = []
        for upstream in self.upstreams():
            caps = upstream.initialize_result.capabilities if upstream.initialize_result else None
            if caps is not None and getattr(caps, capability, None) is not None:
                found.append(upstream)
        return found

    async def _all_pages(self, upstream: Upstream, method: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):
            page = await upstream.request(method, {"cursor": cursor} if cursor else None)
            items.extend(page.get(key, []))
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return items

    async def _merged(self, capability: str, method: str, key: str) -> list[tuple[Upstream, dict[str, Any]]]:
        merged: list[tuple[Upstream, dict[str, Any]]] = []
        for upstream in self._capable(capability):
            try:
                merged.extend((upstream, item) for item in await self._all_pages(upstream, method, key))
            except MCPError:
                continue  # one server down must not hide the others' items
        return merged

    # ---------------------------------------------------------------- prompts

    async def list_prompts(self, params: Mapping[str, Any] | None, allowed: ServerFilter = None) -> dict[str, Any]:
        if (single := self._single()) is not None:
            return await single.request("prompts/list", params)
        prompts = []
        names: dict[str, tuple[str, str]] = {}
        for upstream, prompt in await self._merged("prompts", "prompts/list", "prompts"):
            for exposed, original in self.name_for(upstream.name, [prompt.get("name", "")]).items():
                names[exposed] = (upstream.name, original)
                if allowed is None or allowed(upstream.name):
                    prompts.append({**prompt, "name": exposed})
        self._prompt_names = names
        return {"prompts": prompts}

    async def _resolve_prompt(self, name: str) -> tuple[Upstream, str]:
        if (single := self._single()) is not None:
            return single, name
        if name not in self._prompt_names:
            await self.list_prompts(None)
        if name not in self._prompt_names:
            raise MCPError(types.INVALID_PARAMS, f"unknown prompt {name!r}", {"prompt": name})
        server, original = self._prompt_names[name]
        return self.pool.get(server), original

    async def get_prompt(self, params: Mapping[str, Any], origin: Origin, allowed: ServerFilter = None
                         ) -> dict[str, Any]:
        upstream, original = await self._resolve_prompt(params["name"])
        _permit(allowed, upstream.name)
        return await upstream.request("prompts/get", {**params, "name": original}, origin=origin)

    # ---------------------------------------------------------------- resources

    async def list_resources(self, params: Mapping[str, Any] | None, allowed: ServerFilter = None) -> dict[str, Any]:
        if (single := self._single()) is not None:
            return await single.request("resources/list", params)
        resources = []
        for upstream, resource in await self._merged("resources", "resources/list", "resources"):
            self._resource_owner[resource.get("uri", "")] = upstream.name
            if allowed is None or allowed(upstream.name):
                resources.append(resource)
        return {"resources": resources}

    async def list_resource_templates(self, params: Mapping[str, Any] | None, allowed: ServerFilter = None
                                      ) -> dict[str, Any]:
        if (single := self._single()) is not None:
            return await single.request("resources/templates/list", params)
        templates = []
        parsed: list[tuple[UriTemplate, str]] = []
        for upstream, template in await self._merged("resources", "resources/templates/list", "resourceTemplates"):
            if allowed is None or allowed(upstream.name):
                templates.append(template)
            try:
                parsed.append((UriTemplate.parse(template.get("uriTemplate", "")), upstream.name))
            except ValueError:
                continue
        self._templates = parsed
        return {"resourceTemplates": templates}

    async def _owner_of(self, uri: str) -> Upstream:
        if (single := self._single()) is not None:
            return single
        for attempt in range(2):
            if uri in self._resource_owner:
                return self.pool.get(self._resource_owner[uri])
            for template, server in self._templates:
                if template.match(uri) is not None:
                    return self.pool.get(server)
            capable = self._capable("resources")
            if len(capable) == 1:
                return capable[0]
            if attempt == 0:
                await self.list_resources(None)
                await self.list_resource_templates(None)
        raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}: no server lists it or a matching template",
                       {"uri": uri})

    async def resource_request(self, method: str, params: Mapping[str, Any], origin: Origin,
                               allowed: ServerFilter = None) -> dict[str, Any]:
        upstream = await self._owner_of(str(params.get("uri", "")))
        _permit(allowed, upstream.name)
        return await upstream.request(method, params, origin=origin)

    # ---------------------------------------------------------------- completion, logging

    async def complete(self, params: Mapping[str, Any], origin: Origin, allowed: ServerFilter = None) -> dict[str, Any]:
        ref = dict(params.get("ref") or {})
        if ref.get("type") == "ref/prompt":
            upstream, original = await self._resolve_prompt(str(ref.get("name", "")))
            forwarded = {**params, "ref": {**ref, "name": original}}
        else:
            upstream = await self._owner_of(str(ref.get("uri", "")))
            forwarded = dict(params)
        _permit(allowed, upstream.name)
        return await upstream.request("completion/complete", forwarded, origin=origin)

    async def set_logging_level(self, params: Mapping[str, Any], allowed: ServerFilter = None) -> dict[str, Any]:
        # A server's level is shared by all its clients: a key changes only the servers it may use.
        for upstream in self._capable("logging"):
            if allowed is not None and not allowed(upstream.name):
                continue
            try:
                await upstream.request("logging/setLevel", params)
            except MCPError:
                if not self.aggregate:
                    raise
        return {}

    # ---------------------------------------------------------------- what the client is told at connect

    def capabilities(self) -> types.ServerCapabilities:
        if (single := self._single()) is not None and single.initialize_result is not None:
            caps = single.initialize_result.capabilities.model_copy()
            # The gateway keeps tool lists fresh and passes list changes on.
            caps.tools = types.ToolsCapability(list_changed=True) if caps.tools is not None else None
            return caps
        merged: dict[str, Any] = {"tools": types.ToolsCapability(list_changed=True)}
        for capability in ("prompts", "resources", "completions", "logging"):
            present = [getattr(u.initialize_result.capabilities, capability) for u in self._capable(capability)
                       if u.initialize_result is not None]
            if not present:
                continue
            if capability == "prompts":
                merged[capability] = types.PromptsCapability(list_changed=True)
            elif capability == "resources":
                merged[capability] = types.ResourcesCapability(
                    list_changed=True, subscribe=any(getattr(p, "subscribe", False) for p in present))
            else:
                merged[capability] = present[0]
        return types.ServerCapabilities(**merged)

    def server_info(self) -> types.Implementation:
        if (single := self._single()) is not None and single.initialize_result is not None:
            return single.initialize_result.server_info
        return types.Implementation(name=self.gateway_name, version="0.1.0",
                                    description="simgate: one MCP endpoint in front of many servers")

    def instructions(self) -> str | None:
        if (single := self._single()) is not None:
            return single.initialize_result.instructions if single.initialize_result else None
        parts = [f"## {u.name}\n{u.initialize_result.instructions}" for u in self.upstreams()
                 if u.initialize_result is not None and u.initialize_result.instructions]
        return "\n\n".join(parts) or None


def exposures_for(pool: UpstreamPool, gateway_name: str) -> tuple[Exposure, dict[str, Exposure]]:
    aggregate = Exposure(pool, list(pool.upstreams), aggregate=True, gateway_name=gateway_name)
    singles = {name: Exposure(pool, [name], aggregate=False, gateway_name=gateway_name) for name in pool.upstreams}
    return aggregate, singles


__all__ = ["Exposure", "ToolEntry", "UnknownServer", "exposures_for"]
