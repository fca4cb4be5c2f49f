"""The call-level fidelity report: its model (report.json) and its page (report.html)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from simgate.html import BarChart, Section, Table, render_html
from simgate.simulators.fidelity.scoring import METRICS, Aggregate, CallScore, MetricSet

REPORT_VERSION = 1
SETTINGS = ("few_shot", "zero_shot")


class SettingReport(BaseModel):
    overall: Aggregate
    per_server: dict[str, Aggregate]
    per_tool: dict[str, Aggregate] = Field(..., description="keyed 'server/tool'")


class CallFidelityReport(BaseModel):
    version: int = REPORT_VERSION
    created_at: str
    store: str
    backend: str
    model: str | None = None
    examples: int = Field(..., description="k: recorded calls shown in the few-shot setting")
    second_live: bool
    embedding: str = Field(..., description="the embedding model used, or why the metric was skipped")
    servers: list[str]
    settings: dict[str, SettingReport]
    calls: list[CallScore]


def write_call_report(report: CallFidelityReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "report.json", out_dir / "report.html"
    json_path.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    html_path.write_text(render_call_report(report), encoding="utf-8")
    return json_path, html_path


_LABELS = {"schema_validity": "schema validity", "outcome_agreement": "outcome agreement", "kappa": "Cohen's κ",
           "path_jaccard": "path Jaccard", "type_agreement": "type agreement", "value_fidelity": "value fidelity",
           "bleu4": "BLEU-4 (÷100)", "embedding_cosine": "embedding cosine"}


def _values(metric_set: MetricSet | None, *, bleu_scale: float = 100.0) -> list[float | None]:
    """The metrics in METRICS order, BLEU-4 brought to 0–1 like the others (not for ratios, already unitless)."""
    if metric_set is None:
        return [None] * len(METRICS)
    values: list = [getattr(metric_set, name) for name in METRICS]
    at = METRICS.index("bleu4")
    if values[at] is not None:
        values[at] = values[at] / bleu_scale
    return values


def _aggregate_rows(groups: dict[str, Aggregate]) -> list[list[object]]:
    rows: list[list[object]] = []
    for name, agg in groups.items():
        s = agg.simulated
        rows.append([name, agg.calls, agg.simulator_failures, s.schema_validity, s.outcome_agreement, _kappa(s),
                     s.path_jaccard, s.type_agreement, s.value_fidelity, s.bleu4, s.embedding_cosine,
                     agg.ratio.outcome_agreement if agg.ratio else None, agg.median_latency_ms])
    return rows


def _kappa(metric_set: MetricSet | None) -> float | str | None:
    """κ, or "undefined" where both sides used one class (the confusion table shows the counts)."""
    if metric_set is None:
        return None
    if metric_set.kappa is None and metric_set.kappa_undefined:
        return "undefined"
    return metric_set.kappa


def _excerpt(answer: dict | None, limit: int = 80) -> str | None:
    if answer is None:
        return None
    from simgate.simulators.fidelity.answers import as_answer

    text = as_answer(answer).text.replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "…"


_AGG_COLUMNS = ["name", "calls", "sim. failures", "schema valid", "outcome agr.", "κ", "path Jaccard", "type agr.",
                "value fid.", "BLEU-4", "emb. cosine", "outcome agr. ÷ live-live", "median ms"]


def render_call_report(report: CallFidelityReport) -> str:
    sections: list[Section] = []
    overview_rows = []
    for setting, data in report.settings.items():
        o = data.overall
        overview_rows.append([setting, "simulated", o.calls, *_with_kappa(_values(o.simulated), o.simulated)])
        if o.live_vs_live is not None:
            overview_rows.append([setting, "live vs live", o.live_vs_live.n,
                                  *_with_kappa(_values(o.live_vs_live), o.live_vs_live)])
        if o.ratio is not None:
            overview_rows.append([setting, "ratio", o.ratio.n, *_values(o.ratio, bleu_scale=1.0)])
    series: dict[str, list[float | None]] = {
        setting.replace("_", "-"): _values(data.overall.simulated) for setting, data in report.settings.items()}
    first = next(iter(report.settings.values()), None)
    if first is not None and first.overall.live_vs_live is not None:
        series["live vs live"] = _values(first.overall.live_vs_live)
    sections.append(Section(
        heading="Overall",
        notes=[f"Backend {report.backend}" + (f" ({report.model})" if report.model else "") +
               f"; {len(report.calls) // max(len(report.settings), 1)} recorded live call(s) from {report.store}; "
               f"few-shot shows the k={report.examples} most similar recordings of the tool with other arguments "
               "and the session's earlier calls without any answer to the scored call; zero-shot shows no "
               "recording of the tool at all (the session's earlier calls of other tools only).",
               ("Value fidelity counts paths that two live calls agree on when a second live call was made "
                "(else every path of the live answer). Embedding cosine: " + report.embedding + "."),
               ("A simulator failure (no answer) counts as schema-invalid with its own outcome, "
                "'simulator_failure', which never agrees with a live error."),
               ("Cohen's κ is undefined where both sides answered with one and the same class throughout "
                "(chance explains all the agreement): the outcome confusion tables give the counts."),
               ("Lists whose order two live calls disagree on (same items, another order) are compared as "
                "multisets in value fidelity; without a second live call, order counts."),
               *[f"{setting}: κ {agg.kappa_undefined}" for setting, data in report.settings.items()
                 for agg in (data.overall.simulated, data.overall.live_vs_live) if agg is not None
                 and agg.kappa_undefined],
               ("BLEU-4 is sacrebleu's sentence BLEU on the canonical JSON (or the text) of the answers, 0–100; "
                "the chart shows it divided by 100.")],
        charts=[BarChart(title="Fidelity by metric (1 = identical to live)", categories=[_LABELS[n] for n in METRICS],
                         series=series, max_value=1.0)],
        tables=[Table(title="Overall figures", columns=["setting", "compared", "calls", *[_LABELS[n] for n in METRICS]],
                      rows=overview_rows)]))
    for setting, data in report.settings.items():
        servers = list(data.per_server)
        sections.append(Section(
            heading=f"{setting.replace('_', '-')}: per server and per tool",
            charts=[BarChart(title=f"{setting}: schema validity and outcome agreement per server", categories=servers,
                             series={"schema validity": [data.per_server[s].simulated.schema_validity
                                                         for s in servers],
                                     "outcome agreement": [data.per_server[s].simulated.outcome_agreement
                                                           for s in servers]}, max_value=1.0)],
            tables=[Table(title="Per server", columns=_AGG_COLUMNS, rows=_aggregate_rows(data.per_server)),
                    Table(title="Per tool", columns=_AGG_COLUMNS, rows=_aggregate_rows(data.per_tool)),
                    Table(title="Outcome confusion (rows: live; columns: simulated)",
                          columns=["live \\ simulated", *_outcome_names(data.overall)],
                          rows=[[live, *[data.overall.confusion[live].get(o, 0) for o in _outcome_names(data.overall)]]
                                for live in sorted(data.overall.confusion)]),
                    *([Table(title="Outcome confusion, live vs live (rows: live; columns: second live)",
                             columns=["live \\ second live", *_outcome_names(data.overall)],
                             rows=[[live, *[data.overall.live_vs_live_confusion[live].get(o, 0)
                                            for o in _outcome_names(data.overall)]]
                                   for live in sorted(data.overall.live_vs_live_confusion)])]
                      if data.overall.live_vs_live_confusion else [])]))
    call_rows = [[f"{c.server}/{c.tool}", c.setting, c.key[:12], c.live_outcome, c.simulated.outcome,
                  c.simulated.schema_valid, c.simulated.path_jaccard, c.simulated.value_fidelity, c.simulated.bleu4,
                  c.second_live.outcome if c.second_live else None, c.simulator_error or c.simulated.schema_problem,
                  _excerpt(c.answers.live), _excerpt(c.answers.simulated)]
                 for c in report.calls]
    sections.append(Section(heading="Every call", notes=["report.json keeps every answer in full (calls[].answers)."],
                            tables=[Table(
        title="Calls", columns=["tool", "setting", "key", "live", "simulated", "schema valid", "path Jaccard",
                                "value fid.", "BLEU-4", "second live", "problem", "live answer", "simulated answer"],
        rows=call_rows)]))
    return render_html("simgate: call-level fidelity", f"created {report.created_at}", sections)


def _with_kappa(values: list, metric_set: MetricSet) -> list:
    if metric_set.kappa is None and metric_set.kappa_undefined:
        values[METRICS.index("kappa")] = "undefined"
    return values


def _outcome_names(agg: Aggregate) -> list[str]:
    from simgate.simulators.fidelity.call_metrics import OUTCOMES

    floor = agg.live_vs_live_confusion or {}
    seen = ({o for row in agg.confusion.values() for o in row} | set(agg.confusion)
            | {o for row in floor.values() for o in row} | set(floor))
    return [o for o in OUTCOMES if o in seen]
