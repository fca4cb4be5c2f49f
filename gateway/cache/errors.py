"""What can go wrong with a store on disk, said in one line (for the commands that read stores)."""

from __future__ import annotations

import sqlite3

from diskcache import Timeout

from simgate.gateway.errors import CorruptRecording, StoreUnavailable

STORE_ERRORS: tuple[type[BaseException], ...] = (Timeout, sqlite3.Error, OSError, StoreUnavailable,
                                                  CorruptRecording)


def describe_store_error(exc: BaseException) -> str:
    if isinstance(exc, Timeout):
        return "the store is locked by another process; try again"
    if isinstance(exc, sqlite3.Error):
        return f"the store cannot be read: {exc}"
    if isinstance(exc, (StoreUnavailable, CorruptRecording)):
        return exc.message
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return str(exc)
