"""Responses of an upstream over streamable HTTP, bounded by `max_result_bytes` as a stdio line is.

Between the connection and the SDK (which reads a JSON body whole, and an SSE event whole):
- a JSON body over the limit is not read further; the SDK gets, in its place, the error for the
  request it answered (the POST's own);
- an SSE event is passed on when it ends (it is at most the limit); one over the limit is dropped as
  it arrives and replaced by an error event for the request it answered (the id in its first bytes,
  else the POST's request), or just dropped when it is a request or notification of the server's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import httpx2

from simgate.sandboxes.framing import RequestId, read_head

logger = logging.getLogger("simgate.upstream")

Refusal = Callable[[RequestId], bytes]  # the JSON-RPC error answering a request whose answer was too large

_HEAD_BYTES = 4096
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")  # a blank line ends an SSE event


class BoundedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int, refusal: Refusal) -> None:
        self._inner = inner
        self._limit = limit
        self._refusal = refusal

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["accept-encoding"] = "identity"  # the limit counts the bytes as sent, not inflated
        response = await self._inner.handle_async_request(request)
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        request_id = _request_id(request)
        inner = response.stream
        assert isinstance(inner, httpx2.AsyncByteStream)
        if media_type == "application/json":
            response.stream = _JsonBody(inner, self._limit, request_id, self._refusal)
        elif media_type == "text/event-stream":
            response.stream = _Events(inner, self._limit, request_id, self._refusal)
        else:
            return response
        if "content-length" in response.headers:
            del response.headers["content-length"]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class _JsonBody(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, request_id: RequestId | None,
                 refusal: Refusal) -> None:
        self._inner, self._limit, self._request_id, self._refusal = inner, limit, request_id, refusal

    async def __aiter__(self) -> AsyncIterator[bytes]:
        held: list[bytes] = []
        size = 0
        async for chunk in self._inner:
            size += len(chunk)
            if size > self._limit:  # the rest is never read: the connection closes with the response
                held.clear()
                if self._request_id is None:
                    raise httpx2.ReadError(f"a response body over max_result_bytes ({self._limit} bytes)")
                logger.warning("upstream answer to request %r over %d bytes dropped", self._request_id, self._limit)
                yield self._refusal(self._request_id)
                return
            held.append(chunk)
        for chunk in held:
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Events(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, request_id: RequestId | None,
                 refusal: Refusal) -> None:
        self._inner, self._limit, self._request_id, self._refusal = inner, limit, request_id, refusal

    async def __aiter__(self) -> AsyncIterator[bytes]:
        event: list[bytes] = []
        size = 0
        head = carry = b""  # the event's first bytes; its last few (an end can span two chunks)
        async for chunk in self._inner:
            data = chunk
            while data:
                end = _event_end(carry, data)
                part, data = (data, b"") if end < 0 else (data[:end], data[end:])
                if len(head) < _HEAD_BYTES:
                    head += part[:_HEAD_BYTES - len(head)]
                size += len(part)
                if size <= self._limit:
                    event.append(part)
                else:
                    event.clear()  # dropped as it arrives
                carry = (carry + part)[-3:]
                if end < 0:
                    continue
                if size <= self._limit:
                    yield b"".join(event)
                elif (refusal := self._refuse(head)) is not None:
                    yield refusal
                event.clear()
                size, head, carry = 0, b"", b""
        if event and size <= self._limit:
            yield b"".join(event)

    def _refuse(self, head: bytes) -> bytes | None:
        start = head.find(b"data:")
        kind, request_id = read_head(head[start + 5:] if start >= 0 else b"")
        if kind == "request":
            logger.warning("upstream request or notification over %d bytes dropped", self._limit)
            return None
        request_id = request_id if request_id is not None else self._request_id
        if request_id is None:
            logger.warning("upstream message over %d bytes dropped (which request it answered is unknown)",
                           self._limit)
            return None
        logger.warning("upstream answer to request %r over %d bytes dropped", request_id, self._limit)
        return b"event: message\r\ndata: " + self._refusal(request_id) + b"\r\n\r\n"

    async def aclose(self) -> None:
        await self._inner.aclose()


def _event_end(carry: bytes, data: bytes) -> int:
    """Where in `data` the current event ends (just past its blank line), or -1."""
    window = carry + data
    ends = [index + len(end) - len(carry) for end in _EVENT_ENDS if (index := window.find(end)) >= 0]
    ends = [end for end in ends if end > 0]
    return min(ends) if ends else -1


def _request_id(request: httpx2.Request) -> RequestId | None:
    """The id of the JSON-RPC request a POST carries."""
    if request.method != "POST":
        return None
    try:
        message = json.loads(request.content)
    except (httpx2.RequestNotRead, ValueError):
        return None
    request_id = message.get("id") if isinstance(message, dict) and "method" in message else None
    return request_id if isinstance(request_id, int | str) and not isinstance(request_id, bool) else None
