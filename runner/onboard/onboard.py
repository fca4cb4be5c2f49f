"""`simgate onboard`: candidates in, probed and classified servers out, in parallel and resumable.

Per server: probe (install, start sandboxed offline, list, call every tool twice per argument set;
a start-up failure with a known remedy is retried once with it), classify each tool, propose its
settings, label the server, and keep the result in `OUT/onboard.json` as soon as it is known — a
re-run skips servers already onboarded from the same spec (unless `force`).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, Field

from simgate.runner.errors import RunnerError
from simgate.runner.onboard.baseline import measure_baseline
from simgate.runner.onboard.categories import keyword_category
from simgate.runner.onboard.classify import classify_tool, env_names, propose_settings
from simgate.runner.onboard.llm import LLMHelper
from simgate.runner.onboard.observations import ServerReport, ServerStatus, ToolStatus
from simgate.runner.onboard.probe import (
    ProbedGateway,
    ProbeSettings,
    StartFailure,
    forget_invalid_probes,
    probe_entry,
    probe_tools,
    start_fix,
)
from simgate.runner.onboard.reports import load_reports, save_reports
from simgate.runner.onboard.specs import Candidate
from simgate.runner.structured import Endpoint

MAX_FIXES = 2


class OnboardSettings(BaseModel):
    out_dir: Path
    probe: ProbeSettings
    jobs: int = Field(1, ge=1)
    force: bool = False
    llm: Endpoint | None = None
    baseline: bool = Field(True, description="measure each tool's simulator fidelity on its probe calls")


def vault_name(variable: str) -> str:
    return variable.lower()


def serving_entry(report: ServerReport, entry: dict[str, Any]) -> dict[str, Any]:
    """The config entry `simgate serve` runs the server with: the fixed entry, its sandbox policy, the
    proposed tool settings, credentials as vault placeholders; disabled with the reason if not usable."""
    served = dict(entry)
    sandbox = dict(served.get("sandbox") or {})
    hosts = report.network_hosts
    if sandbox.get("backend", "none") != "none" or hosts:
        sandbox.setdefault("backend", "bwrap")
        sandbox["network"] = {"allow": hosts} if hosts else "none"
        served["sandbox"] = sandbox
    if report.description and "description" not in served:
        served["description"] = report.description
    env = dict(served.get("env") or {})
    for variable in report.needs_env:
        env.setdefault(variable, f"vault:{vault_name(variable)}")
    if env:
        served["env"] = env
    tool_settings = {}
    for tool in report.tools:
        if tool.settings is None:
            continue
        values: dict[str, Any] = {"cacheable": tool.settings.cacheable}
        if tool.settings.ignore_args:
            values["ignore_args"] = tool.settings.ignore_args
        if tool.settings.ttl:
            values["ttl"] = tool.settings.ttl
        tool_settings[tool.name] = values
    if tool_settings:
        served["tool_settings"] = tool_settings
    if report.status is not ServerStatus.USABLE:
        served["disabled"] = True
    return served


def server_status(report: ServerReport) -> tuple[ServerStatus, str | None]:
    statuses = [tool.classification.status for tool in report.tools if tool.classification]
    if any(status is ToolStatus.WORKS for status in statuses):
        return ServerStatus.USABLE, None
    if not report.tools:
        return ServerStatus.NO_WORKING_TOOL, "it lists no tools"
    if report.needs_env and any(status is ToolStatus.NEEDS_CREDENTIALS for status in statuses):
        return ServerStatus.NEEDS_CREDENTIALS, f"needs credentials: {', '.join(report.needs_env)}"
    if any(status is ToolStatus.NEEDS_CREDENTIALS for status in statuses):
        return ServerStatus.NEEDS_CREDENTIALS, "its tools ask for credentials (no variable named)"
    if any(status is ToolStatus.NEEDS_NETWORK for status in statuses):
        hosts = f" ({', '.join(report.network_hosts)})" if report.network_hosts else ""
        return ServerStatus.NEEDS_NETWORK, f"its tools need the network{hosts}"
    return ServerStatus.NO_WORKING_TOOL, "no tool answered a valid call without an error"


async def onboard_one(candidate: Candidate, settings: OnboardSettings, llm: LLMHelper | None) -> ServerReport:
    started = time.monotonic()
    entry = dict(candidate.entry)
    fixes: list[str] = []
    report = ServerReport(name=candidate.name, spec=candidate.spec, spec_hash=candidate.spec_hash(),
                          status=ServerStatus.CRASHED_ON_START, description=candidate.description)
    declared = [need.name for need in candidate.declared_env if need.required or need.secret]
    for _ in range(MAX_FIXES + 1):
        gateway = ProbedGateway(candidate.name, probe_entry(entry, settings.probe), settings.probe)
        try:
            gateway.start()
            await gateway.wait_ready()
            tools, prompts, resources, info = await probe_tools(
                gateway, candidate, settings.probe, llm.arguments if llm is not None else None)
        except StartFailure as failure:
            fix = start_fix(failure, gateway, entry)
            if fix is not None and fix[0] not in fixes:
                fixes.append(fix[0])
                entry = fix[1]
                continue
            report.status, report.reason = failure.status, failure.reason
            if failure.status is ServerStatus.NEEDS_CREDENTIALS:
                report.needs_env = sorted(set(env_names([failure.reason])) | set(declared))
            break
        except Exception as exc:  # the server came up but the probe could not talk to it
            report.status, report.reason = ServerStatus.PROTOCOL_ERROR, f"{type(exc).__name__}: {exc}"[:600]
            break
        finally:  # shielded: a cancelled run (a signal) must still stop the private gateway it started
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(gateway.stop)
                await anyio.to_thread.run_sync(forget_invalid_probes, settings.probe.store_dir, candidate.name)
        report.tools, report.prompts, report.resources, report.server_info = tools, prompts, resources, info
        for tool in report.tools:
            tool.classification = classify_tool(tool.calls, tool.annotations, tool.description)
            tool.settings = propose_settings(tool.classification, tool.calls, tool.annotations, tool.name)
        report.needs_env = sorted({name for tool in report.tools
                                   for name in tool.classification.needs_env}  # type: ignore[union-attr]
                                  | set(declared))
        report.network_hosts = sorted({host for tool in report.tools
                                       for host in tool.classification.network_hosts})  # type: ignore[union-attr]
        report.status, report.reason = server_status(report)
        if settings.baseline and report.tools:
            report.notes += await measure_baseline(report, settings.probe.store_dir, settings.out_dir, settings.llm,
                                                   settings.probe.python)
        break
    report.fixes = fixes
    tools_listing = [{"name": tool.name, "description": tool.description} for tool in report.tools]
    report.category = None
    if llm is not None and report.tools:
        report.category = await llm.category(candidate.name, report.description, tools_listing)
    if report.category is None:
        report.category = keyword_category(candidate.name, report.description, tools_listing)
    report.entry = serving_entry(report, entry)
    report.seconds = round(time.monotonic() - started, 2)
    report.onboarded_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return report


async def onboard(candidates: list[Candidate], settings: OnboardSettings,
                  progress: Callable[[ServerReport], None] | None = None) -> list[ServerReport]:
    """Onboard every candidate (`jobs` at once); earlier results of the same spec are kept, not redone."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    known = {report.name: report for report in load_reports(settings.out_dir)}
    llm = LLMHelper(settings.llm) if settings.llm is not None else None
    results: dict[str, ServerReport] = dict(known)
    todo = [c for c in candidates if settings.force or c.name not in known
            or known[c.name].spec_hash != c.spec_hash()]
    lock = anyio.Lock()
    limiter = anyio.CapacityLimiter(settings.jobs)

    async def one(candidate: Candidate) -> None:
        async with limiter:
            report = await onboard_one(candidate, settings, llm)
        async with lock:  # the file always holds every result known so far, written whole
            results[candidate.name] = report
            save_reports(settings.out_dir, list(results.values()))
        if progress is not None:
            progress(report)

    terminated: list[int] = []
    async with anyio.create_task_group() as outer:
        outer.start_soon(_cancel_on_termination, outer.cancel_scope, terminated)
        async with anyio.create_task_group() as group:
            for candidate in todo:
                group.start_soon(one, candidate)
        outer.cancel_scope.cancel()
    if terminated:
        raise OnboardingStopped(f"onboarding stopped by signal {signal.Signals(terminated[0]).name}; the reports "
                                f"finished so far are in {settings.out_dir}", terminated[0])
    return list(results.values())


class OnboardingStopped(RunnerError):
    """SIGTERM or SIGHUP ended the run: every private gateway was stopped first (they run in sessions of their
    own, so no signal reaches them but this process's)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


async def _cancel_on_termination(scope: anyio.CancelScope, terminated: list[int]) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            terminated.append(signum)
            scope.cancel()
            return
