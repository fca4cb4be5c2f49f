"""Answer a `tools/call` POST with one JSON body instead of an SSE stream, when nothing but the result
can come back for it.

The SDK's session manager chooses JSON or SSE once, for every request (`json_response`). An SSE
response costs about as much CPU again as the rest of a replayed call (a response task, a ping task,
event framing), so the gateway decides per request: JSON when the request is a `tools/call` without
a progress token, from a handshake-era session whose client declared neither sampling, elicitation
nor roots -- so no progress, no server-to-client request and (see `RequestOrigin.notify`) no
request-scoped notification can belong to it. Everything else keeps SSE.

The decision reaches the SDK's transport through `PerRequestJson`, given to the session manager as
its `json_response`: the transport reads that flag, in the request's own task, where a context
variable holds this request's decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from starlette.types import Message, Receive, Scope

STATE_KEY = "simgate_json_response"
_PEEK_LIMIT = 64 * 1024  # larger bodies are passed on untouched (and answered over SSE)
_json_response: ContextVar[bool] = ContextVar("simgate_json_response", default=False)


class PerRequestJson:
    """A `json_response` flag whose truth is the current request's decision."""

    def __bool__(self) -> bool:
        return _json_response.get()


async def peek_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The request body when it is small and complete (else None), and a `receive` that replays what
    was read before going on with the original."""
    taken: list[Message] = []
    size = 0
    complete = False
    while True:
        message = await receive()
        taken.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = True
            break
        if size > _PEEK_LIMIT:
            break

    async def replay() -> Message:
        return taken.pop(0) if taken else await receive()

    body = b"".join(m.get("body", b"") for m in taken if m["type"] == "http.request") if complete else None
    return body, replay


def eligible(body: bytes, client_capabilities: Callable[[], Any]) -> bool:
    """A `tools/call` without a progress token, from a client that takes no server-to-client requests."""
    if b'"tools/call"' not in body:  # most other POSTs are told apart without parsing them
        return False
    try:
        message = json.loads(body)
    except ValueError:
        return False  # the SDK answers it (-32700) as usual
    if not isinstance(message, dict) or message.get("method") != "tools/call" or "id" not in message:
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    if isinstance(meta, Mapping) and meta.get("progressToken") is not None:
        return False
    caps = client_capabilities()
    return caps is not None and all(getattr(caps, name, None) is None for name in ("sampling", "elicitation", "roots"))


@contextmanager
def answering_with_json(scope: Scope) -> Iterator[None]:
    """JSON for the request handled inside (its task, its scope), and for nothing after it."""
    token = _json_response.set(True)
    scope.setdefault("state", {})[STATE_KEY] = True
    try:
        yield
    finally:
        _json_response.reset(token)


def answered_with_json(scope: Mapping[str, Any] | None) -> bool:
    state = scope.get("state") if scope is not None else None
    return bool(isinstance(state, dict) and state.get(STATE_KEY))
