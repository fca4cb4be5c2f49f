"""Trajectory-level fidelity metrics: plain functions on trajectory dicts (one JSONL line of `simgate run`).

A trajectory has `id`, `mode`, `repeat`, `tool_events` (each with `name`, `server`, `tool`,
`arguments`, `call_id`, `is_error`...), `final_answer`, `outcome` and `checks`. Two trajectories of
the same task are compared on their tool-call sequences and final answers; two modes on their
success rates (with a seeded bootstrap CI). Every comparison has a live-vs-live twin computed from
repeats of the same task in live mode, so a gap can be read against the noise between live runs.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

from pydantic import BaseModel, Field
from rapidfuzz.distance import Levenshtein

from simgate.sequences import first_divergence, tool_calls, tool_names

BOOTSTRAP_SAMPLES = 2000


def success(trajectory: dict[str, Any]) -> bool:
    """The one definition: the agent gave a final answer and the trajectory's checks passed."""
    return trajectory.get("outcome") == "final_answer" and bool((trajectory.get("checks") or {}).get("passed"))


def task_key(trajectory: dict[str, Any]) -> str:
    """Identifies one run of one task: `id#repeat`."""
    return f"{trajectory.get('id')}#{int(trajectory.get('repeat') or 0)}"


# ---------------------------------------------------------------------------------------------- sequences


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences of tool calls (insert, delete, substitute one call)."""
    return int(Levenshtein.distance(list(a), list(b)))


def normalized_edit_distance(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Edit distance over the longer length: 0 identical, 1 nothing in common (two empty sequences: 0)."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def multiset_f1(predicted: Iterable[Any], reference: Iterable[Any]) -> float:
    """F1 of two bags (a call made twice counts twice). Both empty: 1.0."""
    p, r = Counter(predicted), Counter(reference)
    if not p and not r:
        return 1.0
    common = sum((p & r).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def tool_call_f1(predicted: dict[str, Any], reference: dict[str, Any], *, with_arguments: bool) -> float:
    """F1 of the tool calls of two trajectories, by name or by name and arguments."""
    if with_arguments:
        return multiset_f1(tool_calls(predicted), tool_calls(reference))
    return multiset_f1(tool_names(predicted), tool_names(reference))


# ---------------------------------------------------------------------------------------------- answers

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str | None) -> str:
    """Lower case, punctuation and English articles removed, whitespace collapsed (SQuAD's normalization)."""
    if not text:
        return ""
    lowered = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(lowered.split())


def answer_exact(a: str | None, b: str | None) -> bool:
    """The normalized answers are equal. A missing (or blank) answer agrees with nothing, not even
    another missing one: two runs that both gave no answer did not agree on an answer."""
    left, right = normalize_answer(a), normalize_answer(b)
    return bool(left) and left == right


def answer_token_f1(a: str | None, b: str | None) -> float:
    """Token F1 of the normalized answers; 0.0 when either is missing or blank."""
    left, right = normalize_answer(a).split(), normalize_answer(b).split()
    if not left or not right:
        return 0.0
    return multiset_f1(left, right)


# ---------------------------------------------------------------------------------------------- pairs


class PairScore(BaseModel):
    task: str
    edit_distance: int
    normalized_edit_distance: float
    first_divergence: int | None
    f1_name: float
    f1_name_args: float
    answer_exact: bool
    answer_f1: float
    both_succeeded: bool
    success_agree: bool


def compare(a: dict[str, Any], b: dict[str, Any]) -> PairScore:
    """Every pairwise metric of two runs of the same task (symmetric except F1's naming of sides)."""
    calls_a, calls_b = tool_calls(a), tool_calls(b)
    return PairScore(task=str(a.get("id")), edit_distance=edit_distance(calls_a, calls_b),
                     normalized_edit_distance=normalized_edit_distance(calls_a, calls_b),
                     first_divergence=first_divergence(calls_a, calls_b),
                     f1_name=tool_call_f1(b, a, with_arguments=False), f1_name_args=tool_call_f1(b, a, with_arguments=True),
                     answer_exact=answer_exact(a.get("final_answer"), b.get("final_answer")),
                     answer_f1=answer_token_f1(a.get("final_answer"), b.get("final_answer")),
                     both_succeeded=success(a) and success(b), success_agree=success(a) == success(b))


def _by_task(trajectories: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for t in trajectories:
        out.setdefault(str(t.get("id")), []).append(t)
    for runs in out.values():
        runs.sort(key=lambda t: int(t.get("repeat") or 0))
    return out


def cross_pairs(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[tuple[dict[str, Any],
                                                                                            dict[str, Any]]]:
    """Runs of the same task in two modes, matched by repeat number (repeat i with repeat i)."""
    ref, oth = _by_task(reference), _by_task(other)
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for task in sorted(ref.keys() & oth.keys()):
        pairs.extend(zip(ref[task], oth[task], strict=False))
    return pairs


def repeat_pairs(trajectories: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every two repeats of the same task (live vs live: the noise floor); none when k < 2."""
    pairs = []
    for _task, runs in sorted(_by_task(trajectories).items()):
        for i in range(len(runs)):
            for j in range(i + 1, len(runs)):
                pairs.append((runs[i], runs[j]))
    return pairs


class PairSummary(BaseModel):
    pairs: int = 0
    edit_distance: float | None = None
    normalized_edit_distance: float | None = None
    diverged: float | None = Field(None, description="share of pairs whose tool calls differ at some step")
    first_divergence: float | None = Field(None, description="mean first divergent step, over diverging pairs")
    f1_name: float | None = None
    f1_name_args: float | None = None
    answer_exact: float | None = None
    answer_f1: float | None = None
    success_agreement: float | None = None


def summarize(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> PairSummary:
    scores = [compare(a, b) for a, b in pairs]
    if not scores:
        return PairSummary()
    diverging = [s.first_divergence for s in scores if s.first_divergence is not None]
    return PairSummary(
        pairs=len(scores), edit_distance=fmean(s.edit_distance for s in scores),
        normalized_edit_distance=fmean(s.normalized_edit_distance for s in scores),
        diverged=len(diverging) / len(scores), first_divergence=fmean(diverging) if diverging else None,
        f1_name=fmean(s.f1_name for s in scores), f1_name_args=fmean(s.f1_name_args for s in scores),
        answer_exact=fmean(1.0 if s.answer_exact else 0.0 for s in scores),
        answer_f1=fmean(s.answer_f1 for s in scores),
        success_agreement=fmean(1.0 if s.success_agree else 0.0 for s in scores))


# ---------------------------------------------------------------------------------------------- success rates


class Gap(BaseModel):
    rate_a: float
    rate_b: float
    gap: float = Field(..., description="rate_b − rate_a")
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    samples: int
    seed: int


def success_rate(trajectories: Sequence[dict[str, Any]]) -> float | None:
    return fmean(1.0 if success(t) else 0.0 for t in trajectories) if trajectories else None


def success_rate_gap(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], *, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0, confidence: float = 0.95) -> Gap:
    """Success rate of `b` minus that of `a`, with a percentile bootstrap CI.

    Tasks are the resampling unit (a cluster bootstrap): each resample draws task ids with
    replacement and takes all of a task's runs in each mode, so repeats of one task, and the pairing
    of the two modes on the same tasks, are respected. Deterministic for a given seed."""
    if not a or not b:
        raise ValueError("both modes need at least one trajectory to compare success rates")
    by_a, by_b = _by_task(a), _by_task(b)
    tasks = sorted(by_a.keys() | by_b.keys())
    wins_a = {t: [1.0 if success(x) else 0.0 for x in by_a.get(t, [])] for t in tasks}
    wins_b = {t: [1.0 if success(x) else 0.0 for x in by_b.get(t, [])] for t in tasks}
    rng = random.Random(seed)
    gaps: list[float] = []
    for _ in range(samples):
        drawn = [tasks[rng.randrange(len(tasks))] for _ in tasks]
        sa = [w for t in drawn for w in wins_a[t]]
        sb = [w for t in drawn for w in wins_b[t]]
        if sa and sb:
            gaps.append(fmean(sb) - fmean(sa))
    gaps.sort()
    tail = (1 - confidence) / 2
    low = gaps[int(tail * (len(gaps) - 1))]
    high = gaps[round((1 - tail) * (len(gaps) - 1))]
    rate_a, rate_b = success_rate(a), success_rate(b)
    assert rate_a is not None and rate_b is not None
    return Gap(rate_a=rate_a, rate_b=rate_b, gap=rate_b - rate_a, ci_low=low, ci_high=high, n_a=len(a), n_b=len(b),
               samples=samples, seed=seed)


# ---------------------------------------------------------------------------------------------- replay


def replay_validity(trajectory: dict[str, Any], live_replays: Sequence[dict[str, Any]]) -> float | None:
    """Share of a (simulated) trajectory's tool calls that a later live replay answered without error.

    `live_replays` are the live re-executions of THIS trajectory's calls, each
    `{"call_id": str, "is_error": bool}` (the runner replays every `tool_events` entry, same name and
    arguments, in mode live, and records whether the answer was an error: `isError`, a JSON-RPC
    error, or no answer). A call with no replay counts as not answered. None: no tool call was made."""
    events = trajectory.get("tool_events") or []
    if not events:
        return None
    answered = {str(r.get("call_id")) for r in live_replays if not r.get("is_error")}
    return sum(1 for e in events if str(e.get("call_id")) in answered) / len(events)
