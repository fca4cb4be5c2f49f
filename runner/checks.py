"""Per-trajectory checks, stored with it: TOUCAN's rule checks and tool-use metrics. Plain functions
of a trajectory's fields, so they can be recomputed on any file."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from simgate.runner.trajectory import ToolEvent

# Phrases an agent uses when it reports a failure instead of an answer.
_ERROR_TEXT = re.compile(r"\b(error|exception|traceback|failed|failure|unable to|could not|couldn't)\b", re.IGNORECASE)
REPEATED_CALLS = 3  # the same call this many times in a row is a loop
MIN_WORDS = 20  # shorter texts are too short to call repetitive
DISTINCT_NGRAMS = 0.5  # below this share of distinct 4-grams a text is degenerate
REPEATED_LINES = 3


def has_tool_call(events: Sequence[ToolEvent]) -> bool:
    return len(events) > 0


def has_tool_success(events: Sequence[ToolEvent]) -> bool:
    """At least one tool answer that is not an error."""
    return any(not event.is_error for event in events)


def agent_texts(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m.get("role") == "assistant" and isinstance(m.get("content"), str)]


def no_agent_error_text(messages: Sequence[dict[str, Any]], final_answer: str | None) -> bool:
    texts = [*agent_texts(messages), final_answer or ""]
    return not any(_ERROR_TEXT.search(text) for text in texts)


def has_final_answer(final_answer: str | None) -> bool:
    return bool(final_answer and final_answer.strip())


def text_is_degenerate(text: str) -> bool:
    """A line repeated again and again, or a text made of few distinct 4-grams."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and max(lines.count(line) for line in set(lines)) >= REPEATED_LINES:
        return True
    words = text.split()
    if len(words) < MIN_WORDS:
        return False
    grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
    return len(set(grams)) / len(grams) < DISTINCT_NGRAMS


def calls_loop(events: Sequence[ToolEvent]) -> bool:
    """The same tool with the same arguments REPEATED_CALLS times in a row."""
    run, previous = 0, None
    for event in events:
        key = (event.name, json.dumps(event.arguments, sort_keys=True))
        run = run + 1 if key == previous else 1
        previous = key
        if run >= REPEATED_CALLS:
            return True
    return False


def no_repetition(events: Sequence[ToolEvent], messages: Sequence[dict[str, Any]], final_answer: str | None) -> bool:
    texts = [*agent_texts(messages), final_answer or ""]
    return not calls_loop(events) and not any(text_is_degenerate(text) for text in texts)


def _matches(target: str, event: ToolEvent) -> bool:
    # Targets are gateway names ({server}__{tool}); a bare tool name is accepted too.
    return target == event.name or target == event.tool


def target_tool_share(targets: Sequence[str], events: Sequence[ToolEvent]) -> float | None:
    """Share of the distinct target tools the trajectory used; None without targets."""
    distinct = list(dict.fromkeys(targets))
    if not distinct:
        return None
    used = sum(1 for target in distinct if any(_matches(target, event) for event in events))
    return used / len(distinct)


def target_order_kept(targets: Sequence[str], events: Sequence[ToolEvent]) -> bool | None:
    """Whether the targets occur, in their order, as a subsequence of the calls; None without targets."""
    if not targets:
        return None
    position = 0
    for event in events:
        if position < len(targets) and _matches(targets[position], event):
            position += 1
    return position == len(targets)


def run_checks(*, messages: Sequence[dict[str, Any]], tool_events: Sequence[ToolEvent], final_answer: str | None,
               target_tools: Sequence[str]) -> dict[str, Any]:
    rules = {
        "has_tool_call": has_tool_call(tool_events),
        "has_tool_success": has_tool_success(tool_events),
        "no_agent_error_text": no_agent_error_text(messages, final_answer),
        "has_final_answer": has_final_answer(final_answer),
        "no_repetition": no_repetition(tool_events, messages, final_answer),
    }
    return {**rules, "passed": all(rules.values()),
            "target_tool_share": target_tool_share(target_tools, tool_events),
            "target_order_kept": target_order_kept(target_tools, tool_events)}
