"""Trajectory-level fidelity metrics on constructed trajectories with known answers, and the report
(JSON + HTML rendered in headless Chromium)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from fidelity_support import assert_rendered, render_in_chromium

from simgate.runner.fidelity import trajectory_metrics as tm
from simgate.runner.fidelity.report import TrajectoryFidelityReport, write_report


def event(step: int, name: str, arguments: dict[str, Any] | None = None, *, is_error: bool = False) -> dict[str, Any]:
    server, tool = name.split("__")
    return {"step": step, "call_id": f"call_{step}", "name": name, "server": server, "tool": tool,
            "arguments": arguments or {}, "source": "live", "cache_key": "k" * 64, "latency_ms": 3.0,
            "is_error": is_error}


def trajectory(task: str, calls: list[tuple[str, dict[str, Any]]], answer: str | None, *, mode: str = "live",
               repeat: int = 0, passed: bool = True, outcome: str = "final_answer") -> dict[str, Any]:
    return {"id": task, "question": f"question {task}", "mode": mode, "repeat": repeat, "messages": [], "tools": [],
            "target_tools": [], "tool_events": [event(i, n, a) for i, (n, a) in enumerate(calls)],
            "final_answer": answer, "outcome": outcome, "error": None, "usage": {}, "checks": {"passed": passed},
            "agent": "test", "created_at": "2026-11-24T00:00:00Z"}


A = ("calc__add", {"a": 1, "b": 2})
B = ("files__read", {"path": "/x"})
C = ("calc__mul", {"a": 3, "b": 4})
D = ("files__write", {"path": "/y", "text": "hi"})


def test_success_is_one_definition() -> None:
    assert tm.success(trajectory("t", [A], "3"))
    assert not tm.success(trajectory("t", [A], "3", passed=False))
    assert not tm.success(trajectory("t", [A], None, outcome="max_turns"))
    assert not tm.success({"outcome": "final_answer", "checks": {}})


def test_edit_distance_and_first_divergence() -> None:
    x = trajectory("t", [A, B, C], "ok")
    same = trajectory("t", [A, B, C], "ok", mode="simulated")
    swapped = trajectory("t", [A, C, B], "ok", mode="simulated")
    shorter = trajectory("t", [A, B], "ok", mode="simulated")
    other_args = trajectory("t", [A, ("files__read", {"path": "/z"}), C], "ok", mode="simulated")
    calls = tm.tool_calls
    assert tm.edit_distance(calls(x), calls(same)) == 0 and tm.first_divergence(calls(x), calls(same)) is None
    assert tm.edit_distance(calls(x), calls(swapped)) == 2 and tm.first_divergence(calls(x), calls(swapped)) == 1
    assert tm.edit_distance(calls(x), calls(shorter)) == 1 and tm.first_divergence(calls(x), calls(shorter)) == 2
    assert tm.edit_distance(calls(x), calls(other_args)) == 1 and tm.first_divergence(calls(x), calls(other_args)) == 1
    assert tm.edit_distance(tm.tool_names(x), tm.tool_names(other_args)) == 0  # by name alone they agree
    assert tm.normalized_edit_distance(calls(x), []) == 1.0 and tm.normalized_edit_distance([], []) == 0.0
    assert tm.first_divergence([], calls(x)) == 0


def test_tool_call_f1_by_name_and_by_arguments() -> None:
    reference = trajectory("t", [A, B, C], "ok")
    predicted = trajectory("t", [A, ("files__read", {"path": "/z"}), D], "ok", mode="simulated")
    # names: {add, read, mul} vs {add, read, write}: 2 common of 3 and 3 -> F1 2/3
    assert tm.tool_call_f1(predicted, reference, with_arguments=False) == pytest.approx(2 / 3)
    # with arguments only `add` is common: P = R = 1/3
    assert tm.tool_call_f1(predicted, reference, with_arguments=True) == pytest.approx(1 / 3)
    twice = trajectory("t", [A, A], "ok")
    assert tm.tool_call_f1(twice, trajectory("t", [A], "ok"), with_arguments=True) == pytest.approx(2 / 3)  # P ½, R 1
    assert tm.tool_call_f1(trajectory("t", [], "x"), trajectory("t", [], "x"), with_arguments=True) == 1.0
    # Argument key order never matters.
    assert tm.tool_call_f1(trajectory("t", [("calc__add", {"b": 2, "a": 1})], "3"), reference,
                           with_arguments=True) == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))


def test_final_answer_agreement() -> None:
    assert tm.answer_exact("The answer is 42.", "the answer is 42")
    assert not tm.answer_exact("42", "43")
    # "total is 10 apples" vs "total 10 pears": 2 common tokens, P 2/4, R 2/3 -> F1 4/7
    assert tm.answer_token_f1("the total is 10 apples", "total: 10 pears") == pytest.approx(4 / 7)
    assert tm.answer_token_f1("x", None) == 0.0


def test_missing_final_answers_do_not_agree() -> None:
    """Two runs that both gave no final answer did not agree on one."""
    assert not tm.answer_exact(None, None) and not tm.answer_exact("", "  ") and not tm.answer_exact(None, "")
    assert tm.answer_token_f1(None, None) == 0.0 and tm.answer_token_f1(None, "") == 0.0
    a = trajectory("t", [A], None, outcome="max_turns", passed=False)
    b = trajectory("t", [A], None, outcome="max_turns", passed=False, mode="simulated")
    score = tm.compare(a, b)
    assert not score.answer_exact and score.answer_f1 == 0.0


def test_pairs_and_live_vs_live() -> None:
    live = [trajectory("t1", [A, B], "3", repeat=0), trajectory("t1", [A, B], "3", repeat=1),
            trajectory("t1", [A, C], "4", repeat=2), trajectory("t2", [D], "done", repeat=0)]
    assert len(tm.repeat_pairs(live)) == 3  # t1: (0,1), (0,2), (1,2); t2 alone
    floor = tm.summarize(tm.repeat_pairs(live))
    assert floor.pairs == 3 and floor.diverged == pytest.approx(2 / 3) and floor.first_divergence == 1.0
    assert floor.answer_exact == pytest.approx(1 / 3)
    simulated = [trajectory("t1", [A, B], "3", mode="simulated", repeat=0),
                 trajectory("t2", [B], "done", mode="simulated", repeat=0)]
    pairs = tm.cross_pairs(live, simulated)
    assert [(a["id"], a["repeat"], b["repeat"]) for a, b in pairs] == [("t1", 0, 0), ("t2", 0, 0)]
    summary = tm.summarize(pairs)
    assert summary.edit_distance == 0.5 and summary.f1_name == 0.5 and summary.answer_exact == 1.0


def _population(rate: float, n: int, mode: str, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [trajectory(f"t{i}", [A], "x", mode=mode, passed=rng.random() < rate) for i in range(n)]


def test_success_rate_gap_bootstrap() -> None:
    live = _population(0.8, 200, "live", 1)
    simulated = _population(0.6, 200, "simulated", 2)
    gap = tm.success_rate_gap(live, simulated, seed=7)
    assert gap.gap == pytest.approx(gap.rate_b - gap.rate_a)
    assert gap.ci_low <= gap.gap <= gap.ci_high
    assert gap.ci_low <= -0.2 + 0.1 and gap.ci_high >= -0.2 - 0.1  # the true gap (−0.2) within reach
    assert gap.ci_high < 0  # 200 tasks: a 20-point drop is clearly seen
    assert tm.success_rate_gap(live, simulated, seed=7) == gap  # deterministic for a seed
    assert tm.success_rate_gap(live, simulated, seed=8) != gap
    same = tm.success_rate_gap(live, live, seed=0)
    assert same.gap == 0 and same.ci_low == same.ci_high == 0  # paired on tasks: identical runs, no noise
    with pytest.raises(ValueError):
        tm.success_rate_gap([], simulated)


def test_replay_validity() -> None:
    simulated = trajectory("t", [A, B, C, D], "ok", mode="simulated")
    replays = [{"call_id": "call_0", "is_error": False}, {"call_id": "call_1", "is_error": True},
               {"call_id": "call_2", "is_error": False}]  # call_3 was never replayed: not answered
    assert tm.replay_validity(simulated, replays) == 0.5
    assert tm.replay_validity(trajectory("t", [], "ok"), []) is None


def test_report_json_and_html(tmp_path: Path) -> None:
    live = [trajectory(f"t{i}", [A, B], "3", repeat=r, passed=(i + r) % 4 != 0) for i in range(6) for r in range(2)]
    simulated = [trajectory(f"t{i}", [A, C] if i % 2 else [A, B], "3", mode="simulated", repeat=r, passed=i % 3 != 0)
                 for i in range(6) for r in range(2)]
    replays = {tm.task_key(t): [{"call_id": "call_0", "is_error": False}, {"call_id": "call_1", "is_error": i % 2 == 1}]
               for i, t in enumerate(simulated)}
    out = tmp_path / "report"
    data = write_report({"live": live, "simulated": simulated}, out, replays=replays, samples=500, seed=3)
    report = TrajectoryFidelityReport.model_validate_json((out / "report.json").read_text())
    assert report.model_dump(mode="json") == data == json.loads((out / "report.json").read_text())
    assert report.baseline == "live" and report.modes["live"].trajectories == 12
    comparison = report.comparisons[0]
    assert comparison.mode == "simulated" and comparison.gap is not None
    assert comparison.gap.rate_a == tm.success_rate(live) and comparison.gap.rate_b == tm.success_rate(simulated)
    assert comparison.pairs.pairs == 12 and comparison.pairs.f1_name == pytest.approx(0.75)
    assert comparison.live_vs_live is not None and comparison.live_vs_live.pairs == 6
    assert comparison.live_vs_live.f1_name == 1.0 and comparison.live_vs_live_gap is not None
    assert comparison.replay is not None and comparison.replay.mean_validity == pytest.approx(0.75)
    dom, shot = render_in_chromium(out / "report.html", tmp_path)
    assert_rendered(dom, shot, min_tables=3)
    assert "simulated vs live" in dom


def test_identical_repeats_make_the_report_say_its_ci_is_degenerate(tmp_path: Path) -> None:
    """k repeats at temperature 0 are copies: the CI of the live-vs-live gap is [0, 0], and the report
    says so and why, instead of presenting it as a measured noise floor."""
    def runs(mode: str, temperature: float, vary: bool) -> list[dict[str, Any]]:
        out = []
        for i in range(4):
            for r in range(3):
                t = trajectory(f"t{i}", [A, B] if not (vary and r == 1) else [A, C],
                               "3" if not (vary and r == 2) else "4", mode=mode, repeat=r,
                               passed=not (vary and (i + r) % 3 == 0))
                t["agent"] = {"kind": "prompted", "model": "m", "temperature": temperature, "seed": r if vary else 0}
                out.append(t)
        return out

    copies = write_report({"live": runs("live", 0.0, False), "simulated": runs("simulated", 0.0, False)},
                          tmp_path / "copies", samples=200)
    comparison = copies["comparisons"][0]
    assert comparison["live_vs_live_gap"]["ci_low"] == comparison["live_vs_live_gap"]["ci_high"] == 0
    reasons = " ".join(comparison["degenerate"])
    assert "live: the repeats of all 4 repeated task(s) are identical" in reasons and "temperature 0" in reasons
    assert "live-vs-live gap's CI [0, 0] is degenerate" in reasons
    assert copies["modes"]["live"]["repeats"] == {"tasks_repeated": 4, "tasks_all_identical": 4,
                                                  "temperatures": [0.0], "seeds": [0]}
    assert "Degenerate:" in (tmp_path / "copies" / "report.html").read_text()
    # Real repeats (they differ): no such warning about copies.
    real = write_report({"live": runs("live", 0.8, True), "simulated": runs("simulated", 0.8, True)},
                        tmp_path / "real", samples=200)
    assert not any("are identical" in r for r in real["comparisons"][0]["degenerate"])
    assert real["modes"]["live"]["repeats"]["tasks_all_identical"] == 0
