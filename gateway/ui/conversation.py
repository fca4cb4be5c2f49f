"""A trajectory (one line of `simgate run`'s JSONL, as a dict) as the page reads it: a conversation whose
tool calls carry their provenance, and two trajectories of one task side by side with the step where
their tool calls first part (the same measure as the trajectory fidelity report's first divergence)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from simgate.sequences import first_divergence, tool_calls

_EVENT_FIELDS = ("step", "call_id", "name", "server", "tool", "arguments", "source", "cache_key", "latency_ms",
                 "is_error")


class NotATrajectory(ValueError):
    """A JSONL line that is not a trajectory object."""


def _text(content: Any) -> str | None:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") if isinstance(part, dict) else str(part) for part in content]
        return "\n".join(p for p in parts if p)
    return json.dumps(content, ensure_ascii=False)


def _call_id(value: Any) -> str | None:
    """A call id as a lookup key: a file may hold anything there (a list, an object), which never pairs."""
    return value if isinstance(value, str) else None


def check(trajectory: Any) -> dict[str, Any]:
    if not isinstance(trajectory, dict):
        raise NotATrajectory("not a JSON object")
    if not isinstance(trajectory.get("messages"), list):
        raise NotATrajectory("no 'messages' list: not a trajectory of `simgate run`")
    events = trajectory.get("tool_events", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise NotATrajectory("'tool_events' must be a list of objects")
    return trajectory


def summary(trajectory: dict[str, Any], index: int) -> dict[str, Any]:
    answer = trajectory.get("final_answer")
    return {"index": index, "id": trajectory.get("id"), "mode": trajectory.get("mode"),
            "repeat": trajectory.get("repeat", 0), "session": trajectory.get("session"),
            "question": trajectory.get("question"), "outcome": trajectory.get("outcome"),
            "tool_calls": len(trajectory.get("tool_events") or []),
            "final_answer": answer[:200] if isinstance(answer, str) else answer}


def conversation(trajectory: dict[str, Any]) -> dict[str, Any]:
    """The trajectory's messages as turns; each tool call and tool answer points at its event (`call`: the
    0-based place in the call sequence), which says where the answer came from (live, cache, simulator)."""
    check(trajectory)
    events = trajectory.get("tool_events") or []
    calls = [{"index": k, **{name: event.get(name) for name in _EVENT_FIELDS}} for k, event in enumerate(events)]
    ids = [_call_id(event.get("call_id")) for event in events]
    counts = Counter(ids)  # not ids.count() per id: quadratic in a file's (maybe huge) list of calls
    by_id: dict[str | None, int] = {cid: k for k, cid in enumerate(ids) if cid and counts[cid] == 1}
    turns: list[dict[str, Any]] = []
    answered = 0  # tool messages seen: without usable ids, the k-th tool message answers the k-th call
    asked = 0
    for index, message in enumerate(trajectory["messages"]):
        if not isinstance(message, dict):
            continue
        turn: dict[str, Any] = {"index": index, "role": message.get("role"), "content": _text(message.get("content"))}
        if isinstance(message.get("tool_calls"), list):
            shown = []
            for tool_call in message["tool_calls"]:
                tool_call = tool_call if isinstance(tool_call, dict) else {}
                function: dict[str, Any] = tool_call["function"] if isinstance(tool_call.get("function"), dict) else {}
                k = by_id.get(_call_id(tool_call.get("id")), asked if not by_id and asked < len(events) else None)
                asked += 1
                shown.append({"id": tool_call.get("id"), "name": function.get("name"),
                              "arguments": function.get("arguments"), "call": k})
            turn["tool_calls"] = shown
        if message.get("role") == "tool":
            cid = message.get("tool_call_id")
            turn["tool_call_id"] = cid
            turn["call"] = by_id.get(_call_id(cid), answered if not by_id and answered < len(events) else None)
            answered += 1
        turns.append(turn)
    return {"id": trajectory.get("id"), "mode": trajectory.get("mode"), "repeat": trajectory.get("repeat", 0),
            "session": trajectory.get("session"), "question": trajectory.get("question"),
            "outcome": trajectory.get("outcome"), "final_answer": trajectory.get("final_answer"),
            "error": trajectory.get("error"), "created_at": trajectory.get("created_at"),
            "target_tools": trajectory.get("target_tools") or [], "checks": trajectory.get("checks"),
            "agent": trajectory.get("agent"), "calls": calls, "turns": turns}


def _turn_of_call(view: dict[str, Any], call: int) -> int | None:
    for turn in view["turns"]:
        if any(shown.get("call") == call for shown in turn.get("tool_calls") or []):
            return int(turn["index"])
    return None


def _end_turn(view: dict[str, Any]) -> int | None:
    """Where a trajectory that made fewer calls ends: its last assistant turn (the final answer)."""
    for turn in reversed(view["turns"]):
        if turn["role"] == "assistant":
            return int(turn["index"])
    return view["turns"][-1]["index"] if view["turns"] else None


def side_by_side(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Both conversations and their first divergence: the first step (0-based tool call) at which the tool
    or its arguments differ, or where the one with fewer calls stops; None when the calls are the same."""
    a, b = tool_calls(check(left)), tool_calls(check(right))
    step = first_divergence(a, b)
    views = {"left": conversation(left), "right": conversation(right)}
    divergence = None
    if step is not None:
        if step >= len(a) or step >= len(b):
            reason = "left stops calling tools" if step >= len(a) else "right stops calling tools"
        elif a[step][0] != b[step][0]:
            reason = "a different tool"
        else:
            reason = "different arguments"
        divergence = {"step": step, "reason": reason,
                      **{side: {"call": step if step < len(seq) else None,
                                "turn": _turn_of_call(views[side], step) if step < len(seq) else _end_turn(views[side])}
                         for side, seq in (("left", a), ("right", b))}}
    return {**views, "same_task": left.get("id") == right.get("id"), "first_divergence": step,
            "divergence": divergence, "calls": {"left": len(a), "right": len(b)}}
