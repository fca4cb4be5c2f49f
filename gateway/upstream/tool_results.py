"""An upstream's tool results made acceptable to MCP clients.

MCP carries `structuredContent` only as an object. Servers whose tool declares an array (or scalar) output
schema answer with an array there; TypeScript clients pass it along, but the Python SDK refuses the
whole result, so the gateway could not answer the call at all. Such a tool is already listed without its
output schema (see `tool_list`), so its results are served as an unstructured tool's are: the value
leaves `structuredContent` and, when the server sent no content of its own, becomes its text (the form
MCP asks servers to send structured results in for older clients).
"""

from __future__ import annotations

import json
import logging
from typing import Any

logger = logging.getLogger("simgate.upstream")


def usable_result(server: str, tool: object, result: dict[str, Any]) -> dict[str, Any]:
    """`result` as it is, or with a `structuredContent` that is not an object moved into its text."""
    if "structuredContent" not in result or isinstance(result["structuredContent"], dict):
        return result
    structured = result["structuredContent"]
    fixed = {key: value for key, value in result.items() if key != "structuredContent"}
    if structured is not None and not fixed.get("content"):
        fixed["content"] = [{"type": "text", "text": json.dumps(structured, ensure_ascii=False)}]
    logger.debug("upstream %s: tool %r answered structuredContent that is not an object; served as text",
                 server, tool)
    return fixed
