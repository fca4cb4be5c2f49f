"""`simgate filter`: keep the records that pass a preset or an expression over their scores.

An expression sees every rating by its dimension's name (`question_quality`, `completeness`, ...),
the runner's checks (`passed`, `target_tool_share`, `has_final_answer`, ...), `outcome`, `mode` and
the task's `num_tools`; it is evaluated by `simpleeval` (no Python beyond comparisons and arithmetic).
A name a record lacks — a rating the judge never gave — makes the record fail, never pass.
"""

from __future__ import annotations

from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression, NameNotDefined

from simgate.runner.errors import RunnerError
from simgate.runner.pipeline.judge import TASK_FIELD, TRAJECTORY_FIELD, ratings

# The published SFT cut: clear, realistic questions, complete and concise answers, every target tool used.
PRESETS: dict[str, str] = {
    "sft": "question_quality >= 5 and scenario_realism >= 5 and completeness >= 4 and conciseness >= 4 "
           "and target_tool_share == 1",
    "tasks-good": "question_quality >= 4 and scenario_realism >= 4 and verifiable >= 3",
    "rules": "passed",
    # irrelevance tasks (`simgate extend irrelevance`): a correct trajectory answers and calls no tool
    "irrelevance": "has_final_answer and not has_tool_call",
    "complete": "completeness >= 4 and passed",
}


def variables(record: dict[str, Any]) -> dict[str, Any]:
    """A task's or a trajectory's names (a trajectory carries its task's keys in `task_extra`)."""
    task = extra if isinstance(extra := record.get("task_extra"), dict) else record
    names: dict[str, Any] = {}
    names.update(ratings(task.get(TASK_FIELD)))
    names.update(ratings(record.get(TRAJECTORY_FIELD)))
    checks = record.get("checks")
    if isinstance(checks, dict):
        names.update({key: value for key, value in checks.items() if value is not None})
    for key in ("outcome", "mode"):
        if key in record:
            names[key] = record[key]
    metadata = task.get("metadata")
    if isinstance(metadata, dict) and "num_tools" in metadata:
        names["num_tools"] = metadata["num_tools"]
    return names


def compile_filter(expression: str) -> str:
    """The expression of a preset name, or the expression itself; checked once, before any record."""
    text = PRESETS.get(expression, expression).strip()
    if not text:
        raise RunnerError("an empty filter expression")
    evaluator = EvalWithCompoundTypes(names={})
    try:
        evaluator.parse(text)
    except (SyntaxError, InvalidExpression) as exc:
        raise RunnerError(f"filter {expression!r}: {exc}") from None
    return text


def passes(record: dict[str, Any], expression: str) -> tuple[bool, str | None]:
    """(kept, why not) for one record."""
    evaluator = EvalWithCompoundTypes(names=variables(record))
    try:
        return bool(evaluator.eval(expression)), None
    except NameNotDefined as exc:
        return False, f"no {exc.name}"
    except (InvalidExpression, TypeError, ValueError, ZeroDivisionError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
