"""Names of tools and prompts in the aggregated `/mcp` endpoint: `{server}__{tool}`.

Exposed names are valid OpenAI function names (at most 64 characters of `[A-Za-z0-9_-]`) and
depend only on the server's and the tool's own names, so they stay stable when other servers are
added or removed. A server prefix never contains `__` and never ends in `_`, so the first `__`
of an exposed name ends the prefix: two servers can never produce the same name.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 64
SEPARATOR = "__"
_MAX_PREFIX = 24
_VALID = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX_OK = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9-]+")


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def server_prefix(server: str) -> str:
    """The server's part of exposed names; the name itself when it already fits the rules."""
    if len(server) <= _MAX_PREFIX and _PREFIX_OK.match(server):
        return server
    cleaned = _INVALID_RUN.sub("-", server).strip("-") or "server"
    return f"{cleaned[:_MAX_PREFIX - 9]}-{_digest(server, 8)}"


def exposed_name(server: str, tool: str, *, digest_length: int = 8) -> str:
    """`{prefix}__{tool}`, or with a readable stem and a stable hash when the tool name does not fit."""
    prefix = server_prefix(server) + SEPARATOR
    plain = prefix + tool
    if len(plain) <= MAX_NAME and _VALID.match(tool) and digest_length == 8:
        return plain
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", tool)
    room = MAX_NAME - len(prefix) - digest_length - 1
    return f"{prefix}{stem[:room]}_{_digest(tool, digest_length)}"


def exposed_names(server: str, tools: list[str]) -> dict[str, str]:
    """Exposed name -> original name for one server's tools, guaranteed free of clashes.

    Only a tool name that already looks like `stem_<8 hex>` can meet a hashed one; such a pair gets
    a longer digest, which is still a pure function of the two names.
    """
    result: dict[str, str] = {}
    for tool in tools:
        name = exposed_name(server, tool)
        digest_length = 8
        while name in result and result[name] != tool:
            digest_length += 8
            name = exposed_name(server, tool, digest_length=digest_length)
        result[name] = tool
    return result
