"""Which client request an upstream's request-scoped message belongs to.

A log line, or a sampling, elicitation or roots request, that an upstream sends while it works on a
request belongs to the client whose request that is -- not to whichever client called last. Each
client request in flight on an upstream is a `Caller`, and the sending task carries it in a context
variable. Over streamable HTTP the upstream sends such messages on the response stream of the request
they belong to, and the SDK's transport reads that stream in a task started from the sender's context:
the context the message arrives with names its caller (`caller_of`). stdio names nothing; there a
message can be placed only while a single client request is in flight on the upstream. A message that
cannot be placed reaches no client (a request is refused): passing it to another client would leak
one client's data to another.

Progress needs none of this: it names its request's progress token, which the SDK session follows.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from simgate.gateway.upstream.origin_protocol import Origin

# Where the upstream reader notes the caller on a message (removed before anything is passed on).
RELATED_META_KEY = "simgate/caller"

_SENDING: contextvars.ContextVar[tuple[Callers, int] | None] = contextvars.ContextVar("simgate_sending", default=None)


@dataclass(frozen=True)
class Placement:
    """Where a message goes: `origin`, or no client; `solicited` when it belongs to some request."""

    origin: Origin | None
    solicited: bool
    reason: str = ""


class Callers:
    """The client requests in flight on one upstream."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._origins: dict[int, Origin] = {}
        self._next = 0

    @contextmanager
    def sending(self, origin: Origin | None) -> Iterator[None]:
        """Send a request on behalf of `origin` (None: of no client) within this block."""
        number = None
        if origin is not None:
            self._next += 1
            number = self._next
            self._origins[number] = origin
        token = _SENDING.set((self, number) if number is not None else None)
        try:
            yield
        finally:
            _SENDING.reset(token)
            if number is not None:
                del self._origins[number]

    def caller_of(self, context: contextvars.Context | None) -> int | None:
        """The caller a message arriving with the sender's `context` was sent for, if it names one of ours."""
        sending = context.get(_SENDING) if context is not None else None
        return sending[1] if sending is not None and sending[0] is self else None

    def place(self, meta: Mapping[str, Any] | None, *, unmarked_is_unsolicited: bool) -> Placement:
        """Place a message whose `_meta` may carry `RELATED_META_KEY`. An unmarked message is one that
        came on no request's stream: with `unmarked_is_unsolicited` (a log line over HTTP) it belongs to
        no request; otherwise it is placed when one client request alone is in flight."""
        marked = meta.get(RELATED_META_KEY) if meta is not None else None
        if isinstance(marked, int):
            origin = self._origins.get(marked)
            return Placement(origin, True, "" if origin is not None else "the request it belongs to has ended")
        if unmarked_is_unsolicited or not self._origins:
            return Placement(None, False, "no client request is in flight through simgate")
        if len(self._origins) == 1:
            return Placement(next(iter(self._origins.values())), True)
        return Placement(None, True, f"it names no request and {len(self._origins)} client requests are in flight "
                                     f"on server {self._name!r}: simgate cannot tell which client it belongs to")


def without_mark(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`_meta` without the caller note; None when nothing else is left."""
    if meta is None:
        return None
    return {key: value for key, value in meta.items() if key != RELATED_META_KEY} or None


def unmarked(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`params` without the caller note, as the client is sent them."""
    if params is None:
        return None
    out = {key: value for key, value in params.items() if key != "_meta"}
    meta = params.get("_meta")
    kept = without_mark(meta) if isinstance(meta, Mapping) else meta
    if kept is not None:
        out["_meta"] = kept
    return out
