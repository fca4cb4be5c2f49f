"""Carry a recorded answer over to new arguments: where the answer echoes an argument of its call
(a timezone, a path, a name, an id), put the new call's value there. Plain data, no LLM."""

from __future__ import annotations

import json
import re
from typing import Any

MIN_ECHO_CHARS = 3  # shorter strings ("a", "10") are too likely to occur by chance in an answer


def _leaves(value: Any, prefix: str = "$") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(_leaves(item, f"{prefix}[{index}]"))
        return out
    return {prefix: value}


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def replacements(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """{old value: new value} for every argument (by path) whose scalar value changed between the two calls.
    A value that two arguments share but map differently is ambiguous and left out."""
    before, after = _leaves(old), _leaves(new)
    pairs: dict[Any, Any] = {}
    ambiguous: set[Any] = set()
    for path in before.keys() & after.keys():
        a, b = before[path], after[path]
        if not (_scalar(a) and _scalar(b)) or a == b or type(a) is bool:
            continue
        if a in pairs and pairs[a] != b:
            ambiguous.add(a)
        pairs[a] = b
    return {a: b for a, b in pairs.items() if a not in ambiguous}


def _pattern(pairs: dict[Any, Any]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    """One regex for every echoable old value (longest first, so "Europe/Paris" wins over "Paris"),
    applied in one pass so that a replacement is never replaced again."""
    texts = {str(a): str(b) for a, b in pairs.items() if len(str(a)) >= MIN_ECHO_CHARS}
    if not texts:
        return None
    alternatives = []
    for text in sorted(texts, key=len, reverse=True):
        escaped = re.escape(text)
        # Numbers and word-like values only as whole tokens: 123 must not match inside 91234.
        left = r"(?<![\w.])" if text[0].isalnum() else ""
        right = r"(?![\w]|\.\d)" if text[-1].isalnum() else ""
        alternatives.append(f"{left}{escaped}{right}")
    return re.compile("|".join(alternatives)), texts


def _in_text(text: str, compiled: tuple[re.Pattern[str], dict[str, str]] | None) -> str:
    if compiled is None:
        return text
    pattern, texts = compiled
    return pattern.sub(lambda match: texts[match.group(0)], text)


def _in_value(value: Any, pairs: dict[Any, Any], compiled: tuple[re.Pattern[str], dict[str, str]] | None) -> Any:
    if isinstance(value, dict):
        return {key: _in_value(item, pairs, compiled) for key, item in value.items()}
    if isinstance(value, list):
        return [_in_value(item, pairs, compiled) for item in value]
    if _scalar(value) and value in pairs and type(pairs[value]) is type(value):
        return pairs[value]  # the whole value is the echoed argument, of the same type
    if isinstance(value, str):
        return _in_text(value, compiled)
    return value


def substitute(result: dict[str, Any], old_arguments: dict[str, Any], new_arguments: dict[str, Any]) -> dict[str, Any]:
    """`result` (a `CallToolResult` dict recorded for `old_arguments`) with every echo of a changed
    argument replaced by its value in `new_arguments`: in `structuredContent` (whole values of the same
    type, and inside strings) and in the text blocks. Unchanged where nothing is echoed."""
    pairs = replacements(old_arguments, new_arguments)
    if not pairs:
        return result
    compiled = _pattern(pairs)
    out = dict(result)
    if out.get("structuredContent") is not None:
        out["structuredContent"] = _in_value(out["structuredContent"], pairs, compiled)
    blocks = []
    for block in out.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            block = {**block, "text": _text_block(block["text"], pairs, compiled)}
        blocks.append(block)
    if "content" in out:
        out["content"] = blocks
    return out


def _text_block(text: str, pairs: dict[Any, Any], compiled: tuple[re.Pattern[str], dict[str, str]] | None) -> str:
    """JSON text is substituted as data (whole values keep their type), other text as text."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(stripped)
        except ValueError:
            parsed = None
        if isinstance(parsed, (dict, list)):
            indent = 2 if "\n" in stripped else None
            return json.dumps(_in_value(parsed, pairs, compiled), indent=indent, ensure_ascii=False)
    return _in_text(text, compiled)
