"""An upstream's tool results made acceptable to MCP clients, or refused with a precise error.

MCP carries `structuredContent` only as an object. Servers whose tool declares an array (or scalar) output
schema answer with an array there; TypeScript clients pass it along, but the Python SDK refuses the
whole result, so the gateway could not answer the call at all. Such a tool is already listed without its
output schema (see `tool_list`), so its results are served as an unstructured tool's are: the value
leaves `structuredContent` and, when the server sent no content of its own, becomes its text (the form
MCP asks servers to send structured results in for older clients).

Any other result that is no `CallToolResult` (no `content`, a text block without `text`, ...) is a bug of
the server that no client would take: it becomes `InvalidUpstreamResult`, naming the server, the tool and
the first wrong field, instead of the SDK's bare "Handler returned an invalid result" (validation keeps
the result's strings as they are: no copy, however large).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import mcp_types as types
from pydantic import ValidationError

from simgate.gateway.errors import InvalidUpstreamResult

logger = logging.getLogger("simgate.upstream")


def usable_result(server: str, tool: object, result: dict[str, Any]) -> dict[str, Any]:
    """`result` as it is, or with a `structuredContent` that is not an object moved into its text."""
    if "structuredContent" not in result or isinstance(result["structuredContent"], dict):
        return _checked(server, tool, result)
    structured = result["structuredContent"]
    fixed = {key: value for key, value in result.items() if key != "structuredContent"}
    if structured is not None and not fixed.get("content"):
        fixed["content"] = [{"type": "text", "text": json.dumps(structured, ensure_ascii=False)}]
    logger.debug("upstream %s: tool %r answered structuredContent that is not an object; served as text",
                 server, tool)
    return _checked(server, tool, fixed)


def _checked(server: str, tool: object, result: dict[str, Any]) -> dict[str, Any]:
    if result.get("resultType", "complete") != "complete":  # a 2026-era interim answer: not ours to judge
        return result
    try:
        types.CallToolResult.model_validate(result)
    except ValidationError as exc:
        first = exc.errors()[0]  # its location and message only: pydantic's input echo would repeat the body
        where = ".".join(str(part) for part in first["loc"]) or "the result"
        raise InvalidUpstreamResult(
            f"upstream server {server!r} answered tool {tool!r} with an invalid result ({where}: {first['msg']})",
            data={"server": server, "tool": tool, "field": where}) from None
    return result
