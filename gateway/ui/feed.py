"""The live-calls feed: every finished tool call, fanned out to the pages watching (`/ui`).

Bounded everywhere: at most `max_subscribers` viewers, each with a queue of `queue_size` events; a
viewer too slow to keep up loses events (counted, and told) rather than slowing calls or growing
memory. With no viewer, `watched` is False and the pipeline does no work at all for the feed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from simgate.gateway.errors import GatewayError

#: What of a call's arguments, result or error a viewer is sent at most (characters of JSON); the rest is cut.
MAX_PAYLOAD_CHARS = 65_536


class TooManyViewers(GatewayError):
    """More pages are watching the live calls than the gateway serves at once."""

    MESSAGE = "too many pages are watching the live calls already; close one"


@dataclass(frozen=True)
class CallEvent:
    """One finished call as the page shows it: its JSON, made once however many viewers there are, and
    bounded (so a queue of events pins little memory, whatever the size of the call's result)."""

    id: int
    json: str

    @classmethod
    def build(cls, fields: dict[str, Any], payloads: dict[str, Any]) -> CallEvent:
        """`payloads` (arguments, result, error: already redacted) are cut to MAX_PAYLOAD_CHARS each."""
        head = json.dumps(fields, default=str, separators=(",", ":"))
        parts = [f'"{name}":{_bounded(value)}' for name, value in payloads.items()]
        return cls(fields["id"], head[:-1] + "," + ",".join(parts) + "}" if parts else head)


def _bounded(value: Any) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"))
    if len(text) <= MAX_PAYLOAD_CHARS:
        return text
    return json.dumps({"truncated": True, "chars": len(text), "head": text[:MAX_PAYLOAD_CHARS]})


@dataclass(eq=False)
class Subscription:
    """One viewer's queue: `offer` never blocks; what does not fit is dropped and counted."""

    send: MemoryObjectSendStream[CallEvent]
    receive: MemoryObjectReceiveStream[CallEvent]
    dropped: int = 0
    delivered: int = field(default=0)

    def offer(self, event: CallEvent) -> None:
        try:
            self.send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the viewer has just gone


class CallFeed:
    def __init__(self, *, queue_size: int = 128, max_subscribers: int = 16) -> None:
        self._queue_size = queue_size
        self._max = max_subscribers
        self._subscribers: list[Subscription] = []
        self._ids = itertools.count(1)

    @property
    def watched(self) -> bool:
        """Whether anyone watches: the pipeline checks this and nothing else when no one does."""
        return bool(self._subscribers)

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    @property
    def full(self) -> bool:
        return len(self._subscribers) >= self._max

    def next_id(self) -> int:
        return next(self._ids)

    def publish(self, event: CallEvent) -> None:
        for subscription in self._subscribers:
            subscription.offer(event)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        if len(self._subscribers) >= self._max:
            raise TooManyViewers(TooManyViewers.MESSAGE, data={"max_viewers": self._max})
        send, receive = anyio.create_memory_object_stream[CallEvent](self._queue_size)
        subscription = Subscription(send, receive)
        self._subscribers.append(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            send.close()
            receive.close()

    def close(self) -> None:
        """End every viewer's stream (the gateway is stopping)."""
        for subscription in self._subscribers:
            subscription.send.close()
