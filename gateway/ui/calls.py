"""The live-calls view's API: `GET /ui/api/calls/stream`, server-sent events of finished calls.

Events: `call` (one finished call, see `gateway.pipeline.publish`), `dropped` (how many this viewer
has lost so far for being slow), and a comment every few seconds so that idle proxies keep it open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from simgate.gateway.ui.feed import CallEvent, CallFeed, TooManyViewers

KEEPALIVE_SECONDS = 15.0


def routes(gateway: Any) -> list[BaseRoute]:
    return [Route("/calls/stream", _Stream(gateway.feed).handle)]


class _Stream:
    def __init__(self, feed: CallFeed) -> None:
        self._feed = feed

    async def handle(self, request: Request) -> Response:
        if self._feed.full:
            return JSONResponse({"error": TooManyViewers.MESSAGE}, status_code=503)
        return StreamingResponse(self._events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _events(self) -> AsyncIterator[str]:
        with ExitStack() as stack:
            try:
                subscription = stack.enter_context(self._feed.subscribe())
            except TooManyViewers as exc:
                yield _event("error", {"error": exc.message})
                return
            yield "retry: 3000\n: connected\n\n"
            reported = 0
            while True:
                event: CallEvent | None = None
                with anyio.move_on_after(KEEPALIVE_SECONDS):
                    try:
                        event = await subscription.receive.receive()
                    except (anyio.EndOfStream, anyio.ClosedResourceError):
                        return  # the gateway is stopping
                if event is None:
                    yield ": keep-alive\n\n"
                    continue
                if subscription.dropped != reported:
                    reported = subscription.dropped
                    yield _event("dropped", {"dropped": reported})
                yield f"id: {event.id}\nevent: call\ndata: {event.json}\n\n"


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"
