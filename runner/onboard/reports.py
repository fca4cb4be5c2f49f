"""What onboarding writes: `onboard.json` (every server's report, rewritten whole after each server),
the config to serve them with (YAML), and an HTML page with a table per server and per tool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from simgate.files import atomic_write
from simgate.html import Section, Table, render_html
from simgate.runner.errors import RunnerError
from simgate.runner.onboard.observations import ServerReport, ServerStatus

REPORT_FILE = "onboard.json"
_REPORTS = TypeAdapter(list[ServerReport])


class OnboardReportError(RunnerError):
    pass


def load_reports(out_dir: Path) -> list[ServerReport]:
    path = out_dir / REPORT_FILE
    if not path.exists():
        return []
    try:
        return _REPORTS.validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise OnboardReportError(f"{path}: not an onboarding report ({str(exc).splitlines()[0]}); move it away or "
                                 "pick another --out") from None


def save_reports(out_dir: Path, reports: list[ServerReport]) -> None:
    atomic_write(out_dir / REPORT_FILE, _REPORTS.dump_json(reports, indent=1))


def config_document(reports: list[ServerReport], state_dir: str, store_dir: str) -> dict[str, Any]:
    """The gateway config: every server (unusable ones disabled, with the reason beside them)."""
    servers: dict[str, Any] = {}
    for report in sorted(reports, key=lambda r: r.name):
        entry = dict(report.entry)
        entry["onboarding"] = {"status": report.status.value, "category": report.category.primary
                               if report.category else None, **({"reason": report.reason} if report.reason else {}),
                               **({"fixes": report.fixes} if report.fixes else {})}
        servers[report.name] = entry
    return {"gateway": {"state_dir": state_dir, "cache_dir": store_dir}, "mcpServers": servers}


def write_config(path: Path, reports: list[ServerReport], state_dir: str, store_dir: str) -> None:
    text = ("# Written by `simgate onboard`; each server's `onboarding` block says what was found.\n"
            + yaml.safe_dump(config_document(reports, state_dir, store_dir), sort_keys=False, allow_unicode=True))
    atomic_write(path, text.encode())


def html_report(reports: list[ServerReport]) -> str:
    usable = sum(report.status is ServerStatus.USABLE for report in reports)
    servers = Table(title="Servers", columns=["server", "status", "category", "tools", "working", "needs", "reason",
                                              "fixes", "seconds"], rows=[])
    sections = [Section(heading="Servers", tables=[servers])]
    for report in sorted(reports, key=lambda r: r.name):
        working = sum(1 for t in report.tools if t.classification and t.classification.status.value == "works")
        needs = ", ".join(report.needs_env + report.network_hosts)
        servers.rows.append([report.name, report.status.value, report.category.primary if report.category else "",
                             len(report.tools), working, needs, report.reason or "", ", ".join(report.fixes),
                             report.seconds])
        if not report.tools:
            continue
        tools = Table(title=report.name, columns=["tool", "class", "deterministic", "writes files", "cacheable",
                                                  "ttl", "ignore_args", "simulated outcome / value", "evidence"],
                      rows=[])
        for tool in report.tools:
            c, s = tool.classification, tool.settings
            fidelity = "; ".join(f"{backend} {_fig(f.outcome_agreement)} / {_fig(f.value_fidelity)}"
                                 for backend, f in tool.fidelity.items())
            tools.rows.append([tool.name, c.status.value if c else "", c.deterministic if c else None,
                               c.writes_files if c else None, s.cacheable if s else None, s.ttl if s else None,
                               ", ".join(s.ignore_args) if s else "", fidelity, "; ".join(c.evidence) if c else ""])
        sections.append(Section(heading=f"{report.name} ({report.status.value})", tables=[tools],
                                notes=[f"spec: {report.spec}"]))
    return render_html("simgate onboard", f"{usable} of {len(reports)} servers usable offline", sections)


def _fig(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def write_reports(out_dir: Path, reports: list[ServerReport]) -> None:
    save_reports(out_dir, reports)
    atomic_write(out_dir / "onboard.html", html_report(reports).encode())


def summary(reports: list[ServerReport]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.status.value] = counts.get(report.status.value, 0) + 1
    return {"servers": len(reports), "by_status": counts,
            "tools": sum(len(report.tools) for report in reports),
            "working_tools": sum(1 for r in reports for t in r.tools
                                 if t.classification and t.classification.status.value == "works")}


def dumps(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
