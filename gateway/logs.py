"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(level: str, replica: int | None = None) -> None:
    """One JSON object per line on stderr, written as it happens; `replica`: every line says which replica
    of the gateway wrote it (the replicas of `serve --workers` share one stderr).

    Written synchronously on purpose: a queue thread loses its last records when uvicorn re-raises
    SIGTERM after its graceful shutdown, and the last records are the ones that say how it ended.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    if replica is not None:
        handler.addFilter(_Stamp(replica))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDK logs a traceback for every non-JSON stdout line; simgate logs one clear line instead.
    logging.getLogger("mcp.client.stdio").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Not a line per request (replicas pass requests to each other with httpx).
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _Stamp(logging.Filter):
    def __init__(self, replica: int) -> None:
        super().__init__()
        self._replica = replica

    def filter(self, record: logging.LogRecord) -> bool:
        record.replica = self._replica
        return True


class RedactingFilter(logging.Filter):
    """Removes secrets from a log record (message, arguments, extra fields, traceback) before it is written.

    Installed on the root logger's handlers, so it sees every record that propagates to them.
    """

    def __init__(self, redactor: Any) -> None:
        super().__init__("simgate.redact")
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor
        if not redactor:
            return True
        try:
            record.msg, record.args = redactor.redact_text(record.getMessage()), None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            if record.exc_text:
                record.exc_text = redactor.redact_text(record.exc_text)
            if record.stack_info:
                record.stack_info = redactor.redact_text(record.stack_info)
            for key, value in list(vars(record).items()):
                if key in _STANDARD or value is None or isinstance(value, bool | int | float):
                    continue
                if isinstance(value, str | dict | list | tuple):
                    setattr(record, key, redactor.redact(value))
                elif redactor.contains(text := str(value)):
                    setattr(record, key, redactor.redact_text(text))
        except Exception:  # noqa: BLE001 - a record that cannot be checked is not written as it was
            record.msg, record.args, record.exc_info, record.exc_text = "[log record withheld: redaction failed]", \
                None, None, None
        return True


def redact_logs(redactor: Any) -> Callable[[], None]:
    """Install a `RedactingFilter` on every root handler; returns a function that removes it."""
    log_filter = RedactingFilter(redactor)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(log_filter)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(log_filter)

    return remove
