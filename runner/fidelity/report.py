"""The trajectory-level fidelity report: report.json (pydantic) and report.html (the shared renderer)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean
from typing import Any

from pydantic import BaseModel, Field

from simgate.html import BarChart, Section, Table, render_html
from simgate.runner.fidelity.trajectory_metrics import (
    BOOTSTRAP_SAMPLES,
    Gap,
    PairSummary,
    cross_pairs,
    repeat_pairs,
    replay_validity,
    success,
    success_rate,
    success_rate_gap,
    summarize,
    task_key,
    tool_calls,
)

REPORT_VERSION = 1
_PAIR_METRICS = ("f1_name", "f1_name_args", "answer_exact", "answer_f1", "success_agreement")
_PAIR_LABELS = {"f1_name": "tool-call F1 (name)", "f1_name_args": "tool-call F1 (name+args)",
                "answer_exact": "final answer exact", "answer_f1": "final answer token F1",
                "success_agreement": "success agreement", "sequence_similarity": "1 − norm. edit distance"}


class RepeatSummary(BaseModel):
    """Whether a mode's k repeats of a task are real samples or copies of one run."""

    tasks_repeated: int = Field(..., description="tasks run at least twice")
    tasks_all_identical: int = Field(..., description="of those, tasks whose repeats made the same calls and answer")
    temperatures: list[float] = Field(default_factory=list, description="the agent's sampling temperatures")
    seeds: list[int | None] = Field(default_factory=list, description="the agent's seeds, over the repeats")

    @property
    def copies(self) -> bool:
        return self.tasks_repeated > 0 and self.tasks_all_identical == self.tasks_repeated


class ModeSummary(BaseModel):
    trajectories: int
    tasks: int
    success_rate: float | None
    outcomes: dict[str, int]
    mean_tool_calls: float | None
    repeats: RepeatSummary | None = None


class ReplaySummary(BaseModel):
    trajectories: int = Field(..., description="trajectories with at least one tool call and their replays given")
    mean_validity: float | None = Field(None, description="mean per-trajectory share of calls still valid live")
    calls: int = 0
    valid_calls: int = 0


class ModeComparison(BaseModel):
    mode: str
    against: str
    gap: Gap | None = Field(None, description="success rate of `mode` minus that of `against`, 95% bootstrap CI")
    pairs: PairSummary
    live_vs_live: PairSummary | None = Field(None, description="the same metrics between live repeats (k ≥ 2)")
    live_vs_live_gap: Gap | None = Field(None, description="success-rate gap between live repeats 0 and 1")
    replay: ReplaySummary | None = None
    degenerate: list[str] = Field(default_factory=list,
                                  description="why a CI here is degenerate (zero width) or the floor measures no noise")


class TrajectoryFidelityReport(BaseModel):
    version: int = REPORT_VERSION
    created_at: str
    baseline: str
    modes: dict[str, ModeSummary]
    comparisons: list[ModeComparison]
    bootstrap_samples: int
    seed: int
    shown: dict[str, str] = Field(default_factory=dict,
                                  description="per mode: what answered the calls and what the simulator was shown")


def _signature(trajectory: dict[str, Any]) -> tuple[Any, ...]:
    return (tuple(tool_calls(trajectory)), trajectory.get("final_answer"), success(trajectory))


def repeat_summary(trajectories: list[dict[str, Any]]) -> RepeatSummary:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for t in trajectories:
        by_task.setdefault(str(t.get("id")), []).append(t)
    repeated = [runs for runs in by_task.values() if len(runs) >= 2]
    identical = sum(1 for runs in repeated if len({_signature(t) for t in runs}) == 1)
    agents: list[dict[str, Any]] = [agent if isinstance(agent := t.get("agent"), dict) else {} for t in trajectories]
    temperatures = sorted({float(a["temperature"]) for a in agents if a.get("temperature") is not None})
    seeds = sorted({a.get("seed") for a in agents}, key=lambda s: (s is None, s or 0))
    return RepeatSummary(tasks_repeated=len(repeated), tasks_all_identical=identical, temperatures=temperatures,
                         seeds=seeds)


def _summary(trajectories: list[dict[str, Any]]) -> ModeSummary:
    return ModeSummary(trajectories=len(trajectories), tasks=len({str(t.get("id")) for t in trajectories}),
                       success_rate=success_rate(trajectories),
                       outcomes=dict(Counter(str(t.get("outcome")) for t in trajectories)),
                       mean_tool_calls=fmean(len(t.get("tool_events") or []) for t in trajectories)
                       if trajectories else None, repeats=repeat_summary(trajectories))


def _why_copies(mode: str, repeats: RepeatSummary) -> str:
    temperature = ", ".join(f"{t:g}" for t in repeats.temperatures) or "unknown"
    seeds = "one seed for every repeat" if len(repeats.seeds) <= 1 else "a seed per repeat"
    return (f"{mode}: the repeats of all {repeats.tasks_repeated} repeated task(s) are identical (same tool calls, "
            f"answer and success): at temperature {temperature} with {seeds} the agent is deterministic, and the "
            "simulator (temperature 0, memoized) gives the same answer to the same call, so repeats add no "
            "variance. Run with --temperature above 0 (each repeat then gets seed + repeat, and the simulator "
            "samples per session) for real repeats")


def degenerate_reasons(gap: Gap | None, floor_gap: Gap | None, modes: dict[str, ModeSummary],
                       compared: tuple[str, str]) -> list[str]:
    """Say when a CI has zero width or the live-vs-live floor compares copies, and why."""
    reasons: list[str] = []
    copies = [m for m in compared if (summary := modes.get(m)) is not None and summary.repeats is not None
              and summary.repeats.copies]
    for mode in copies:
        summary = modes[mode]
        assert summary.repeats is not None
        reasons.append(_why_copies(mode, summary.repeats))
    if gap is not None and gap.ci_low == gap.ci_high:
        reasons.append(f"the success-rate gap's CI [{gap.ci_low:g}, {gap.ci_high:g}] is degenerate: every "
                       "resample of tasks gives the same gap" + (" (identical repeats, above)" if copies else ""))
    if floor_gap is not None and floor_gap.ci_low == floor_gap.ci_high:
        reasons.append(f"the live-vs-live gap's CI [{floor_gap.ci_low:g}, {floor_gap.ci_high:g}] is degenerate: "
                       "live repeats 0 and 1 agree on every task, so this floor measures no run-to-run noise")
    return reasons


def _replay(trajectories: list[dict[str, Any]], replays: dict[str, list[dict[str, Any]]]) -> ReplaySummary | None:
    scored = []
    calls = valid = 0
    for t in trajectories:
        # Keyed `mode:id#repeat` when several non-baseline modes were replayed, else `id#repeat`.
        found = replays.get(f"{t.get('mode')}:{task_key(t)}", replays.get(task_key(t)))
        if found is None:
            continue
        share = replay_validity(t, found)
        if share is None:
            continue
        scored.append(share)
        n = len(t.get("tool_events") or [])
        calls += n
        valid += round(share * n)
    if not scored and not replays:
        return None
    return ReplaySummary(trajectories=len(scored), mean_validity=fmean(scored) if scored else None, calls=calls,
                         valid_calls=valid)


def build_report(trajectories_by_mode: dict[str, list[dict[str, Any]]], *,
                 replays: dict[str, list[dict[str, Any]]] | None = None, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0, shown: dict[str, str] | None = None) -> TrajectoryFidelityReport:
    """Compare every mode with the baseline (`live` when present, else the first mode)."""
    if not trajectories_by_mode or not any(trajectories_by_mode.values()):
        raise ValueError("no trajectories to compare")
    baseline = "live" if "live" in trajectories_by_mode else next(iter(trajectories_by_mode))
    reference = trajectories_by_mode[baseline]
    live = trajectories_by_mode.get("live", [])
    floor = summarize(repeat_pairs(live)) if live else None
    floor = floor if floor is not None and floor.pairs else None
    first = [t for t in live if int(t.get("repeat") or 0) == 0]
    second = [t for t in live if int(t.get("repeat") or 0) == 1]
    floor_gap = success_rate_gap(first, second, samples=samples, seed=seed) if first and second else None
    summaries = {mode: _summary(ts) for mode, ts in trajectories_by_mode.items()}
    comparisons = []
    for mode, trajectories in trajectories_by_mode.items():
        if mode == baseline:
            continue
        gap = success_rate_gap(reference, trajectories, samples=samples, seed=seed) \
            if reference and trajectories else None
        comparisons.append(ModeComparison(
            mode=mode, against=baseline, gap=gap, pairs=summarize(cross_pairs(reference, trajectories)),
            live_vs_live=floor, live_vs_live_gap=floor_gap,
            replay=_replay(trajectories, replays) if replays is not None else None,
            degenerate=degenerate_reasons(gap, floor_gap, summaries, (baseline, mode))))
    return TrajectoryFidelityReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), baseline=baseline,
        modes=summaries, comparisons=comparisons, bootstrap_samples=samples, seed=seed, shown=dict(shown or {}))


def _pair_values(summary: PairSummary | None) -> list[float | None]:
    if summary is None or not summary.pairs:
        return [None] * (len(_PAIR_METRICS) + 1)
    similarity = None if summary.normalized_edit_distance is None else 1 - summary.normalized_edit_distance
    return [getattr(summary, name) for name in _PAIR_METRICS] + [similarity]


def render_report(report: TrajectoryFidelityReport) -> str:
    modes = list(report.modes)
    sections = [Section(
        heading="Modes",
        notes=[(f"Baseline: {report.baseline}. A trajectory succeeds when it ends in a final answer and its checks "
                f"pass. Success-rate gaps carry a {report.bootstrap_samples}-sample task-level bootstrap 95% CI "
                f"(seed {report.seed})."), *(f"{mode}: {text}" for mode, text in report.shown.items())],
        charts=[BarChart(title="Success rate per mode", categories=modes,
                         series={"success rate": [report.modes[m].success_rate for m in modes]}, max_value=1.0)],
        tables=[Table(title="Per mode", columns=["mode", "trajectories", "tasks", "success rate", "mean tool calls",
                                                 "outcomes", "repeated tasks", "all repeats identical"],
                      rows=[[m, s.trajectories, s.tasks, s.success_rate, s.mean_tool_calls,
                             ", ".join(f"{k}: {v}" for k, v in sorted(s.outcomes.items())),
                             s.repeats.tasks_repeated if s.repeats else None,
                             s.repeats.tasks_all_identical if s.repeats else None]
                            for m, s in report.modes.items()])])]
    labels = [_PAIR_LABELS[n] for n in (*_PAIR_METRICS, "sequence_similarity")]
    for c in report.comparisons:
        series = {f"{c.mode} vs {c.against}": _pair_values(c.pairs)}
        if c.live_vs_live is not None:
            series["live vs live"] = _pair_values(c.live_vs_live)
        rows: list[list[Any]] = []
        for _name, label in zip((*_PAIR_METRICS, "sequence_similarity"), labels, strict=True):
            index = labels.index(label)
            rows.append([label, _pair_values(c.pairs)[index], _pair_values(c.live_vs_live)[index]])
        rows += [["mean edit distance", c.pairs.edit_distance, c.live_vs_live.edit_distance if c.live_vs_live else None],
                 ["share of pairs diverging", c.pairs.diverged, c.live_vs_live.diverged if c.live_vs_live else None],
                 ["mean first divergence step", c.pairs.first_divergence,
                  c.live_vs_live.first_divergence if c.live_vs_live else None],
                 ["pairs", c.pairs.pairs, c.live_vs_live.pairs if c.live_vs_live else None]]
        gap_rows = []
        if c.gap is not None:
            gap_rows.append([f"{c.mode} − {c.against}", c.gap.rate_b, c.gap.rate_a, c.gap.gap, c.gap.ci_low,
                             c.gap.ci_high])
        if c.live_vs_live_gap is not None:
            g = c.live_vs_live_gap
            gap_rows.append(["live repeat 1 − repeat 0", g.rate_b, g.rate_a, g.gap, g.ci_low, g.ci_high])
        tables = [Table(title="Success-rate gap", columns=["compared", "rate", "baseline rate", "gap", "CI low",
                                                           "CI high"], rows=gap_rows),
                  Table(title="Pairwise metrics (same task, same repeat)",
                        columns=["metric", f"{c.mode} vs {c.against}", "live vs live"], rows=rows)]
        if c.replay is not None:
            tables.append(Table(title="Replay of the simulated run's tool calls against live",
                                columns=["trajectories", "calls", "still valid", "mean share valid"],
                                rows=[[c.replay.trajectories, c.replay.calls, c.replay.valid_calls,
                                       c.replay.mean_validity]]))
        sections.append(Section(heading=f"{c.mode} against {c.against}",
                                notes=[f"Degenerate: {reason}." for reason in c.degenerate],
                                charts=[BarChart(title=f"{c.mode} vs {c.against}, beside live vs live (1 = same)",
                                                 categories=labels, series=series, max_value=1.0)],
                                tables=tables))
    return render_html("simgate: trajectory-level fidelity", f"created {report.created_at}", sections)


def write_report(trajectories_by_mode: dict[str, list[dict[str, Any]]], out_dir: Path, *,
                 replays: dict[str, list[dict[str, Any]]] | None = None, samples: int = BOOTSTRAP_SAMPLES,
                 seed: int = 0, shown: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `report.json` and `report.html` into `out_dir`; return the report as a dict.

    `replays` (optional): live re-executions of non-baseline trajectories' tool calls, keyed by
    `mode:id#repeat` (or `task_key(trajectory)`, `id#repeat`, when one mode is compared), each a list of `{"call_id", "is_error"}` (see `replay_validity`)."""
    report = build_report(trajectories_by_mode, replays=replays, samples=samples, seed=seed, shown=shown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")
    (out_dir / "report.html").write_text(render_report(report), encoding="utf-8")
    return report.model_dump(mode="json")
