"""`simgate onboard SPEC...`: servers named, then installed, probed offline, classified and written
into a ready config, with their probe calls recorded for replay."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from simgate import yamltext
from simgate.files import atomic_write
from simgate.runner.errors import RunnerError
from simgate.runner.onboard.drift import ServerDrift, probe_entry_of, server_drift
from simgate.runner.onboard.observations import ServerReport
from simgate.runner.onboard.onboard import OnboardSettings, onboard
from simgate.runner.onboard.probe import ProbeSettings
from simgate.runner.onboard.reports import dumps, load_reports, summary, write_config, write_reports
from simgate.runner.onboard.specs import Candidate, candidates_from
from simgate.runner.structured import Endpoint


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "onboard", help="install, probe offline and classify MCP servers; write a ready config",
        description="SPEC: pypi:NAME[==V], npm:NAME[@V], a quoted uvx/npx command line, an mcpServers JSON file, "
                    "or an MCP registry server.json.")
    parser.add_argument("specs", nargs="*", metavar="SPEC")
    parser.add_argument("--check", metavar="CONFIG", help="re-probe the servers of an onboarded config and report "
                        "drift against the reports in --out (new, removed, changed or broken tools)")
    parser.add_argument("--fail-on-drift", action="store_true", help="with --check: exit 1 when anything drifted")
    parser.add_argument("--config", default="onboarded.yaml", metavar="OUT.yaml",
                        help="the config to write (default onboarded.yaml)")
    parser.add_argument("--out", default="onboard", metavar="DIR",
                        help="reports: onboard.json (also what a re-run resumes from) and onboard.html")
    parser.add_argument("--jobs", type=int, default=1, help="servers onboarded at once (default 1)")
    parser.add_argument("--force", action="store_true", help="onboard again servers already done with the same spec")
    parser.add_argument("--state-dir", default=".simgate", help="installs and server dirs (default .simgate)")
    parser.add_argument("--store", default=None, help="the recording store (default STATE_DIR/cache)")
    parser.add_argument("--sandbox", choices=("bwrap", "docker", "none"), default="bwrap",
                        help="where servers run while probed (default bwrap: no network, a closed egress proxy)")
    parser.add_argument("--allow-network", action="store_true",
                        help="let probed servers reach the network (otherwise nothing leaves the machine)")
    parser.add_argument("--call-timeout", type=float, default=20.0, help="seconds one probe call may take")
    parser.add_argument("--startup-timeout", type=float, default=600.0,
                        help="seconds to install and start one server (default 600)")
    parser.add_argument("--llm-base-url", metavar="URL", help="an OpenAI-compatible API for realistic arguments "
                        "and categories (optional)")
    parser.add_argument("--model", help="the model the endpoint serves (with --llm-base-url)")
    parser.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the LLM API key")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_onboard)


def _onboard(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise RunnerError("--jobs must be at least 1")
    if bool(args.llm_base_url) != bool(args.model):
        raise RunnerError("--llm-base-url and --model go together")
    if args.sandbox == "none" and not args.allow_network:
        raise RunnerError("--sandbox none cannot keep a server off the network; use bwrap or docker, or say "
                          "--allow-network")
    if args.sandbox == "bwrap" and shutil.which("bwrap") is None:
        raise RunnerError("bubblewrap (bwrap) is not installed: install it, or use --sandbox docker")
    if args.check:
        if args.specs:
            raise RunnerError("give either SPECs or --check CONFIG, not both")
        return _check(args)
    if not args.specs:
        raise RunnerError("name at least one SPEC (or --check CONFIG)")
    candidates: list[Candidate] = []
    for spec in args.specs:
        for candidate in candidates_from(spec):
            if any(known.name == candidate.name for known in candidates):
                raise RunnerError(f"two specs give the server name {candidate.name!r}; onboard them separately")
            candidates.append(candidate)
    settings = _settings(args, Path(args.out))
    reports = _run(candidates, settings, args.no_progress)
    write_reports(settings.out_dir, reports)
    write_config(Path(args.config), reports, str(settings.probe.state_dir), str(settings.probe.store_dir))
    for report in reports:
        extra = f" — {report.reason}" if report.reason else ""
        fixes = f" (fixed: {', '.join(report.fixes)})" if report.fixes else ""
        print(f"{report.name}: {report.status.value}, {len(report.tools)} tools{fixes}{extra}")
    print(dumps(summary(reports)))
    print(f"wrote {args.config}, {settings.out_dir / 'onboard.json'}, {settings.out_dir / 'onboard.html'}")
    return 0


def _settings(args: argparse.Namespace, out_dir: Path, force: bool | None = None) -> OnboardSettings:
    state_dir = Path(args.state_dir).resolve()
    store = Path(args.store).resolve() if args.store else state_dir / "cache"
    llm = None
    if args.llm_base_url:
        key = os.environ.get(args.api_key_env, "") if args.api_key_env else "not-needed"
        llm = Endpoint(base_url=args.llm_base_url, model=args.model, api_key=key or "not-needed")
    return OnboardSettings(
        out_dir=out_dir, jobs=args.jobs, force=args.force if force is None else force, llm=llm,
        probe=ProbeSettings(state_dir=state_dir, store_dir=store, sandbox=args.sandbox,
                            allow_network=args.allow_network, call_timeout=args.call_timeout,
                            startup_timeout=args.startup_timeout))


def _run(candidates: list[Candidate], settings: OnboardSettings, quiet: bool) -> list[ServerReport]:
    console = Console(stderr=True)
    with Progress(TextColumn("onboarding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, disable=quiet) as progress:
        task = progress.add_task("", total=len(candidates))

        def done(report: ServerReport) -> None:
            progress.update(task, advance=1, description=f"{report.name}: {report.status.value}")

        return anyio.run(onboard, candidates, settings, done)


def _check(args: argparse.Namespace) -> int:
    """Re-probe an onboarded config's servers; compare with the earlier reports; write drift.json."""
    out_dir = Path(args.out)
    before = {report.name: report for report in load_reports(out_dir)}
    if not before:
        raise RunnerError(f"no earlier onboarding report in {out_dir}/ to compare with (give --out DIR)")
    try:
        document = yamltext.safe_load(Path(args.check).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RunnerError(f"{args.check}: {exc}") from None
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise RunnerError(f"{args.check}: no 'mcpServers' object: not an onboarded config")
    candidates = [Candidate(name=name, entry=probe_entry_of(entry), spec=before[name].spec if name in before else
                            f"{args.check}#{name}") for name, entry in servers.items() if isinstance(entry, dict)]
    with tempfile.TemporaryDirectory(prefix="simgate-onboard-check-") as scratch:
        settings = _settings(args, Path(scratch), force=True)
        settings.probe.store_dir = Path(scratch) / "store"  # a check records nothing into the real store
        settings.baseline = False
        now = _run(candidates, settings, args.no_progress)
    drifts = []
    for report in now:
        if report.name in before:
            drift = server_drift(before[report.name], report)
        else:
            drift = ServerDrift(server=report.name, status=("not onboarded", report.status.value))
        drifts.append(drift)
        changes = drift.model_dump(exclude_defaults=True, exclude={"server"})
        print(f"{report.name}: " + ("; ".join(f"{key} {value}" for key, value in changes.items()) or "no drift"))
    atomic_write(out_dir / "drift.json", json.dumps([d.model_dump() for d in drifts], indent=1).encode())
    drifted = [drift.server for drift in drifts if drift.drifted]
    print(f"drift in {len(drifted)} of {len(drifts)} servers; wrote {out_dir / 'drift.json'}")
    return 1 if drifted and args.fail_on_drift else 0
