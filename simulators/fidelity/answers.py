"""One normalized view of "what answered a call": a `CallToolResult` dict, or a JSON-RPC error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from simgate.results import strip_meta, text_of


@dataclass(frozen=True)
class Answer:
    """Exactly one of `result` and `error` is set (both None: the simulator produced nothing)."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def missing(self) -> bool:
        return self.result is None and self.error is None

    @property
    def text(self) -> str:
        if self.result is not None:
            return text_of(self.result)
        if self.error is not None:
            return str(self.error.get("message") or "")
        return ""


def as_answer(value: Any) -> Answer:
    """Accepts a `CallToolResult` dict, `{"error": {code, message}}` (the shadow log's and recordings'
    shape), a bare JSON-RPC error `{code, message}`, an `Answer`, or None (no answer)."""
    if isinstance(value, Answer):
        return value
    if value is None:
        return Answer()
    if not isinstance(value, dict):
        raise TypeError(f"an answer is a dict, not {type(value).__name__}")
    if isinstance(value.get("error"), dict) and "content" not in value:
        return Answer(error=value["error"])
    if "code" in value and "message" in value and "content" not in value:
        return Answer(error=value)
    return Answer(result=strip_meta(value))


def payload(answer: Answer) -> Any:
    """The structured data of an answer: `structuredContent`, else JSON parsed from its text when the
    text is a JSON object or array; None when there is none."""
    if answer.result is None:
        return None
    structured = answer.result.get("structuredContent")
    if structured is not None:
        return structured
    text = answer.text.strip()
    if not text or text[0] not in "[{":
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) else None
