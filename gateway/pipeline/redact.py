"""Redaction applied: no vault secret leaves the gateway, in plain text or encoded.

The engine (`gateway.redaction.engine`: which forms of a secret are found, and how) knows nothing of
the gateway; this module puts it where secrets could leave:

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

import codecs
import contextlib
import logging
import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.records import RecordedError, Recording
from simgate.gateway.cache.shadow import ShadowLog, ShadowPair
from simgate.gateway.pipeline.call import CallNext, CallResult, ToolCall
from simgate.gateway.redaction.engine import Redactor, StreamRedactor, placeholder
from simgate.gateway.sessions import Sessions

__all__ = ["RedactResponses", "RedactSecrets", "RedactingSessions", "RedactingShadowLog", "RedactingSnapshots",
           "RedactingStore", "Redactor", "StreamRedactor", "placeholder", "redact_error", "redact_recording",
           "redacting_pipe"]

logger = logging.getLogger("simgate.redact")

_IDLE_FLUSH = 0.5  # seconds of quiet on a child's stderr before what is held back (and cannot be a secret) is written


def redact_error(redactor: Redactor, exc: MCPError) -> MCPError:
    """Redact an MCP error in place (message, data, and what `str()` shows); returns it."""
    if redactor:
        exc.error.message = redactor.redact_text(exc.error.message)
        exc.error.data = redactor.redact(exc.error.data)
        exc.args = (exc.error.code, exc.error.message, exc.error.data)
    return exc


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
            raise redact_error(self._redactor, exc) from None  # the unredacted original is not shown as context
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
        if self.keep_history:
            super().remember(session_id, self._redactor.redact(entry))

    def prepare(self, entry: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._redactor.redact(entry)
        return result


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
            # A secret cannot straddle two SSE events (each is one whole message): at the end of one,
            # nothing is held back, so it goes out at once.
            out = stream.feed(text, final=not more or text.endswith(("\n\n", "\r\n\r\n")))
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
