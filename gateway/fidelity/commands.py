"""`simgate fidelity calls`: score a simulator against recorded live calls; writes report.json and report.html.

The store is `--store DIR`, else the `--config` file's `gateway.cache_dir` (or STATE_DIR/cache). The
simulator is `--backend` (with `--base-url`/`--model` for `openai`), else the config's
`gateway.simulator`, else `examples`. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simgate.gateway.cache.backends import shared_store
from simgate.gateway.cache.errors import STORE_ERRORS, describe_store_error
from simgate.gateway.cli import command_group, guarded

DEFAULT_STORE = ".simgate/cache"


def register(commands: Any) -> None:
    group = command_group(commands, "fidelity", "measure how faithfully simulated tool calls match live ones")
    calls = group.add_parser("calls", help="simulate recorded live calls and score them (report.json, report.html)")
    calls.add_argument("--config", metavar="FILE", help="a gateway config: its store, simulator, servers")
    calls.add_argument("--store", metavar="DIR", help=f"the recording store (default: the config's, else {DEFAULT_STORE})")
    calls.add_argument("--server", help="only this server's recorded calls")
    calls.add_argument("--backend", choices=["examples", "schema", "examples-schema", "openai"],
                       help="the simulator (default: the config's gateway.simulator, else examples)")
    calls.add_argument("--base-url", help="openai backend: the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    calls.add_argument("--model", help="openai backend: the model name the endpoint serves")
    calls.add_argument("--api-key-env", help="openai backend: environment variable holding the API key")
    calls.add_argument("--max-tokens", type=int, help="openai backend: cap on one answer")
    calls.add_argument("--max-string-length", type=int, help="openai backend: bound unbounded strings of the answer")
    calls.add_argument("--max-array-items", type=int, help="openai backend: bound unbounded arrays of the answer")
    calls.add_argument("--timeout", type=float, help="openai backend: seconds per request")
    calls.add_argument("--examples", type=int, help="k: recorded calls shown in the few-shot setting (default 5)")
    calls.add_argument("--setting", choices=["both", "few_shot", "zero_shot"], default="both",
                       help="few-shot (k nearest other recordings), zero-shot (none of the tool's), or both")
    calls.add_argument("--second-live", action="store_true",
                       help="call every recorded call live a second time through the config's upstreams (noise floor)")
    calls.add_argument("--out", metavar="DIR", default="fidelity-calls", help="where report.json and report.html go")
    calls.set_defaults(handler=guarded(_calls, ValidationError, *STORE_ERRORS,
                                       prefix="simgate fidelity calls", describe=_describe))
    status = group.add_parser("status", help="per tool: does the fidelity gate let the simulator answer, and why")
    status.add_argument("--config", metavar="FILE", required=True, help="the gateway config (its simulator and gate)")
    status.add_argument("--store", metavar="DIR", help="the recording store (default: the config's)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=guarded(_status, ValidationError, *STORE_ERRORS,
                                        prefix="simgate fidelity status", describe=_describe))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"bad simulator settings: {'.'.join(map(str, error['loc']))}: {error['msg']}"
    return describe_store_error(exc)


def simulator_settings(args: argparse.Namespace, config: Any) -> Any:
    """The config's simulator with the command line's choices on top."""
    from simgate.simulators.config import SimulatorConfig

    base = config.gateway.simulator if config is not None and config.gateway.simulator is not None else None
    data: dict[str, Any] = base.model_dump() if base is not None else {"backend": "examples"}
    if args.backend:
        data["backend"] = args.backend
    if args.examples is not None:
        data["examples"] = args.examples
    overrides = {"base_url": args.base_url, "model": args.model, "api_key_env": args.api_key_env,
                 "max_tokens": args.max_tokens, "max_string_length": args.max_string_length,
                 "max_array_items": args.max_array_items, "timeout_s": args.timeout}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if data["backend"] == "openai":
        data["openai"] = {**(data.get("openai") or {}), **overrides}
        if not data["openai"].get("base_url") or not data["openai"].get("model"):
            from simgate.gateway.fidelity.source import FidelityInputError

            raise FidelityInputError("--backend openai needs --base-url URL and --model NAME "
                                     "(or a gateway.simulator.openai section in --config)")
    return SimulatorConfig.model_validate(data)


def _calls(args: argparse.Namespace) -> int:
    from simgate.gateway.fidelity.calls import CallsOptions, evaluate_calls
    from simgate.simulators.fidelity.report import SETTINGS, write_call_report

    config = None
    if args.config:
        from simgate.gateway.config.loader import load_config

        config = load_config(args.config)
    store = Path(args.store or (config.gateway.cache_path if config is not None else DEFAULT_STORE))
    settings = SETTINGS if args.setting == "both" else (args.setting,)
    recordings = shared_store(config.gateway) if config is not None and not args.store else None
    options = CallsOptions(store=store, simulator=simulator_settings(args, config), server=args.server,
                           second_live=args.second_live, config=config, settings=settings, recordings=recordings)
    try:
        report = asyncio.run(evaluate_calls(options))
    finally:
        if recordings is not None:
            recordings.close()
    json_path, html_path = write_call_report(report, Path(args.out))
    from simgate.gateway.fidelity.evidence import write_evidence

    evidence = write_evidence(store, report)  # what the fidelity gate of a gateway on this store reads
    for setting, data in report.settings.items():
        s = data.overall.simulated
        print(f"{setting}: {data.overall.calls} call(s), {data.overall.simulator_failures} simulator failure(s); "
              f"schema validity {_pct(s.schema_validity)}, outcome agreement {_pct(s.outcome_agreement)}, "
              f"κ {'undefined (one class on both sides)' if s.kappa_undefined else _num(s.kappa)}, path Jaccard {_num(s.path_jaccard)}, BLEU-4 {_num(s.bleu4)}")
    print(f"wrote {json_path} and {html_path}; gate evidence in {evidence}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from simgate.gateway.config.loader import load_config
    from simgate.gateway.fidelity.status import gate_status

    config = load_config(args.config)
    store = Path(args.store or config.gateway.cache_path)
    recordings = shared_store(config.gateway) if not args.store else None
    try:
        status = gate_status(config, store, recordings)
    finally:
        if recordings is not None:
            recordings.close()
    if args.json:
        print(status.model_dump_json(indent=2))
        return 0
    gate = status.gate
    print(f"simulator {status.simulator}; gate: " + (", ".join(f"{k}={v}" for k, v in gate.items() if v is not None)
                                                     if gate else "none (always simulate)"))
    if not status.tools:
        print(f"no tool known: no tool list in {store} and no fidelity evidence")
    for row in status.tools:
        e = row.decision.evidence
        figures = "no evidence" if e is None else (
            f"{e.source} @ {e.measured_at}, {e.calls} call(s): outcome agreement {_num(e.outcome_agreement)}, "
            f"κ {'undefined' if e.kappa_undefined else _num(e.kappa)}, value fidelity ratio "
            f"{_num(e.value_fidelity_ratio)}")
        print(f"{row.server}/{row.tool}: → {row.goes_to or 'error (no fallback)'}  [{figures}]  {row.decision.reason}")
    return 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
