"""The HTML report shell: one self-contained page of sections, tables and bar charts as inline SVG.

No external URL, script or font: the page opens the same offline, in a browser or a CI artifact.
Every report renders through `render_html`: `fidelity calls`, the trajectory report, the onboarding report
and the dataset card's charts. Here, in the base layer, since the runner and the simulators both use it.
"""

from __future__ import annotations

import math
from html import escape

from pydantic import BaseModel, Field

Cell = str | bool | int | float | None

PALETTE = ("#3b6fb6", "#e07b39", "#4c9f70", "#b04a6f", "#7d6bb3", "#8c8c3a")
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1.2rem 0 .4rem}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f6f8}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafbfc}
figure{margin:.5rem 0 1.5rem}figcaption{font-size:.85rem;color:#555}p.note{color:#555;font-size:.9rem}
"""


class Table(BaseModel):
    title: str
    columns: list[str]
    rows: list[list[Cell]]


class BarChart(BaseModel):
    """Grouped horizontal bars: one group per category, one bar per series."""

    title: str
    categories: list[str]
    series: dict[str, list[float | None]]
    max_value: float | None = Field(None, description="the axis end (default: the largest value)")
    unit: str = ""


class Section(BaseModel):
    heading: str
    notes: list[str] = Field(default_factory=list)
    tables: list[Table] = Field(default_factory=list)
    charts: list[BarChart] = Field(default_factory=list)


def fmt(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(cell))}</td>" for cell in row) + "</tr>" for row in table.rows)
    return (f"<h3>{escape(table.title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def chart_svg(chart: BarChart) -> str:
    """Inline SVG; missing values are drawn as an empty slot marked 'n/a'."""
    label_w, plot_w, bar_h, gap = 220, 560, 14, 10
    names = list(chart.series)
    group_h = bar_h * max(len(names), 1) + gap
    legend_h = 22
    height = legend_h + group_h * max(len(chart.categories), 1) + 30
    width = label_w + plot_w + 70
    values = [v for series in chart.series.values() for v in series if v is not None and math.isfinite(v)]
    top = chart.max_value if chart.max_value is not None else (max(values) if values else 1.0)
    top = top if top > 0 else 1.0
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(chart.title)}">')]
    for i, name in enumerate(names):  # legend
        x = label_w + i * 150
        parts.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{x + 16}" y="14" font-size="12">{escape(name)}</text>')
    for g, category in enumerate(chart.categories):
        y0 = legend_h + g * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y0 + group_h / 2}" font-size="12" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(category[:34])}</text>')
        for i, name in enumerate(names):
            value = chart.series[name][g] if g < len(chart.series[name]) else None
            y = y0 + i * bar_h
            if value is None or not math.isfinite(value):
                parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 3}" font-size="10" fill="#999">n/a</text>')
                continue
            w = max(0.0, min(value / top, 1.0)) * plot_w
            parts.append(f'<rect x="{label_w}" y="{y + 1}" width="{w:.1f}" height="{bar_h - 2}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {fmt(value)}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 3}" font-size="10">'
                         f'{escape(fmt(value))}{escape(chart.unit)}</text>')
    axis_y = legend_h + group_h * max(len(chart.categories), 1) + 4
    parts.append(f'<line x1="{label_w}" y1="{legend_h}" x2="{label_w}" y2="{axis_y}" stroke="#888"/>'
                 f'<line x1="{label_w}" y1="{axis_y}" x2="{label_w + plot_w}" y2="{axis_y}" stroke="#888"/>'
                 f'<text x="{label_w}" y="{axis_y + 14}" font-size="10">0</text>'
                 f'<text x="{label_w + plot_w}" y="{axis_y + 14}" font-size="10" text-anchor="end">'
                 f'{escape(fmt(float(top)))}{escape(chart.unit)}</text></svg>')
    return f"<figure>{''.join(parts)}<figcaption>{escape(chart.title)}</figcaption></figure>"


# Rows of every table are filtered as one types: words match anywhere in a row, `column=value` only in that
# column (e.g. `class=works server`); all must match. Inline, so the page still needs nothing from outside.
_FILTER = """<p><input id="filter" type="search" size="48" placeholder="filter rows: words, or column=value"
aria-label="filter rows"> <span id="shown"></span></p><script>
(()=>{const box=document.getElementById('filter'),shown=document.getElementById('shown');
box.addEventListener('input',()=>{const terms=box.value.toLowerCase().split(/\\s+/).filter(Boolean);let n=0,all=0;
for(const t of document.querySelectorAll('table')){const cols=[...t.querySelectorAll('thead th')].map(h=>h.textContent.toLowerCase());
for(const r of t.querySelectorAll('tbody tr')){const cells=[...r.cells].map(c=>c.textContent.toLowerCase());
const ok=terms.every(term=>{const i=term.indexOf('=');if(i>0){const c=cols.indexOf(term.slice(0,i));
return c>=0&&cells[c]!==undefined&&cells[c].includes(term.slice(i+1));}return cells.some(c=>c.includes(term));});
r.hidden=!ok;all++;if(ok)n++;}}shown.textContent=terms.length?`${n} of ${all} rows`:'';});})();
</script>"""


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    body: list[str] = [f"<h1>{escape(title)}</h1><p class=\"sub\">{escape(subtitle)}</p>", _FILTER]
    for section in sections:
        body.append(f"<section><h2>{escape(section.heading)}</h2>")
        body.extend(f'<p class="note">{escape(note)}</p>' for note in section.notes)
        body.extend(chart_svg(chart) for chart in section.charts)
        body.extend(table_html(table) for table in section.tables)
        body.append("</section>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
