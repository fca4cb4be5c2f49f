"""`simgate onboard SPEC...`: servers named, then installed, probed offline, classified and written
into a ready config, with their probe calls recorded for replay."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.cli import guarded
from runner.errors import RunnerError
from runner.onboard.llm import OnboardLLM
from runner.onboard.observations import ServerReport
from runner.onboard.onboard import OnboardSettings, onboard
from runner.onboard.probe import ProbeSettings
from runner.onboard.reports import dumps, summary, write_config, write_reports
from runner.onboard.specs import Candidate, candidates_from


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "onboard", help="install, probe offline and classify MCP servers; write a ready config",
        description="SPEC: pypi:NAME[==V], npm:NAME[@V], a quoted uvx/npx command line, an mcpServers JSON file, "
                    "or an MCP registry server.json.")
    parser.add_argument("specs", nargs="+", metavar="SPEC")
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
    parser.set_defaults(handler=guarded(_onboard, RunnerError, prefix="simgate onboard"))


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
    candidates: list[Candidate] = []
    for spec in args.specs:
        for candidate in candidates_from(spec):
            if any(known.name == candidate.name for known in candidates):
                raise RunnerError(f"two specs give the server name {candidate.name!r}; onboard them separately")
            candidates.append(candidate)
    state_dir = Path(args.state_dir).resolve()
    store = Path(args.store).resolve() if args.store else state_dir / "cache"
    llm = None
    if args.llm_base_url:
        key = os.environ.get(args.api_key_env, "") if args.api_key_env else "not-needed"
        llm = OnboardLLM(base_url=args.llm_base_url, model=args.model, api_key=key or "not-needed")
    settings = OnboardSettings(
        out_dir=Path(args.out), jobs=args.jobs, force=args.force, llm=llm,
        probe=ProbeSettings(state_dir=state_dir, store_dir=store, sandbox=args.sandbox,
                            allow_network=args.allow_network, call_timeout=args.call_timeout,
                            startup_timeout=args.startup_timeout))
    console = Console(stderr=True)
    with Progress(TextColumn("onboarding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=console, disable=args.no_progress) as progress:
        task = progress.add_task("", total=len(candidates))

        def done(report: ServerReport) -> None:
            progress.update(task, advance=1, description=f"{report.name}: {report.status.value}")

        reports = anyio.run(onboard, candidates, settings, done)
    write_reports(settings.out_dir, reports)
    write_config(Path(args.config), reports, str(state_dir), str(store))
    for report in reports:
        extra = f" — {report.reason}" if report.reason else ""
        fixes = f" (fixed: {', '.join(report.fixes)})" if report.fixes else ""
        print(f"{report.name}: {report.status.value}, {len(report.tools)} tools{fixes}{extra}")
    print(dumps(summary(reports)))
    print(f"wrote {args.config}, {settings.out_dir / 'onboard.json'}, {settings.out_dir / 'onboard.html'}")
    return 0
