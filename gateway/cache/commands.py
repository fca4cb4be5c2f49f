"""`simgate cache ...`: inspect and move recordings (filled in by the cache tools work)."""

from __future__ import annotations

from typing import Any


def register(commands: Any) -> None:
    pass
