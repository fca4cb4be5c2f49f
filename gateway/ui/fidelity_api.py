"""The Fidelity view's API: the `fidelity calls` and `fidelity trajectories` reports under the page's
directories, each opened as its report.json and report.html; call-fidelity runs started from the page.

    GET  /ui/api/fidelity/reports                      every report found (kind, where, when, headline)
    GET  /ui/api/fidelity/report?root=&path=           one report.json, parsed
    GET  /ui/api/fidelity/report.html?root=&path=      the report.html beside it (self-contained, no script)
    GET  /ui/api/fidelity/tools                        the recorded tools a run can score, and the simulator
    GET  /ui/api/fidelity/runs                         runs started from the page (newest first)
    POST /ui/api/fidelity/runs  {"tools": ["server/tool"], "setting": "both", "backend": null}
    GET  /ui/api/fidelity/runs/{id}                    one run's state and progress (done of total calls)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from simgate.gateway.cache.listing import iter_groups, per_tool
from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.ui.data_http import ApiError, answers_errors, read_body, read_json_file
from simgate.gateway.ui.data_roots import REPORTS_ROOT, DataRoots
from simgate.gateway.ui.fidelity_runs import FidelityRuns, RunRequest

MAX_REPORT_BYTES = 64 * 1024 * 1024
_MAX_LISTED = 500
_MAX_HEADLINES = 1000  # cached headlines (by file, size and time), so a listing rereads only what changed


def report_kind(document: Any) -> str | None:
    """"calls" (`fidelity calls`), "trajectories" (`fidelity trajectories`), or None (another report.json)."""
    if not isinstance(document, dict):
        return None
    if {"settings", "calls", "backend"} <= document.keys():
        return "calls"
    if {"baseline", "comparisons", "modes"} <= document.keys():
        return "trajectories"
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def headline(document: dict[str, Any], kind: str) -> dict[str, Any]:
    """What a list of reports shows of one."""
    # A report.json is a file anyone may have edited: each part is read only if it has the expected shape.
    if kind == "calls":
        settings = _object(document.get("settings"))
        chosen = _object(settings.get("few_shot") or next(iter(settings.values()), {}))
        few = _object(chosen.get("overall"))
        return {"created_at": document.get("created_at"), "backend": document.get("backend"),
                "model": document.get("model"), "servers": document.get("servers") or [],
                "calls": few.get("calls"), "settings": sorted(settings),
                "outcome_agreement": _object(few.get("simulated")).get("outcome_agreement")}
    modes = _object(document.get("modes"))
    return {"created_at": document.get("created_at"), "baseline": document.get("baseline"),
            "modes": {mode: {"trajectories": m.get("trajectories"), "success_rate": m.get("success_rate")}
                      for mode, m in modes.items() if isinstance(m, dict)}}


class FidelityApi:
    def __init__(self, config: GatewayConfig, store: CacheStore, roots: DataRoots) -> None:
        self._config = config
        self._store = store
        self._roots = roots
        self.runs = FidelityRuns(config, roots.reports_dir, reports_root=REPORTS_ROOT)
        self._headlines: dict[tuple[str, int, float], tuple[str, dict[str, Any]] | None] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/fidelity/reports", answers_errors(self._reports), methods=["GET"]),
            Route("/fidelity/report", answers_errors(self._report), methods=["GET"]),
            Route("/fidelity/report.html", answers_errors(self._report_html), methods=["GET"]),
            Route("/fidelity/tools", answers_errors(self._tools), methods=["GET"]),
            Route("/fidelity/runs", answers_errors(self._runs), methods=["GET", "POST"]),
            Route("/fidelity/runs/{id}", answers_errors(self._run), methods=["GET"]),
        ]

    def close(self) -> None:
        self.runs.close()

    # ------------------------------------------------------------------------------------------ reports

    def _headline(self, file: Path, size: int, modified: float) -> tuple[str, dict[str, Any]] | None:
        cache_key = (str(file), size, modified)
        if cache_key not in self._headlines:
            try:
                document = read_json_file(file, MAX_REPORT_BYTES)
            except (ApiError, OSError):
                document = None
            kind = report_kind(document)
            if len(self._headlines) >= _MAX_HEADLINES:
                self._headlines.clear()
            self._headlines[cache_key] = (kind, headline(document, kind)) if kind else None
        return self._headlines[cache_key]

    async def _reports(self, request: Request) -> Response:
        def find() -> list[dict[str, Any]]:
            found = []
            for item in self._roots.walk(".json", name="report.json"):
                described = self._headline(item.file, item.size, item.modified)
                if described is None:
                    continue
                kind, head = described
                trajectories = item.file.with_name("trajectories.jsonl")
                found.append({"kind": kind, "root": item.root, "path": item.path, "modified": item.modified,
                              "html": item.file.with_name("report.html").is_file(),
                              "trajectories": (Path(item.path).parent / "trajectories.jsonl").as_posix()
                              if kind == "trajectories" and trajectories.is_file() else None, **head})
                if len(found) >= _MAX_LISTED:
                    break
            found.sort(key=lambda r: r["modified"], reverse=True)
            return found

        return JSONResponse({"roots": self._roots.describe(), "reports": await anyio.to_thread.run_sync(find)})

    async def _report(self, request: Request) -> Response:
        file = self._roots.resolve(request.query_params.get("root"), request.query_params.get("path"), suffix=".json")
        document = await anyio.to_thread.run_sync(read_json_file, file, MAX_REPORT_BYTES)
        kind = report_kind(document)
        if kind is None:
            raise ApiError(f"{request.query_params.get('path')!r} is not a fidelity report", 422)
        return JSONResponse({"kind": kind, "root": int(request.query_params["root"]),
                             "path": request.query_params["path"], "report": document,
                             "html": file.with_name("report.html").is_file()})

    async def _report_html(self, request: Request) -> Response:
        file = self._roots.resolve(request.query_params.get("root"), request.query_params.get("path"), suffix=".json")
        html = file.with_name("report.html")
        if not html.is_file():
            raise ApiError("no report.html beside this report", 404)
        if not html.resolve().is_relative_to(file.parent):
            raise ApiError("report.html beside this report leads elsewhere (a link); it is not opened", 403)
        if html.stat().st_size > MAX_REPORT_BYTES:
            raise ApiError("report.html is too large to open here", 413)
        text = await anyio.Path(html).read_text(encoding="utf-8", errors="replace")
        # Shown in a sandboxed frame; the report has no script, and none may run if one were added.
        return HTMLResponse(text, headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                           "img-src data:; sandbox"})

    # ------------------------------------------------------------------------------------------ runs

    def _recorded(self) -> list[dict[str, Any]]:
        return per_tool(iter_groups(self._store), time.time())

    async def _tools(self, request: Request) -> Response:
        simulator = self._config.gateway.simulator
        return JSONResponse({"tools": await anyio.to_thread.run_sync(self._recorded),
                             "simulator": simulator.identity if simulator is not None else None,
                             "default_backend": simulator.backend if simulator is not None else "examples",
                             "running": next((r.id for r in self.runs.list() if r.state == "running"), None)})

    async def _runs(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"runs": [run.model_dump() for run in self.runs.list()]})
        body = await read_body(request, RunRequest)
        recorded = {(row["server"], row["tool"]) for row in await anyio.to_thread.run_sync(self._recorded)}
        run = self.runs.start(body, recorded)
        return JSONResponse(run.model_dump(), status_code=202)

    async def _run(self, request: Request) -> Response:
        return JSONResponse(self.runs.get(request.path_params["id"]).model_dump())
