"""An upstream's tool list made acceptable to MCP clients.

Servers in the wild list tools whose schemas strict clients reject: zod-to-json-schema output with no
root `type` (`{"$schema": "...draft-07..."}` alone), no `inputSchema` at all, an `outputSchema` whose
root is not an object. The TypeScript clients shrug; the Python SDK refuses the whole `tools/list`, so
one such tool would make the server unusable behind the gateway. The list is therefore read raw and
each definition repaired as little as possible: an input schema with no root type gets `"type":
"object"` (arguments always are one, so no valid call is refused), and an output schema the protocol
cannot carry is dropped (the tool then answers as an unstructured one).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("simgate.upstream")


def usable_tools(server: str, tools: Any) -> list[dict[str, Any]]:
    """The well-formed tools of a raw `tools` field, each with schemas clients accept."""
    if not isinstance(tools, list):
        return []
    usable = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            logger.warning("upstream %s: a listed tool without a name is left out: %.200r", server, tool)
            continue
        usable.append(usable_tool(server, tool))
    return usable


def usable_tool(server: str, tool: dict[str, Any]) -> dict[str, Any]:
    fixed = dict(tool)
    schema = tool.get("inputSchema")
    if not isinstance(schema, dict):
        fixed["inputSchema"] = {"type": "object"}
    elif "type" not in schema:
        fixed["inputSchema"] = {**schema, "type": "object"}
    output = tool.get("outputSchema")
    if "outputSchema" in tool and (output is None or not _object_root(output)):
        del fixed["outputSchema"]
        if output is not None:
            logger.warning("upstream %s: tool %r: its outputSchema is not an object schema; served without it",
                           server, tool["name"])
    elif isinstance(output, dict) and "type" not in output:
        fixed["outputSchema"] = {**output, "type": "object"}
    return fixed


def _object_root(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type", "object") == "object"
