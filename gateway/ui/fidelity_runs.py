"""Call-fidelity runs started from the page: `simgate fidelity calls` for chosen tools, one at a time.

A run is the CLI's own evaluation (`evaluate_calls` with the CLI's simulator settings), written as the
CLI writes it (report.json and report.html, then the gate's evidence), into STATE_DIR/reports. It runs
in a thread with its own event loop, so its scoring never holds up the gateway's calls; its progress
(calls scored of calls to score) is read by polling. Stopping the gateway stops a run at its next call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.ui.data_http import ApiError

logger = logging.getLogger("simgate.ui")

_KEPT = 20  # finished runs remembered (the reports themselves stay on disk)
_JOIN_S = 2.0


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tools: list[str] = Field(..., min_length=1, max_length=1000, description="'server/tool' names")
    setting: Literal["both", "few_shot", "zero_shot"] = "both"
    backend: Literal["examples", "schema", "examples-schema"] | None = Field(
        default=None, description="default: the config's gateway.simulator, else examples (as the CLI)")


class RunState(BaseModel):
    id: str
    state: Literal["running", "done", "failed", "cancelled"] = "running"
    tools: list[str]
    setting: str
    backend: str
    started_at: str
    finished_at: str | None = None
    done: int = 0
    total: int | None = None
    error: str | None = None
    report: dict[str, Any] | None = Field(default=None, description="{root, path} of report.json, once written")
    summary: dict[str, Any] | None = None


class RunCancelled(Exception):
    """The gateway is stopping: the run ends at its next call."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _summary(report: Any) -> dict[str, Any]:
    out = {}
    for setting, data in report.settings.items():
        s = data.overall.simulated
        out[setting] = {"calls": data.overall.calls, "simulator_failures": data.overall.simulator_failures,
                        "schema_validity": s.schema_validity, "outcome_agreement": s.outcome_agreement,
                        "kappa": s.kappa, "path_jaccard": s.path_jaccard, "bleu4": s.bleu4}
    return out


class FidelityRuns:
    def __init__(self, config: GatewayConfig, reports_dir: Path, reports_root: int) -> None:
        self._config = config
        self._reports_dir = reports_dir
        self._reports_root = reports_root
        self._runs: dict[str, RunState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> Path:
        return Path(self._config.gateway.cache_path)

    def list(self) -> list[RunState]:
        with self._lock:
            return [run.model_copy() for run in reversed(self._runs.values())]

    def get(self, run_id: str) -> RunState:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise ApiError(f"no fidelity run {run_id!r} (runs are remembered while the gateway runs)", 404)
            return run.model_copy()

    def settings(self, request: RunRequest) -> Any:
        """The simulator exactly as `simgate fidelity calls --backend B` would build it from this config."""
        from simgate.gateway.fidelity.commands import simulator_settings
        from simgate.gateway.fidelity.source import FidelityInputError

        args = argparse.Namespace(backend=request.backend, examples=None, base_url=None, model=None,
                                  api_key_env=None, max_tokens=None, max_string_length=None, max_array_items=None,
                                  timeout=None)
        try:
            return simulator_settings(args, self._config)
        except FidelityInputError as exc:
            raise ApiError(str(exc), 400) from None

    def start(self, request: RunRequest, recorded: set[tuple[str, str]]) -> RunState:
        """Start a run of the chosen tools (each must have recordings); `ApiError` 409 while one runs."""
        chosen: set[tuple[str, str]] = set()
        for name in request.tools:
            server, _, tool = name.partition("/")
            if (server, tool) not in recorded:
                raise ApiError(f"nothing recorded for {name!r}: choose among the recorded tools", 400)
            chosen.add((server, tool))
        simulator = self.settings(request)
        with self._lock:
            running = [run.id for run in self._runs.values() if run.state == "running"]
            if running:
                raise ApiError(f"fidelity run {running[0]} is still running; one run at a time", 409)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            run = RunState(id=f"{stamp}-{uuid.uuid4().hex[:6]}", tools=sorted(request.tools),
                           setting=request.setting, backend=simulator.backend, started_at=_now())
            self._runs[run.id] = run
            while len(self._runs) > _KEPT:
                del self._runs[next(iter(self._runs))]
        self._thread = threading.Thread(target=self._work, args=(run, frozenset(chosen), simulator, request.setting),
                                        name=f"fidelity run {run.id}", daemon=True)
        self._thread.start()
        logger.info("fidelity run started from the page", extra={"run": run.id, "tools": run.tools})
        return run.model_copy()

    def _work(self, run: RunState, tools: frozenset[tuple[str, str]], simulator: Any, setting: str) -> None:
        from simgate.gateway.fidelity.calls import CallsOptions, evaluate_calls
        from simgate.gateway.fidelity.evidence import write_evidence
        from simgate.gateway.fidelity.source import FidelityInputError
        from simgate.simulators.fidelity.report import SETTINGS, write_call_report

        def progress(done: int, total: int) -> None:
            run.done, run.total = done, total
            if self._stop.is_set():
                raise RunCancelled()

        options = CallsOptions(store=self.store, simulator=simulator, config=self._config, tools=tools,
                               settings=SETTINGS if setting == "both" else (setting,), progress=progress)
        try:
            report = asyncio.run(evaluate_calls(options))
            out = self._reports_dir / f"calls-{run.id}"
            write_call_report(report, out)
            write_evidence(self.store, report)  # as the CLI does: the fidelity gate reads it
            run.report = {"root": self._reports_root, "path": f"calls-{run.id}/report.json"}
            run.summary = _summary(report)
            run.state = "done"
        except RunCancelled:
            run.state, run.error = "cancelled", "the gateway stopped"
        except (FidelityInputError, OSError, ValueError) as exc:
            run.state, run.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001  (a simulator's own failure must not kill the thread silently)
            logger.exception("fidelity run failed", extra={"run": run.id})
            run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            run.finished_at = _now()
            logger.info("fidelity run ended", extra={"run": run.id, "state": run.state})

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_S)
