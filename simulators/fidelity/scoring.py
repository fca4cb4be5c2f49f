"""Score one call (live L, simulated S, optional second live L′) and fold scores into figures per tool,
per server and overall. Plain data in, pydantic models out."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from statistics import fmean, median
from typing import Any

from pydantic import BaseModel, Field

from simgate.simulators.fidelity import call_metrics as m
from simgate.simulators.fidelity.answers import as_answer

METRICS = ("schema_validity", "outcome_agreement", "kappa", "path_jaccard", "type_agreement", "value_fidelity",
           "bleu4", "embedding_cosine")


class Comparison(BaseModel):
    """One answer compared with the live answer L."""

    outcome: m.Outcome
    schema_valid: bool
    schema_problem: str | None = None
    path_jaccard: float | None = None
    type_agreement: float | None = None
    value_fidelity: float | None = None
    bleu4: float | None = None
    embedding_cosine: float | None = None


class Answers(BaseModel):
    """What was scored: the answers themselves (as the metrics read them), beside each other."""

    live: dict[str, Any] | None = None
    simulated: dict[str, Any] | None = Field(None, description="None: the simulator gave no answer")
    second_live: dict[str, Any] | None = None


class CallScore(BaseModel):
    server: str
    tool: str
    key: str
    setting: str = Field(..., description="few_shot (k nearest other recordings shown) or zero_shot (none)")
    arguments: dict[str, Any]
    live_outcome: m.Outcome
    simulated: Comparison
    simulator_error: str | None = Field(None, description="the simulator produced no answer: why")
    second_live: Comparison | None = Field(None, description="L′ against L: the noise floor")
    value_basis: str = Field(..., description="'stable' (paths L and L′ agree on) or 'all' (no L′)")
    unordered_lists: list[str] = Field(
        default_factory=list, description="lists whose order L and L′ disagree on: compared as multisets")
    latency_ms: float
    answers: Answers = Field(default_factory=Answers, description="the live, simulated and second live answers")


class MetricSet(BaseModel):
    n: int = 0
    schema_validity: float | None = None
    outcome_agreement: float | None = None
    kappa: float | None = None
    kappa_undefined: str | None = Field(None, description="why κ is undefined (one class on both sides), with the counts")
    path_jaccard: float | None = None
    type_agreement: float | None = None
    value_fidelity: float | None = None
    bleu4: float | None = None
    embedding_cosine: float | None = None


class Aggregate(BaseModel):
    calls: int
    simulator_failures: int
    simulated: MetricSet
    live_vs_live: MetricSet | None = None
    ratio: MetricSet | None = Field(None, description="simulated ÷ live-vs-live, metric by metric")
    confusion: dict[str, dict[str, int]] = Field(default_factory=dict, description="live outcome → simulated → n")
    live_vs_live_confusion: dict[str, dict[str, int]] | None = Field(None, description="live outcome → L′ → n")
    median_latency_ms: float | None = None


def compare(live: Any, other: Any, output_schema: dict[str, Any] | None, *, stable: set[str] | None,
            embed: Callable[[list[str]], list[list[float]]] | None = None,
            unordered: set[str] | None = None) -> Comparison:
    """`other` (S or L′) against the live answer, all metrics."""
    valid, problem = m.schema_validity(other, output_schema)
    cosine = None
    if embed is not None:
        from simgate.simulators.fidelity.embedding import cosine as cos

        texts = [as_answer(live).text, as_answer(other).text]
        if any(t.strip() for t in texts):
            u, v = embed(texts)
            cosine = cos(u, v)
    return Comparison(outcome=m.outcome_class(other), schema_valid=valid, schema_problem=problem,
                      path_jaccard=m.path_jaccard(live, other), type_agreement=m.type_agreement(live, other),
                      value_fidelity=m.value_fidelity(live, other, stable, unordered=unordered), bleu4=m.bleu4(live, other),
                      embedding_cosine=cosine)


def score_call(*, server: str, tool: str, key: str, setting: str, arguments: dict[str, Any], live: Any,
               simulated: Any, output_schema: dict[str, Any] | None, second_live: Any = None,
               simulator_error: str | None = None, latency_ms: float = 0.0,
               embed: Callable[[list[str]], list[list[float]]] | None = None) -> CallScore:
    """All metrics of one call. `simulated` None with `simulator_error`: the simulator gave no answer
    (invalid, outcome `simulator_failure`). With `second_live`, value fidelity counts only paths L and L′
    agree on, and lists whose order L and L′ disagree on are compared as multisets."""
    unordered = m.unordered_lists(live, second_live) if second_live is not None else set()
    stable = m.stable_paths(live, second_live, unordered) if second_live is not None else None
    floor = None
    if second_live is not None:
        # L′ is judged on every path of L: its value fidelity is the share of paths that are stable.
        floor = compare(live, second_live, output_schema, stable=None, embed=embed, unordered=unordered)
    return CallScore(server=server, tool=tool, key=key, setting=setting, arguments=arguments,
                     live_outcome=m.outcome_class(live),
                     simulated=compare(live, simulated, output_schema, stable=stable, embed=embed, unordered=unordered),
                     simulator_error=simulator_error, second_live=floor,
                     value_basis="stable" if stable is not None else "all", unordered_lists=sorted(unordered),
                     latency_ms=latency_ms,
                     answers=Answers(live=_dumpable(live), simulated=_dumpable(simulated),
                                     second_live=_dumpable(second_live)))


def _dumpable(answer: Any) -> dict[str, Any] | None:
    """The answer in the `{"error": ...}` / CallToolResult shape report.json keeps."""
    ans = as_answer(answer)
    if ans.error is not None:
        return {"error": ans.error}
    return ans.result


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def _metric_set(live: Sequence[str], comparisons: list[Comparison]) -> MetricSet:
    pairs = list(zip(live, [c.outcome for c in comparisons], strict=True))
    return MetricSet(
        n=len(comparisons),
        schema_validity=_mean(1.0 if c.schema_valid else 0.0 for c in comparisons),
        outcome_agreement=_mean(1.0 if a == b else 0.0 for a, b in pairs),
        kappa=m.cohen_kappa(pairs), kappa_undefined=m.kappa_undefined(pairs),
        path_jaccard=_mean(c.path_jaccard for c in comparisons),
        type_agreement=_mean(c.type_agreement for c in comparisons),
        value_fidelity=_mean(c.value_fidelity for c in comparisons),
        bleu4=_mean(c.bleu4 for c in comparisons),
        embedding_cosine=_mean(c.embedding_cosine for c in comparisons))


def aggregate(scores: list[CallScore]) -> Aggregate:
    """Means over the calls each metric applies to; κ over all (live, simulated) outcome pairs; the
    live-vs-live figures over the calls that have L′, and the simulated figures over the same calls
    divided by them."""
    simulated = _metric_set([s.live_outcome for s in scores], [s.simulated for s in scores])
    with_floor = [s for s in scores if s.second_live is not None]
    floor = ratio = None
    if with_floor:
        live = [s.live_outcome for s in with_floor]
        floor = _metric_set(live, [s.second_live for s in with_floor if s.second_live is not None])
        same_calls = _metric_set(live, [s.simulated for s in with_floor])
        ratio = MetricSet(n=len(with_floor), **{
            name: m.ratio(getattr(same_calls, name), getattr(floor, name)) for name in METRICS})
    latencies = [s.latency_ms for s in scores if s.simulator_error is None]
    return Aggregate(calls=len(scores), simulator_failures=sum(1 for s in scores if s.simulator_error),
                     simulated=simulated, live_vs_live=floor, ratio=ratio,
                     confusion=_confusion((s.live_outcome, s.simulated.outcome) for s in scores),
                     live_vs_live_confusion=_confusion((s.live_outcome, s.second_live.outcome) for s in with_floor
                                                       if s.second_live is not None) if with_floor else None,
                     median_latency_ms=median(latencies) if latencies else None)


def _confusion(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for live, other in pairs:
        row = out.setdefault(live, {})
        row[other] = row.get(other, 0) + 1
    return out


def group(scores: list[CallScore], by: Callable[[CallScore], str]) -> dict[str, Aggregate]:
    buckets: dict[str, list[CallScore]] = {}
    for score in scores:
        buckets.setdefault(by(score), []).append(score)
    return {name: aggregate(items) for name, items in sorted(buckets.items())}
