"""Why a server never answered on stdio, as its own stderr tells it: read back from its stderr.log so a
startup timeout can say more than "timed out" (the gateway's `last_error`, onboarding's report)."""

from __future__ import annotations

import re
from pathlib import Path

import anyio

from simgate.errors import SimgateError

# A server announcing an HTTP listener (uvicorn, express, FastMCP, the TypeScript SDK's examples): its
# default transport is HTTP, so no stdio handshake will ever come.
_HTTP_LISTENER = re.compile(
    r"\b(?:running|listening|serving|started|starting|available)\b[^\n]{0,40}?(https?://[^\s'\")]+)", re.IGNORECASE)
_TAIL_BYTES = 64 * 1024  # enough for a start's messages; a flood before the handshake is not read whole
_LOOK_EVERY = 0.5  # seconds between looks at stderr.log while a handshake is awaited (its copy thread writes it)


class ServesHttpInstead(SimgateError):
    """A start given up: the server announced an HTTP listener and did not answer on stdio within the grace."""


def http_listener(stderr: str) -> str | None:
    """The URL a server says it listens on, if it says so."""
    found = _HTTP_LISTENER.search(stderr)
    return found.group(1).rstrip(".,;") if found else None


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def written_since(path: Path, offset: int) -> str:
    """What the log got after `offset` (its last 64 KiB at most); all of it when it was rotated since."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            start = offset if offset <= size else 0
            log.seek(max(start, size - _TAIL_BYTES))
            return log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def serves_http_instead(listening: str) -> str:
    return (f"it serves HTTP ({listening}) instead of answering on stdio: give it its stdio option (often "
            "--transport stdio), or serve it by `url`")


async def announced_listener(path: Path, offset: int) -> str:
    """Wait until the log, past `offset`, shows an HTTP listener; its URL. Looks only when the log grew."""
    seen = -1
    while True:
        size = log_size(path)
        if size != seen:
            seen = size
            if (listening := http_listener(written_since(path, offset))) is not None:
                return listening
        await anyio.sleep(_LOOK_EVERY)
