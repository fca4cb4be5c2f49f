"""A server's `stderr.log`, capped: rotated to `stderr.log.1`, `.2`... by the standard library's
`RotatingFileHandler`, so a server that spams stderr costs at most (backups + 1) x max_bytes of disk.

The server (a child process, or the docker reader, or the gateway's own notes) writes to a pipe; a
thread copies from the pipe into the rotating file, until every writer has closed it.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO

logger = logging.getLogger("simgate.upstream")

_CHUNK = 65536
_JOIN_TIMEOUT = 5.0


@contextmanager
def rotating_errlog(path: Path, max_bytes: int, backups: int, name: str = "upstream") -> Iterator[IO[str]]:
    """A file to give a server as its stderr (it has a real descriptor); what it gets lands in `path`, rotated."""
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.terminator = ""  # records are raw chunks of the server's output, not log lines
    handler.setFormatter(logging.Formatter("%(message)s"))
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8", errors="replace", buffering=1)
    thread = threading.Thread(target=_copy, args=(read_fd, handler), name=f"stderr-log:{name}", daemon=True)
    thread.start()
    try:
        yield writer
    finally:
        writer.close()
        thread.join(timeout=_JOIN_TIMEOUT)  # a surviving grandchild may hold the pipe: it is not waited for
        if not thread.is_alive():
            handler.close()


def _copy(read_fd: int, handler: RotatingFileHandler) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while chunk := os.read(read_fd, _CHUNK):
            if text := decoder.decode(chunk):
                handler.emit(logging.makeLogRecord({"msg": text}))
        if tail := decoder.decode(b"", final=True):
            handler.emit(logging.makeLogRecord({"msg": tail}))
    except OSError as exc:
        logger.debug("stderr copy ended: %s", exc)
    finally:
        os.close(read_fd)
        handler.flush()
