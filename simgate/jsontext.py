"""JSON text from a file or a peer that may be hostile, parsed so that every way it can fail is one
`json.JSONDecodeError` (which callers already turn into a precise message).

`json.loads` also fails with a `RecursionError` (arrays nested a few thousand deep), a `ValueError`
(an integer of more digits than Python converts) or a `UnicodeDecodeError` (bytes not UTF-8): each an
uncaught traceback where callers catch `JSONDecodeError` only.
"""

from __future__ import annotations

import json
from typing import Any


def _no_constant(name: str) -> None:
    return None  # NaN, Infinity: not JSON, and a JSON answer could not carry them back out


def loads(text: str | bytes, *, finite: bool = False) -> Any:
    """`json.loads(text)`; `finite`: NaN and ±Infinity read as null (for data answered again as JSON)."""
    try:
        return json.loads(text, parse_constant=_no_constant if finite else None)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", _doc(text), 0) from None
    except ValueError as exc:  # too long an integer; bytes that are not UTF-8 (UnicodeDecodeError)
        raise json.JSONDecodeError(str(exc).split(";")[0], _doc(text), 0) from None


def _doc(text: str | bytes) -> str:
    return text if isinstance(text, str) else text.decode("utf-8", errors="replace")
