"""Tasks: what an agent is asked to do. JSONL, one task per line; unknown keys are kept as metadata."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simgate import jsontext
from simgate.runner.errors import TaskFileError


class Task(BaseModel):
    """One task. `servers` limits the tools offered to those servers; `target_tools` are the
    gateway tool names (`{server}__{tool}`) a good trajectory is expected to use, in order."""

    # Extra keys (TOUCAN's `subset_name`, `metadata`, ...) travel with the task.
    model_config = ConfigDict(extra="allow")

    id: str = Field(..., min_length=1)
    question: str = Field(..., min_length=1)
    servers: list[str] | None = None
    target_tools: list[str] = Field(default_factory=list)
    follow_ups: list[str] = Field(default_factory=list, description="user turns asked after the question, each "
                                  "once the previous one is answered (a split question)")

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Numeric ids are common in datasets; they are the same id as their text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("follow_ups")
    @classmethod
    def _no_blank_turn(cls, value: list[str]) -> list[str]:
        if any(not turn.strip() for turn in value):
            raise ValueError("a follow-up must not be blank")
        return value

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "task"
    return f"{where}: {error['msg']}"


def parse_tasks(lines: list[str], source: str = "<tasks>") -> list[Task]:
    """Tasks from JSONL text; blank lines are skipped, a bad line or a repeated id names its line."""
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = jsontext.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{source}:{number}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(raw, dict):
            raise TaskFileError(f"{source}:{number}: a task must be a JSON object, got {type(raw).__name__}")
        try:
            task = Task.model_validate(raw)
        except ValidationError as exc:
            raise TaskFileError(f"{source}:{number}: {_first_error(exc)}") from None
        if task.id in seen:
            raise TaskFileError(f"{source}:{number}: id {task.id!r} repeats the task on line {seen[task.id]}")
        seen[task.id] = number
        tasks.append(task)
    return tasks


def load_tasks(path: Path) -> list[Task]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskFileError(f"{path}: no such tasks file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(f"{path}: cannot be read ({exc})") from None
    tasks = parse_tasks(text.splitlines(), str(path))
    if not tasks:
        raise TaskFileError(f"{path}: no tasks in the file")
    return tasks
