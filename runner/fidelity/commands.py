"""`simgate fidelity trajectories`: run each task k times per mode, then compare the modes' trajectories.

The trajectories go to DIR/trajectories.jsonl (resumable: a rerun only makes the missing ones); the
comparison is `runner.fidelity.report.write_report`, which writes DIR/report.json and DIR/report.html.
The tool calls the non-live runs made are replayed against live (DIR/live_replay.json: the share
still valid).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from simgate.files import atomic_write
from simgate.gateway.cli import command_group
from simgate.gateway.config.execution import RUN_MODES, SIMULATING_RUN_MODES, mode_names
from simgate.runner.commands import agent_arguments, guarded_run, print_summary, settings_from
from simgate.runner.errors import DependencyMissing, RunnerError

TRAJECTORIES = "trajectories.jsonl"
LIVE_REPLAY = "live_replay.json"


def register(commands: Any) -> None:
    group = command_group(commands, "fidelity", "how faithful simulated and replayed runs are to live ones")
    parser = group.add_parser("trajectories", help="run tasks k times per mode and compare whole trajectories")
    parser.add_argument("--tasks", required=True, metavar="FILE", help="tasks, JSONL")
    parser.add_argument("--gateway", required=True, metavar="URL", help="the gateway, e.g. http://127.0.0.1:8808/mcp")
    parser.add_argument("--modes", default="live,simulated",
                        help=f"comma-separated modes among {mode_names(RUN_MODES)} (default live,simulated); "
                             "the first is the reference")
    parser.add_argument("--k", type=int, default=3, help="runs of each task per mode (default 3)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where trajectories.jsonl and the report go")
    parser.add_argument("--holdout", choices=("none", "call", "task"), default="task",
                        help="what the simulator of simulated/hybrid runs is not shown: recorded answers of the task's "
                             "calls (default: task, everything recorded for the task, e.g. by this command's live "
                             "runs), of the call itself (call), or nothing held out (none)")
    parser.add_argument("--no-live-replay", action="store_true",
                        help="do not replay the tool calls of the non-live runs against live (DIR/live_replay.json)")
    agent_arguments(parser)
    parser.set_defaults(handler=guarded_run("fidelity trajectories", _trajectories))


def parse_modes(text: str) -> list[str]:
    modes = [mode.strip() for mode in text.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in RUN_MODES]
    if unknown:
        raise RunnerError(f"--modes: unknown mode(s) {', '.join(unknown)}; known: {mode_names(RUN_MODES)}")
    if len(modes) < 1 or len(set(modes)) != len(modes):
        raise RunnerError("--modes: give one or more distinct modes, e.g. live,simulated")
    return modes


_HELD_OUT = {
    "task": "no recording made for the task (its live runs' answers included), so only other tasks' recordings "
            "of the tool",
    "call": "no recording of the call itself (same tool, same arguments), but other recordings of the tool, "
            "this task's included",
    "none": "every recording of the tool, the call's own answer included (not an evaluation)",
}


def shown_to_simulator(mode: str, holdout: str) -> str:
    """What answered a mode's calls, and what its simulator was shown (for the report)."""
    if mode == "live":
        return "the real servers answered."
    if mode == "replay":
        return "the recordings of the live session of the same task and repeat answered, from its first call."
    where = "the simulator answered" if mode == "simulated" else "the gateway's hybrid order answered"
    history = "the earlier calls of the same trajectory (its own session only)"
    if holdout != "none":
        history += ", without any answer to the simulated call that the simulator did not itself produce"
    return (f"{where}; the simulator was shown the tool's definition, {_HELD_OUT[holdout]}, and {history} "
            f"(hold-out {holdout!r}).")


def merge_results(results: list[Any]) -> Any:
    """The runs of several modes as one result: trajectories in order, the summaries added up."""
    from simgate.runner.run import RunResult, RunSummary

    summary = RunSummary()
    for part in results:
        one = part.summary
        summary.total += one.total
        summary.skipped += one.skipped
        summary.written += one.written
        summary.not_written += one.not_written
        summary.tool_calls += one.tool_calls
        summary.tool_errors += one.tool_errors
        summary.rules_passed += one.rules_passed
        summary.elapsed_s = round(summary.elapsed_s + one.elapsed_s, 3)
        summary.failures = (summary.failures + one.failures)[:5]
        for outcome, count in one.outcomes.items():
            summary.outcomes[outcome] = summary.outcomes.get(outcome, 0) + count
    return RunResult(trajectories=[t for part in results for t in part.trajectories], summary=summary)


def _seed(seed: int | None, repeat: int) -> int | None:
    return None if seed is None else seed + repeat


def load_report_writer() -> Any:
    """`write_report(trajectories_by_mode, out_dir) -> dict`, from the fidelity report module."""
    try:
        module = importlib.import_module("simgate.runner.fidelity.report")
    except ImportError as exc:
        raise DependencyMissing(
            f"the trajectory fidelity report (simgate.runner.fidelity.report) is not available in this installation "
            f"({exc}); the trajectories cannot be compared") from None
    writer = getattr(module, "write_report", None)
    if writer is None:
        raise DependencyMissing("simgate.runner.fidelity.report has no write_report(trajectories_by_mode, out_dir)")
    return writer


def _trajectories(args: argparse.Namespace) -> int:
    import anyio

    from simgate.runner.preflight import preflight
    from simgate.runner.run import Job, execute
    from simgate.runner.tasks import load_tasks

    modes = parse_modes(args.modes)
    if args.k < 1:
        raise RunnerError("--k: must be at least 1")
    write_report = load_report_writer()  # before hours of runs, not after
    tasks = load_tasks(Path(args.tasks))
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunnerError(f"--out: {out_dir} is not a directory")
    # Session ids name the run and the mode ({prefix}{run}/{mode}/{task}#{repeat}); a replay names the
    # live session of the same task and repeat, which the gateway replays from its first position. The
    # simulator of a simulated (or hybrid) run is evaluated, so what was recorded for the task is held out.
    holdout = {mode: args.holdout if mode in SIMULATING_RUN_MODES else "none" for mode in modes}
    settings = {mode: settings_from(args, mode, holdout=holdout[mode]) for mode in modes}
    # Each repeat samples with its own seed: above temperature 0 the k repeats are then real samples
    # (at temperature 0 they are copies, and the report says its CIs are degenerate).
    jobs = {mode: [Job(task=task, settings=settings[mode].model_copy(update={"repeat": repeat,
                                                                              "seed": _seed(args.seed, repeat)}))
                   for repeat in range(args.k) for task in tasks] for mode in modes}
    concurrency = settings[modes[0]].concurrency
    shown = {mode: shown_to_simulator(mode, holdout[mode]) for mode in modes}

    live_replay = not args.no_live_replay and any(mode != "live" for mode in modes)

    async def main() -> Any:
        for mode in modes:
            await preflight(settings[mode])
        # One mode after the other: a replay needs its live session recorded first.
        results = [await execute(jobs[mode], out_dir / TRAJECTORIES, concurrency=concurrency,
                                 progress=not args.no_progress) for mode in modes]
        result = merge_results(results)
        replay = None
        if live_replay:
            from simgate.runner.fidelity.live_replay import replay_against_live

            replay = await replay_against_live(result.trajectories, settings[modes[0]].gateway,
                                               session_prefix=f"{args.session_prefix}live-replay/")
        return result, replay

    result, replay = anyio.run(main)
    print_summary(result.summary, out_dir / TRAJECTORIES)
    if replay is not None:
        atomic_write(out_dir / LIVE_REPLAY, replay.model_dump_json(indent=2).encode())
        share = "n/a" if replay.share_valid is None else f"{replay.share_valid:.1%}"
        print(f"live replay of the non-live runs' tool calls: {replay.valid}/{replay.calls} still valid ({share}); "
              f"{out_dir / LIVE_REPLAY}")
    by_mode: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for trajectory in result.trajectories:
        by_mode[trajectory.mode].append(trajectory.model_dump(mode="json"))
    if replay is not None:
        from simgate.runner.fidelity.live_replay import replays_by_trajectory

        report = write_report(by_mode, out_dir, replays=replays_by_trajectory(replay), shown=shown)
    else:
        report = write_report(by_mode, out_dir, shown=shown)
    print(f"report: {out_dir / 'report.json'}, {out_dir / 'report.html'}")
    for mode, summary in (report.get("modes") or {}).items():
        rate = summary.get("success_rate")
        print(f"  {mode}: {summary.get('trajectories')} trajectories, success rate "
              f"{'n/a' if rate is None else f'{rate:.1%}'}")
    return 0 if result.summary.not_written == 0 else 1
