"""Run tasks: each trajectory in its own gateway session, bounded concurrency, every finished
trajectory appended to the output at once, a summary at the end.

A trajectory whose gateway or LLM could not be reached is not written (it says nothing about the
agent), so running the same command again retries it; every other trajectory is written, with its
outcome (`final_answer`, `max_turns`, `timeout`, `error`), and skipped by the next run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from simgate.runner.agents import Draft, build_agent
from simgate.runner.checks import run_checks
from simgate.runner.conversation import close_turns, converse
from simgate.runner.errors import GatewayUnreachable, LLMUnreachable, RunnerError
from simgate.runner.mcp_tools import gateway_session
from simgate.runner.output import DoneKey, JsonlWriter, done_key
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task
from simgate.runner.trajectory import OUTCOMES, AgentInfo, Trajectory, utc_now


class Job(BaseModel):
    """One trajectory to make: a task under settings (mode and repeat included)."""

    task: Task
    settings: RunSettings

    @property
    def key(self) -> DoneKey:
        return (self.task.id, self.settings.mode, self.settings.repeat)


class RunSummary(BaseModel):
    total: int = 0
    skipped: int = Field(default=0, description="already in the output file")
    written: int = 0
    not_written: int = Field(default=0, description="gateway or LLM unreachable: retried by the next run")
    outcomes: dict[str, int] = Field(default_factory=dict)
    tool_calls: int = 0
    tool_errors: int = 0
    rules_passed: int = 0
    elapsed_s: float = 0.0
    failures: list[str] = Field(default_factory=list, description="why trajectories were not written (first few)")

    @property
    def per_minute(self) -> float:
        return self.written / self.elapsed_s * 60 if self.elapsed_s > 0 else 0.0


class RunResult(BaseModel):
    trajectories: list[Trajectory]
    summary: RunSummary


JobRunner = Callable[[Job], Awaitable[Trajectory]]


class Unreachable(Exception):
    """The gateway or the LLM could not be reached: the trajectory is not written (a later run retries it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _leaf(exc: BaseException) -> BaseException:
    """anyio task groups (the MCP client's) wrap an error raised in their body in a group."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_one(task: Task, settings: RunSettings) -> Trajectory:
    """One trajectory. Raises `Unreachable` when the gateway or the LLM cannot be reached."""
    agent = build_agent(settings)
    session = settings.session_id(task.id, settings.repeat)
    draft = Draft()
    with anyio.move_on_after(settings.task_timeout) as scope:
        try:
            async with gateway_session(settings.gateway, mode=settings.mode, session=session,
                                       servers=task.servers, timeout=settings.task_timeout, task=task.id,
                                       holdout=settings.holdout) as gateway:
                if task.servers and not gateway.tools:
                    # A gateway set-up problem, not the agent's: not written, so a fixed gateway retries it.
                    raise GatewayUnreachable(f"the gateway offers no tool of the task's server(s) "
                                             f"{', '.join(task.servers)}")
                await converse(agent, task, gateway, draft, settings)
        except Exception as exc:  # noqa: BLE001  (sorted below; a trajectory never takes the run down)
            leaf = _leaf(exc)
            if isinstance(leaf, GatewayUnreachable | LLMUnreachable) and draft.outcome is None:
                raise Unreachable(str(leaf)) from None
            if draft.outcome is None:  # else the agent had finished: a failure closing the session changes nothing
                draft.outcome = "error"
                draft.error = str(leaf) if isinstance(leaf, RunnerError) else f"{type(leaf).__name__}: {leaf}"
    if scope.cancelled_caught and draft.outcome is None:
        draft.outcome, draft.error = "timeout", f"the trajectory took longer than {settings.task_timeout:g}s"
    return _trajectory(task, settings, session, draft)


def failed_trajectory(job: Job, error: str) -> Trajectory:
    """The row of a trajectory that could not be made at all (e.g. its Ray worker died every attempt):
    written like any trajectory that ended in an error, so the next run skips it."""
    settings = job.settings
    return _trajectory(job.task, settings, settings.session_id(job.task.id, settings.repeat),
                       Draft(outcome="error", error=error))


def _trajectory(task: Task, settings: RunSettings, session: str, draft: Draft) -> Trajectory:
    outcome = draft.outcome or "error"
    final_answer = draft.final_answer if outcome == "final_answer" else None
    return Trajectory(
        id=task.id, question=task.question, mode=settings.mode, repeat=settings.repeat, session=session,
        messages=draft.messages, tools=draft.tools, target_tools=list(task.target_tools),
        tool_events=draft.tool_events, final_answer=final_answer, outcome=outcome, error=draft.error,
        usage=draft.usage,
        checks=run_checks(messages=draft.messages, tool_events=draft.tool_events, final_answer=final_answer,
                          target_tools=task.target_tools),
        agent=AgentInfo(kind=settings.agent, model=settings.model, temperature=settings.temperature,
                        seed=settings.seed, max_turns=settings.max_turns),
        created_at=utc_now(), turns=close_turns(draft, outcome), conversation_end=draft.conversation_end,
        task_extra=task.extra)


def _progress(enabled: bool, total: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("[bold]trajectories"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[last]}"), console=Console(stderr=True), disable=not enabled,
                        transient=False)
    return progress


async def _run_locally(job: Job) -> Trajectory:
    return await run_one(job.task, job.settings)


async def execute(jobs: list[Job], out: Path | None, *, concurrency: int = 1, progress: bool = True,
                  keep_done: bool = True, runner: JobRunner = _run_locally) -> RunResult:
    """Run the jobs not already in `out`; return every job's trajectory (earlier ones read back from
    `out`, unless `keep_done` is false: a large file need not be held in memory) in job order, and
    the summary of this run. `runner` makes one job's trajectory: here by default, or elsewhere (on a
    Ray cluster, runner/distributed.py) with `run_one` all the same; `concurrency` bounds the jobs in
    its hands at once."""
    summary = RunSummary(total=len(jobs))
    writer = JsonlWriter(out) if out is not None else None
    done: dict[DoneKey, Trajectory | None] = {}
    if writer is not None:
        wanted = {job.key for job in jobs}
        try:
            for record in writer.open():
                if done_key(record) in wanted:
                    done[done_key(record)] = Trajectory.model_validate(record) if keep_done else None
        except BaseException:
            writer.close()
            raise
    todo = [job for job in jobs if job.key not in done]
    summary.skipped = len(jobs) - len(todo)
    made: dict[DoneKey, Trajectory] = {}
    limit = anyio.Semaphore(concurrency)
    started = time.monotonic()
    bar = _progress(progress, len(todo))

    async def work(job: Job, bar_task: Any) -> None:
        async with limit:
            try:
                trajectory = await runner(job)
            except Unreachable as exc:
                summary.not_written += 1
                if len(summary.failures) < 5:
                    summary.failures.append(f"{job.task.id}: {exc.message}")
                bar.update(bar_task, advance=1, last=f"{job.task.id}: not written")
                return
            if writer is not None:
                await writer.write(trajectory)
            made[job.key] = trajectory
            summary.written += 1
            bar.update(bar_task, advance=1, last=f"{job.task.id}: {trajectory.outcome}")

    try:
        with bar:
            bar_task = bar.add_task("run", total=len(todo), last="")
            async with anyio.create_task_group() as group:
                for job in todo:
                    group.start_soon(work, job, bar_task)
    finally:
        if writer is not None:
            writer.close()
    summary.elapsed_s = round(time.monotonic() - started, 3)
    counts: Counter[str] = Counter(t.outcome for t in made.values())
    summary.outcomes = {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}
    summary.tool_calls = sum(len(t.tool_events) for t in made.values())
    summary.tool_errors = sum(1 for t in made.values() for e in t.tool_events if e.is_error)
    summary.rules_passed = sum(1 for t in made.values() if t.checks.get("passed"))
    ordered = [made.get(job.key) or done.get(job.key) for job in jobs]
    return RunResult(trajectories=[t for t in ordered if t is not None], summary=summary)


async def run_tasks(tasks: list[Task], settings: RunSettings, out: Path | None) -> list[Trajectory]:
    """The programmatic API: each task once under `settings`; trajectories in task order (those
    already in `out` are read back, not run again)."""
    jobs = [Job(task=task, settings=settings) for task in tasks]
    result = await execute(jobs, out, concurrency=settings.concurrency, progress=settings.progress)
    return result.trajectories
