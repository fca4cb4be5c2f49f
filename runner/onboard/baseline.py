"""The fidelity baseline of onboarded servers: how well each simulator backend imitates each tool's
probe calls, measured with `simgate fidelity calls` on the store the probes were recorded into (few-
shot: the tool's other recorded calls shown). It also leaves the figures as gate evidence in the
store, so a gated `simulated` mode knows from the first minute which tools it may simulate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio

from simgate.runner.onboard.observations import ServerReport, ToolFidelity
from simgate.runner.structured import Endpoint

MODEL_FREE_BACKENDS = ("examples-schema",)


def _command(store: Path, server: str, backend: str, out: Path, llm: Endpoint | None) -> list[str]:
    command = [sys.executable, "-m", "simgate", "fidelity", "calls", "--store", str(store), "--server", server,
               "--backend", backend, "--setting", "few_shot", "--out", str(out)]
    if backend == "openai" and llm is not None:
        command += ["--base-url", llm.base_url, "--model", llm.model, "--max-tokens", str(llm.max_tokens)]
    return command


async def measure_baseline(report: ServerReport, store: Path, out_dir: Path, llm: Endpoint | None,
                           python: str = sys.executable) -> list[str]:
    """Fill each tool's `fidelity`; returns what could not be measured (a backend's failure, said, not fatal)."""
    problems: list[str] = []
    backends = [*MODEL_FREE_BACKENDS, *(["openai"] if llm is not None else [])]
    by_tool = {tool.name: tool for tool in report.tools}
    for backend in backends:
        out = out_dir / "fidelity" / f"{report.name}-{backend}"
        command = _command(store, report.name, backend, out, llm)
        command[0] = python
        done = await anyio.run_process(command, check=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if done.returncode != 0:
            problems.append(f"{backend}: {done.stderr.decode(errors='replace').strip()[-300:]}")
            continue
        try:
            per_tool = json.loads((out / "report.json").read_text())["settings"]["few_shot"]["per_tool"]
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{backend}: no report ({exc})")
            continue
        for key, figures in per_tool.items():
            server, _, tool = key.partition("/")
            if server != report.name or tool not in by_tool:
                continue
            simulated = figures.get("simulated") or {}
            by_tool[tool].fidelity[backend] = ToolFidelity(
                calls=int(figures.get("calls", 0)), outcome_agreement=simulated.get("outcome_agreement"),
                value_fidelity=simulated.get("value_fidelity"), bleu4=simulated.get("bleu4"),
                simulator_failures=int(figures.get("simulator_failures", 0)))
    return problems
