"""YAML from a file a user (or someone else) wrote, loaded so that every way it can fail is one
`yaml.YAMLError`, which callers already turn into a precise message.

`yaml.safe_load` also fails with a `RecursionError` (flow collections nested a few thousand deep), and
it keeps aliases as shared references: a "billion laughs" document loads small, then explodes in
whatever walks it (validation, `json.dumps` of a fingerprint). So the loaded value's expanded size is
counted (each shared part once, by identity) and bounded, and an alias that contains itself is refused.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_VALUES = 1_000_000  # the values of a document with its aliases expanded; configs hold thousands


def safe_load(text: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply") from None
    try:
        count = _expanded(data, {}, set())
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply") from None
    if count > MAX_VALUES:
        raise yaml.YAMLError(f"its aliases expand to over {MAX_VALUES:,} values (a 'billion laughs' document?)")
    return data


def _expanded(value: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `value` holds once every alias is expanded; each shared part is counted once."""
    if not isinstance(value, (list, dict)):
        return 1
    ident = id(value)
    if ident in sizes:
        return sizes[ident]
    if ident in open_:
        raise yaml.YAMLError("an alias refers to a collection that contains it (a cycle)")
    open_.add(ident)
    total = 1
    for item in value.values() if isinstance(value, dict) else value:
        total += _expanded(item, sizes, open_)
        if total > MAX_VALUES:
            break  # enough to refuse: never walk the expansion itself
    open_.discard(ident)
    sizes[ident] = total
    return total
