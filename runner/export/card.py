"""A dataset card for an exported set of trajectories (Hugging Face's README.md layout): counts per
subset, generator, mode and the filter that made it, and a histogram picture (SVG) per judged score."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from simgate.files import atomic_write
from simgate.html import BarChart, chart_svg
from simgate.runner.pipeline.judge import TASK_FIELD, TRAJECTORY_FIELD, ratings

SCORES = tuple(range(1, 6))


class CardFacts(BaseModel):
    rows: int
    subsets: dict[str, int]
    generators: dict[str, int]
    modes: dict[str, int]
    filters: dict[str, int]
    scores: dict[str, dict[int, int]]  # dimension → score → rows


def _task(trajectory: dict[str, Any]) -> dict[str, Any]:
    extra = trajectory.get("task_extra")
    return extra if isinstance(extra, dict) else {}


def card_facts(trajectories: list[dict[str, Any]], subset_name: str | None = None) -> CardFacts:
    subsets: Counter[str] = Counter()
    generators: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    filters: Counter[str] = Counter()
    scores: dict[str, Counter[int]] = {}
    for trajectory in trajectories:
        task = _task(trajectory)
        metadata = found if isinstance(found := task.get("metadata"), dict) else {}
        subsets[subset_name or str(task.get("subset_name") or f"simgate-{trajectory.get('mode', 'unknown')}")] += 1
        generators[str(metadata.get("generator") or "hand-written")] += 1
        modes[str(trajectory.get("mode", "unknown"))] += 1
        if metadata.get("filter"):
            filters[str(metadata["filter"])] += 1
        for name, score in {**ratings(task.get(TASK_FIELD)), **ratings(trajectory.get(TRAJECTORY_FIELD))}.items():
            scores.setdefault(name, Counter())[score] += 1
    return CardFacts(rows=len(trajectories), subsets=dict(subsets), generators=dict(generators), modes=dict(modes),
                     filters=dict(filters),
                     scores={name: {s: counts.get(s, 0) for s in SCORES} for name, counts in sorted(scores.items())})


def _table(title: str, counts: dict[str, int]) -> str:
    lines = [f"| {title} | rows |", "| --- | --- |"]
    lines += [f"| {name} | {count} |" for name, count in sorted(counts.items(), key=lambda item: -item[1])]
    return "\n".join(lines)


def write_card(directory: Path, facts: CardFacts, data_file: str, format_name: str) -> Path:
    """README.md (with the YAML header the Hub reads) and `card/<dimension>.svg` beside the data file."""
    pictures = []
    for name, counts in facts.scores.items():
        chart = BarChart(title=f"{name} (1–5)", categories=[str(s) for s in SCORES],
                         series={"rows": [float(counts[s]) for s in SCORES]})
        picture = Path("card") / f"{name}.svg"
        figure = chart_svg(chart)  # an HTML figure: its <svg> alone is the picture file
        atomic_write(directory / picture, figure[figure.index("<svg"):figure.rindex("</svg>") + 6].encode())
        pictures.append(f"![{name}]({picture.as_posix()})")
    suffix = Path(data_file).suffix
    kind = "parquet" if suffix == ".parquet" else "json"
    text = "\n\n".join([
        f"---\nconfigs:\n- config_name: default\n  data_files: {data_file}\ntags:\n- tool-use\n- mcp\n- simgate\n---",
        f"# Tool-use trajectories ({format_name} format)",
        f"{facts.rows} rows in `{data_file}` ({kind}), made with simgate: tasks run by agents through an MCP "
        "gateway whose calls were answered live, from recordings or by a simulator (the `mode` below).",
        _table("subset", facts.subsets), _table("task generator", facts.generators), _table("mode", facts.modes),
        _table("filter", facts.filters) if facts.filters else "No filter recorded on the tasks.",
        "## Scores\n\n" + ("\n\n".join(pictures) if pictures else "No judged scores in these rows."),
    ]) + "\n"
    path = directory / "README.md"
    atomic_write(path, text.encode())
    return path
