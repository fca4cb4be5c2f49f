"""`vault:NAME` references in a server's `env` and `headers`.

A value is either a whole reference (`GITHUB_TOKEN: vault:github`) or a string with embedded ones
(`Authorization: Bearer ${vault:github}`). Secret names are letters, digits, `_`, `-` and `.`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from simgate.errors import SimgateError

NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
NAME = re.compile(NAME_PATTERN)
_WHOLE = re.compile(r"vault:(.*)", re.DOTALL)
_EMBEDDED = re.compile(r"\$\{vault:([^}]*)\}")
FIELDS = ("env", "headers")


class BadReference(SimgateError, ValueError):  # a ValueError, so that a pydantic validator reports it
    """A malformed `vault:` reference."""


def names_in(value: str) -> list[str]:
    """The secret names a value refers to, in order (raises `BadReference` on a malformed name)."""
    whole = _WHOLE.fullmatch(value)
    if whole is not None:
        found = [whole.group(1)]
    else:
        found = [match.group(1) for match in _EMBEDDED.finditer(value)]
    for name in found:
        if not NAME.fullmatch(name):
            raise BadReference(f"{value if len(value) < 80 else value[:77] + '...'!r} is not a valid vault "
                                  f"reference: a secret name is 1-128 letters, digits, '_', '-' or '.' "
                                  f"(write vault:NAME or ${{vault:NAME}})")
    return found


def substitute(value: str, lookup: Callable[[str], str]) -> str:
    """`value` with every reference replaced by `lookup(name)`."""
    whole = _WHOLE.fullmatch(value)
    if whole is not None:
        return lookup(whole.group(1))
    return _EMBEDDED.sub(lambda match: lookup(match.group(1)), value)


def references(server: Any) -> Iterator[tuple[str, str, str]]:
    """(field, key, secret name) for every reference in a server config's `env` and `headers`."""
    for field in FIELDS:
        mapping: dict[str, str] = getattr(server, field, None) or {}
        for key, value in mapping.items():
            if isinstance(value, str):
                for name in names_in(value):
                    yield field, key, name


def check(mapping: dict[str, str], field: str) -> None:
    """Raise `BadReference` naming `field.key` for the first malformed reference."""
    for key, value in mapping.items():
        try:
            names_in(value)
        except BadReference as exc:
            raise BadReference(f"{field}.{key}: {exc}") from None
