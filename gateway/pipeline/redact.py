"""Redaction: no vault secret leaves the gateway, in plain text or encoded.

A `Redactor` knows every secret value the gateway resolved (and keeps those it resolved before, so a
rotated value stays redacted) and replaces each occurrence, in any string, with `[REDACTED:NAME]`.
Forms searched for: the value itself; its base64 (standard and URL-safe, with and without padding,
and the stretch of it found inside a longer base64 text, e.g. `Basic base64(user:secret)`); its
URL-encoding (`%XX`, upper or lower case, `+` for spaces, `/` kept or not, and of its base64); its
JSON string escape; its Python `repr` (as of a str or of UTF-8 bytes, which debug logs print).
In console output (an upstream's stderr) a form broken over lines by a logger that wraps long
messages is found too. Where it is applied:

- `RedactSecrets`, a pipeline stage: tool results and JSON-RPC errors (message and data), and the
  tool definition a simulator is shown;
- `redact_recording`: what the recorder writes and what cassettes export;
- `RedactingSessions`, `RedactingStore`, `RedactingShadowLog`, `RedactingSnapshots`: session history
  and recordings as a simulator sees them, shadow pairs and the tool lists kept on disk;
- `RedactResponses`, ASGI middleware: every byte of every HTTP response (any MCP result,
  notification or server-to-client request, the admin API, metrics), buffered or streamed (SSE);
- `redacting_pipe`: an upstream's stderr on its way to `stderr.log`;
- `gateway.logs.RedactingFilter`: log records.
"""

from __future__ import annotations

import base64
import bisect
import codecs
import contextlib
import json
import logging
import os
import re
import select
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from mcp.shared.exceptions import MCPError

from gateway.cache.records import RecordedError, Recording
from gateway.cache.shadow import ShadowLog, ShadowPair
from gateway.pipeline.call import CallNext, CallResult, ToolCall
from gateway.sessions import Sessions

logger = logging.getLogger("simgate.redact")

_MIN_FRAGMENT = 8  # shortest base64 stretch searched for inside longer base64 text
_IDLE_FLUSH = 0.5  # seconds of quiet on a child's stderr before held-back text is written


def placeholder(name: str) -> str:
    return f"[REDACTED:{name}]"


def encodings(value: str) -> list[str]:
    """Every form of `value` the redactor looks for, longest first."""
    data = value.encode("utf-8")
    forms: set[str] = {value}
    for ensure_ascii in (True, False):
        escaped = json.dumps(value, ensure_ascii=ensure_ascii)[1:-1]
        forms.update({escaped, escaped.replace("/", "\\/")})
    # As debug logs show text: repr() of a str, or of its UTF-8 bytes.
    forms |= {shown for text in forms for shown in (repr(text)[1:-1], repr(text.encode("utf-8"))[2:-1])}
    b64_forms: set[str] = set()
    for alphabet in (None, b"-_"):
        encoded = base64.b64encode(data, altchars=alphabet).decode("ascii")
        b64_forms.update({encoded, encoded.rstrip("=")})
        # Inside a longer base64 text the secret starts at one of three bit alignments; the characters
        # that depend on the secret alone are searched for.
        for offset in range(3):
            shifted = base64.b64encode(b"\0" * offset + data, altchars=alphabet).decode("ascii")
            start = -(-8 * offset // 6)
            core = shifted[start:(8 * (offset + len(data))) // 6]
            if len(core) >= _MIN_FRAGMENT:
                b64_forms.add(core)
    forms |= b64_forms
    for text in [value, *b64_forms]:
        for quoted in (urllib.parse.quote(text, safe=""), urllib.parse.quote(text, safe="/"),
                       urllib.parse.quote_plus(text, safe=""), urllib.parse.quote_plus(text, safe="/")):
            forms.update({quoted, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)})
    forms.discard("")
    return sorted(forms, key=lambda form: (-len(form), form))


# A line break a console logger inserts to wrap a long message (rich pads its lines with spaces).
_WRAP_RUN = re.compile(r"[ \t]*\r?\n[ \t]*")
WRAP_LINES = 12  # in console output, a secret is looked for across this many lines
_MAX_HELD = 65536  # characters a stream holds back at most


class _State:
    __slots__ = ("lookup", "max_length", "multiline", "pattern")

    def __init__(self, lookup: dict[str, str]) -> None:
        self.lookup = lookup
        forms = sorted(lookup, key=lambda form: (-len(form), form))
        self.pattern = re.compile("|".join(re.escape(form) for form in forms)) if forms else None
        self.max_length = max((len(form) for form in forms), default=0)
        self.multiline = any("\n" in form for form in forms)


Span = tuple[int, int, str]


class Redactor:
    """Replaces secrets in text and in JSON-like values; `update` adds (never forgets) values."""

    def __init__(self, secrets: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = {}  # value -> name
        self._state = _State({})
        self._lock = threading.Lock()
        if secrets:
            self.update(secrets)

    def update(self, secrets: Mapping[str, str]) -> None:
        with self._lock:
            values = dict(self._values)
            for name, value in secrets.items():
                if value and value not in values:
                    values[value] = name
            if values == self._values:
                return
            lookup: dict[str, str] = {}
            # Longer secrets first, so a secret inside another is not what names the match.
            for value, name in sorted(values.items(), key=lambda item: -len(item[0])):
                for form in encodings(value):
                    lookup.setdefault(form, name)
            self._values = values
            self._state = _State(lookup)  # swapped whole: readers in other threads see old or new

    def __bool__(self) -> bool:
        return self._state.pattern is not None

    @property
    def names(self) -> list[str]:
        return sorted(set(self._values.values()))

    @property
    def max_length(self) -> int:
        return self._state.max_length

    def contains(self, text: str) -> bool:
        pattern = self._state.pattern
        return pattern is not None and pattern.search(text) is not None

    def redact_text(self, text: str, *, wrapped: bool = False) -> str:
        """`text` with every secret replaced; `wrapped` also finds one a console logger broke over lines."""
        state = self._state
        if state.pattern is None:
            return text
        if not wrapped:
            lookup = state.lookup
            return state.pattern.sub(lambda match: placeholder(lookup[match.group(0)]), text)
        out, position = [], 0
        for start, end, name in self.spans(text, wrapped=True):
            out += [text[position:start], placeholder(name)]
            position = end
        out.append(text[position:])
        return "".join(out)

    def spans(self, text: str, *, wrapped: bool = False) -> list[Span]:
        """Where secrets are in `text`: sorted, non-overlapping (start, end, name)."""
        state = self._state
        if state.pattern is None:
            return []
        found = [(m.start(), m.end(), state.lookup[m.group(0)]) for m in state.pattern.finditer(text)]
        if wrapped and "\n" in text:
            found += _wrapped_spans(text, state)
            found.sort()
            merged: list[Span] = []
            for span in found:
                if merged and span[0] < merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(span[1], merged[-1][1]), merged[-1][2])
                else:
                    merged.append(span)
            found = merged
        return found

    def redact(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string (keys too) redacted; other values as they are."""
        if self._state.pattern is None:
            return value
        return self._redact(value)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self._redact(key) if isinstance(key, str) else key: self._redact(item)
                    for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(item) for item in value]
        return value

    def redact_error(self, exc: MCPError) -> MCPError:
        """Redact an MCP error in place (message, data, and what `str()` shows); returns it."""
        if self._state.pattern is not None:
            exc.error.message = self.redact_text(exc.error.message)
            exc.error.data = self.redact(exc.error.data)
            exc.args = (exc.error.code, exc.error.message, exc.error.data)
        return exc


def _wrapped_spans(text: str, state: _State) -> list[Span]:
    """Secrets broken over lines: searched for in the text with its line breaks (and their padding)
    removed, then mapped back to where they are in `text`."""
    assert state.pattern is not None
    joined_starts: list[int] = []
    original_starts: list[int] = []
    pieces: list[str] = []
    position = joined_length = 0
    for run in _WRAP_RUN.finditer(text):
        joined_starts.append(joined_length)
        original_starts.append(position)
        pieces.append(text[position:run.start()])
        joined_length += run.start() - position
        position = run.end()
    joined_starts.append(joined_length)
    original_starts.append(position)
    pieces.append(text[position:])

    def original(index: int) -> int:
        segment = bisect.bisect_right(joined_starts, index) - 1
        return original_starts[segment] + index - joined_starts[segment]

    spans = []
    for match in state.pattern.finditer("".join(pieces)):
        start, end = original(match.start()), original(match.end() - 1) + 1
        if end - start != match.end() - match.start():  # it spans a line break (the rest were found as they are)
            spans.append((start, end, state.lookup[match.group(0)]))
    return spans


class StreamRedactor:
    """Redacts text that arrives in pieces: a secret split between two pieces is still found.

    What could be the beginning of a secret is held back until the next piece (or the end, or a
    `flush`); with no multi-line secret, complete lines are never held back. With `wrapped`
    (console output), a secret broken over up to `WRAP_LINES` lines is found too, so that many
    lines are held back.
    """

    def __init__(self, redactor: Redactor, *, wrapped: bool = False) -> None:
        self._redactor = redactor
        self._wrapped = wrapped
        self._pending = ""

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def feed(self, text: str, *, final: bool = False, flush: bool = False) -> str:
        buffer = self._pending + text
        state = self._redactor._state
        if final or flush or state.pattern is None:
            self._pending = ""
            return self._redactor.redact_text(buffer, wrapped=self._wrapped)
        if self._wrapped:
            breaks = [match.end() for match in re.finditer("\n", buffer)]
            cut = breaks[-WRAP_LINES - 1] if len(breaks) > WRAP_LINES else 0
        else:
            cut = len(buffer) - (state.max_length - 1)
            if not state.multiline:
                cut = max(cut, buffer.rfind("\n") + 1)
        cut = max(cut, len(buffer) - _MAX_HELD, 0)
        spans = self._redactor.spans(buffer, wrapped=self._wrapped)
        for start, end, _ in spans:
            if start < cut < end:
                cut = end
        self._pending = buffer[cut:]
        out, position = [], 0
        for start, end, name in spans:
            if end > cut:
                break
            out += [buffer[position:start], placeholder(name)]
            position = end
        out.append(buffer[position:cut])
        return "".join(out)


# ---------------------------------------------------------------------------------------------- applications


class RedactSecrets:
    """Pipeline stage: results and JSON-RPC errors of `tools/call` leave without secrets.

    The tool's definition (which a simulator is shown) is redacted on the way in, should an upstream
    have put a secret in it.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    async def __call__(self, call: ToolCall, call_next: CallNext) -> CallResult:
        if self._redactor:
            call.tool_definition = self._redactor.redact(call.tool_definition)
        try:
            result = await call_next(call)
        except MCPError as exc:
            raise self._redactor.redact_error(exc)
        return self._redactor.redact(result)


def redact_recording(redactor: Redactor | None, recording: Recording) -> Recording:
    """A recording fit to be written: arguments, answer and server identity redacted (keys kept)."""
    if not redactor:
        return recording
    error = recording.error
    if error is not None:
        error = RecordedError(code=error.code, message=redactor.redact_text(error.message),
                              data=redactor.redact(error.data))
    return recording.model_copy(update={
        "arguments": redactor.redact(recording.arguments), "result": redactor.redact(recording.result),
        "error": error,
        "server_name": redactor.redact(recording.server_name),
        "server_version": redactor.redact(recording.server_version),
    })


class RedactingSessions(Sessions):
    """Session history (which the simulator is shown) is kept redacted."""

    def __init__(self, redactor: Redactor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._redactor = redactor

    def remember(self, session_id: str | None, entry: dict[str, Any]) -> None:
        super().remember(session_id, self._redactor.redact(entry))


class RedactingShadowLog(ShadowLog):
    """Shadow pairs (live and simulated answers, written to disk) are kept redacted."""

    def __init__(self, directory: Path, redactor: Redactor) -> None:
        super().__init__(directory)
        self._redactor = redactor

    def append(self, pair: ShadowPair) -> None:
        redact = self._redactor.redact
        super().append(pair.model_copy(update={"arguments": redact(pair.arguments), "live": redact(pair.live),
                                               "simulated": redact(pair.simulated)}))


class RedactingStore:
    """A read view of the recording store whose recordings come out redacted: what a simulator is
    shown, even from recordings made before a secret was in the vault."""

    def __init__(self, store: Any, redactor: Redactor) -> None:
        self._store = store
        self._redactor = redactor

    def get(self, key: str) -> list[Recording]:
        return [redact_recording(self._redactor, recording) for recording in self._store.get(key)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class RedactingSnapshots:
    """The tool lists an upstream store keeps on disk are written redacted."""

    def __init__(self, store: Any, redactor: Redactor) -> None:
        self._store = store
        self._redactor = redactor

    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None:
        self._store.save_tools(server, self._redactor.redact(tools))

    def load_tools(self, server: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._store.load_tools(server)
        return result


class RedactResponses:
    """ASGI middleware: the body of every HTTP response is redacted on its way out.

    A response with a Content-Length is redacted whole (and its length corrected); a streamed one
    (SSE) piece by piece, each piece sent at once when it ends an event.
    """

    def __init__(self, app: Any, redactor: Redactor) -> None:
        self.app = app
        self._redactor = redactor

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self._redactor:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []
        stream = StreamRedactor(self._redactor)
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")

        async def redacting_send(message: Any) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                if any(name.lower() == b"content-length" for name, _ in message.get("headers", [])):
                    held["start"] = message  # sent with the redacted body's length
                    return
                await send(message)
                return
            if kind != "http.response.body":
                await send(message)
                return
            body, more = message.get("body", b""), message.get("more_body", False)
            if "start" in held:
                chunks.append(body)
                if more:
                    return
                data = self._redactor.redact_text(b"".join(chunks).decode("utf-8", "surrogateescape")).encode(
                    "utf-8", "surrogateescape")
                start = held.pop("start")
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": [*headers, (b"content-length", str(len(data)).encode())]})
                await send({"type": "http.response.body", "body": data, "more_body": False})
                return
            text = decoder.decode(body, final=not more)
            out = stream.feed(text, final=not more, flush=text.endswith("\n"))
            await send({**message, "body": out.encode("utf-8", "surrogateescape")})

        await self.app(scope, receive, redacting_send)


@contextlib.contextmanager
def redacting_pipe(file: IO[str], redactor: Redactor | None, name: str = "upstream") -> Iterator[IO[str]]:
    """A file to give a child process as its stderr: what it writes reaches `file` redacted.

    Without a redactor `file` itself is given. A thread copies from the pipe to `file` until every
    writer (the child processes, and this end) has closed it.
    """
    if redactor is None:
        yield file
        return
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace", buffering=1)
    thread = threading.Thread(target=_copy, args=(read_fd, file, redactor), name=f"stderr:{name}", daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        writer.close()
        thread.join(timeout=5)


def _copy(read_fd: int, file: IO[str], redactor: Redactor) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stream = StreamRedactor(redactor, wrapped=True)
    try:
        while True:
            if stream.pending and not select.select([read_fd], [], [], _IDLE_FLUSH)[0]:
                out = stream.feed("", flush=True)  # quiet for a while: what is held back is written
                file.write(out)
                file.flush()
                continue
            chunk = os.read(read_fd, 65536)
            out = stream.feed(decoder.decode(chunk, final=not chunk), final=not chunk)
            if out:
                file.write(out)
                file.flush()
            if not chunk:
                return
    except (OSError, ValueError) as exc:  # the log file was closed under us: nothing more to keep
        logger.debug("stderr copy ended: %s", exc)
    finally:
        os.close(read_fd)
