"""Newline-delimited JSON-RPC from a server's stdout: one framer, one limit, for every stdio transport
(a child process, a container's attach stream).

A line is read in pieces and joined once, when it ends. A line over `max_line` bytes is dropped WHILE
it is read: only its first and last few KiB are kept, to read its JSON-RPC id and kind from them, and
it is reported as an `OversizedMessage`, as soon as its id is known (most SDKs write `"id"` before
`"result"`; the TypeScript SDK writes it last), so the request it answered can fail at once. The
stream goes on at the next line.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import mcp_types as types
from mcp.shared.message import SessionMessage

Kind = Literal["response", "request", "unknown"]  # "request": a server request or notification
RequestId = int | str

_END_BYTES = 4096  # how much of each end of an oversized line is kept
_DECODER = json.JSONDecoder()
# The last members of a message whose id comes after its result: `...,"jsonrpc":"2.0","id":7}`.
_TAIL_ID = re.compile(rb'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.){0,200}")\s*(?:,\s*"jsonrpc"\s*:\s*"2\.0"\s*)?\}\s*$')


class OversizedMessage(ValueError):
    """A line over the limit, dropped; `request_id` is the id it carried when that could be read."""

    def __init__(self, limit: int, size: int | None, kind: Kind, request_id: RequestId | None) -> None:
        self.limit = limit
        self.size = size  # None: reported before its end (it is over the limit; how far is not known yet)
        self.kind = kind
        self.request_id = request_id
        length = f"of {size} bytes" if size is not None else "still arriving"
        super().__init__(f"a message {length}, over the limit of {limit} bytes, was dropped")


class MalformedAnswer(ValueError):
    """A line that is JSON with a request's id and a `result` or `error`, yet no valid JSON-RPC answer (no
    `jsonrpc`, both members, a `result` that is no object): kept with its id, so that the request it answers
    can fail now rather than wait out its timeout."""

    def __init__(self, request_id: RequestId, line: str) -> None:
        self.request_id = request_id
        self.line = line
        super().__init__(f"an answer to request {request_id!r} that is not valid JSON-RPC: {line}")


class LineFramer:
    """Bytes in, messages out: a parsed `SessionMessage`, or the exception for a line that is not one."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._pieces: list[bytes] = []  # the line being read, while it is within the limit
        self._size = 0
        self._head = b""  # the line's first bytes (to read an oversized line's id from)
        self._tail = b""  # an oversized line's last bytes, so far
        self._reported = False  # the oversized line being read was reported already

    def feed(self, chunk: bytes) -> list[SessionMessage | Exception]:
        out: list[SessionMessage | Exception] = []
        *ends, rest = chunk.split(b"\n")
        for end in ends:
            self._add(end, out)
            self._end_line(out)
        if rest:
            self._add(rest, out)
        return out

    def end(self) -> list[SessionMessage | Exception]:
        """The stream ended: a last line without its newline."""
        out: list[SessionMessage | Exception] = []
        self._end_line(out)
        return out

    @property
    def _oversized(self) -> bool:
        return self._size > self.max_line

    def _add(self, piece: bytes, out: list[SessionMessage | Exception]) -> None:
        if not piece:
            return
        if len(self._head) < _END_BYTES:
            self._head += piece[:_END_BYTES - len(self._head)]
        was_oversized = self._oversized
        self._size += len(piece)
        if not self._oversized:
            self._pieces.append(piece)
            return
        self._tail = piece[-_END_BYTES:] if len(piece) >= _END_BYTES else (self._tail + piece)[-_END_BYTES:]
        if not was_oversized:  # crossed the limit with this piece: what was held goes
            self._pieces.clear()
            kind, request_id = read_head(self._head)
            if request_id is not None:  # fail its request now, not once the rest has streamed by
                out.append(OversizedMessage(self.max_line, None, kind, request_id))
                self._reported = True

    def _end_line(self, out: list[SessionMessage | Exception]) -> None:
        if self._oversized:
            if not self._reported:
                kind, request_id = read_head(self._head)
                if request_id is None:
                    request_id = read_tail(self._tail)
                out.append(OversizedMessage(self.max_line, self._size, kind, request_id))
        elif self._size:
            line = b"".join(self._pieces)
            if line.strip():  # blank lines carry nothing
                out.append(_parse(line))
        self._pieces.clear()
        self._size = 0
        self._head = self._tail = b""
        self._reported = False


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        text = line.decode("utf-8", errors="replace")  # as text, so a skipped line is logged readably
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except ValueError as exc:  # pydantic's ValidationError included
        return _malformed_answer(text) or exc


def _malformed_answer(text: str) -> MalformedAnswer | None:
    """The line as a `MalformedAnswer` when it is shaped like an answer to a request (parsed again only on
    this path: a line that is no message)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or "method" in value or not ("result" in value or "error" in value):
        return None
    request_id = value.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    return MalformedAnswer(request_id, text.strip()[:200])


def read_head(head: bytes) -> tuple[Kind, RequestId | None]:
    """Kind and id of a message from its first bytes: its top-level members are read in order up to the
    first whose value does not fit (the big `result` or `params`)."""
    text = head.decode("utf-8", errors="ignore")
    members: dict[str, object] = {}
    cut: str | None = None
    index = _skip(text, 0)
    if text[index:index + 1] == "{":
        index += 1
        while True:
            index = _skip(text, index)
            try:
                key, index = _DECODER.raw_decode(text, index)
                index = _skip(text, index)
                if text[index:index + 1] != ":" or not isinstance(key, str):
                    break
                index = _skip(text, index + 1)
            except ValueError:
                break
            try:
                members[key], index = _DECODER.raw_decode(text, index)
            except ValueError:
                cut = key
                break
            index = _skip(text, index)
            if text[index:index + 1] != ",":
                break
            index += 1
    if "method" in members or cut in ("method", "params"):
        kind: Kind = "request"
    elif {"result", "error"} & {*members, cut}:
        kind = "response"
    else:
        kind = "unknown"
    request_id = members.get("id")
    return kind, request_id if _is_id(request_id) else None  # type: ignore[return-value]


def read_tail(tail: bytes) -> RequestId | None:
    match = _TAIL_ID.search(tail)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if _is_id(value) else None


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _skip(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index
