"""End to end: real servers recorded through a real gateway, then `simgate fidelity calls` and
`simgate export simulator-sft` run as subprocesses on that store; the HTML report rendered in
headless Chromium. Plus the commands' answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from fidelity_support import (
    RECORDED_SERVERS,
    assert_rendered,
    fresh_config,
    record_real_servers,
    render_in_chromium,
    simgate,
)
from llm_server import LLMServer

from simgate.gateway.cache.store import DiskStore
from simgate.gateway.fidelity.source import load_world
from simgate.simulators.base import Example, SimulationRequest
from simgate.simulators.fidelity.report import CallFidelityReport
from simgate.simulators.prompts import load as load_prompt


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(tmp dir, store, calls made): the real servers' calls, recorded once for this module."""
    tmp = tmp_path_factory.mktemp("fidelity")
    store, made = anyio.run(record_real_servers, tmp)
    return tmp, store, made


def _report(out: Path) -> CallFidelityReport:
    return CallFidelityReport.model_validate_json((out / "report.json").read_text())


def test_schema_backend_with_a_second_live_call(recorded: tuple[Path, Path, int]) -> None:
    tmp, store, made = recorded
    config = fresh_config(tmp, store)
    out = tmp / "schema-report"
    run = simgate("fidelity", "calls", "--config", str(config), "--backend", "schema", "--second-live",
                  "--out", str(out), cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "few_shot:" in run.stdout and "wrote" in run.stdout
    report = _report(out)
    assert report.backend == "schema" and report.second_live
    assert set(report.servers) == set(RECORDED_SERVERS)
    assert len(report.calls) == 2 * made  # every recorded call, in both settings
    few = report.settings["few_shot"]
    overall = few.overall
    assert overall.calls == made and overall.live_vs_live is not None and overall.live_vs_live.n == made

    # The schema backend synthesizes from the outputSchema: valid wherever it answered.
    assert overall.simulated.schema_validity is not None and overall.simulated.schema_validity >= 0.9
    for tool in ("calculator/calculate", "time/get_current_time", "time/convert_time"):
        assert few.per_tool[tool].simulated.schema_validity == 1.0, tool
    # It never fails, but the recordings hold an isError, a soft error and a JSON-RPC-free failure:
    # outcome agreement is below 1, above 0; κ is a κ.
    live_failures = sum(1 for c in report.calls if c.setting == "few_shot"
                        and c.live_outcome in ("error", "not_found_or_invalid"))
    assert live_failures >= 4
    assert 0 < overall.simulated.outcome_agreement < 1
    assert overall.simulated.kappa is not None and -1 <= overall.simulated.kappa <= 1

    # The noise floor: a pure server is its own perfect copy; a clock is not.
    calc = few.per_tool["calculator/calculate"]
    assert calc.live_vs_live is not None
    assert calc.live_vs_live.outcome_agreement == 1.0 and calc.live_vs_live.value_fidelity == 1.0
    assert calc.live_vs_live.bleu4 is not None and calc.live_vs_live.bleu4 > 99
    clock = few.per_tool["time/get_current_time"].live_vs_live
    assert clock is not None and clock.path_jaccard == 1.0 and clock.value_fidelity is not None
    assert clock.value_fidelity < 1.0  # the datetime moved on between L and L′
    # The stateful sequence replayed from a fresh state agrees with its recording.
    sqlite = few.per_server["sqlite"].live_vs_live
    assert sqlite is not None and sqlite.outcome_agreement == 1.0
    # Ratios are the simulated figure over the floor, on the same calls.
    assert overall.ratio is not None and overall.ratio.outcome_agreement is not None
    assert overall.ratio.outcome_agreement == pytest.approx(
        overall.simulated.outcome_agreement / overall.live_vs_live.outcome_agreement)

    dom, shot = render_in_chromium(out / "report.html", tmp)
    assert_rendered(dom, shot, min_tables=5)
    assert "calculator/calculate" in dom and "Cohen" in dom


def test_examples_backend_few_shot_and_zero_shot(recorded: tuple[Path, Path, int]) -> None:
    tmp, store, made = recorded
    out = tmp / "examples-report"
    run = simgate("fidelity", "calls", "--store", str(store), "--backend", "examples", "--out", str(out), cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _report(out)
    few, zero = report.settings["few_shot"].overall, report.settings["zero_shot"].overall
    # Zero-shot holds out every recording of the tool: the examples backend has nothing to imitate.
    assert zero.simulator_failures == zero.calls == made
    assert zero.simulated.schema_validity == 0.0
    # Few-shot: a tool recorded once has no other recording either; the others answer with a real
    # recorded answer of the same tool, so the answers are well formed and structurally alike.
    world = load_world(store)
    alone = sum(1 for group in world.by_tool.values() if len({r.key for r in group}) == 1)
    assert few.simulator_failures == alone
    answered = [c for c in report.calls if c.setting == "few_shot" and c.simulator_error is None]
    assert answered and all(c.simulated.schema_valid for c in answered)
    assert few.simulated.path_jaccard is not None and few.simulated.path_jaccard > 0.5
    assert report.second_live is False and few.live_vs_live is None and few.ratio is None


def test_export_simulator_sft_matches_the_inference_prompt(recorded: tuple[Path, Path, int]) -> None:
    tmp, store, _made = recorded
    out = tmp / "sft.jsonl"
    run = simgate("export", "simulator-sft", "--store", str(store), "--out", str(out), cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    world = load_world(store)
    assert len(lines) == len(world.recordings)
    prompt = load_prompt("v1")
    for line, recording in zip(lines, world.recordings, strict=True):
        roles = [m["role"] for m in line["messages"]]
        assert roles == ["system", "user", "assistant"]
        spec = world.spec(recording)
        request = SimulationRequest(server=recording.server, tool=spec, arguments=recording.arguments)
        # System and user turns: byte-for-byte what the simulator sends at inference time.
        assert line["messages"][:2] == prompt.build_messages(request)
        # The assistant turn: the recorded answer exactly as the prompt renders a recorded answer.
        example = Example(arguments=recording.arguments, result=recording.result,
                          error=recording.error.model_dump() if recording.error else None)
        shown = prompt.build_messages(request.model_copy(update={"examples": [example]}))
        assert line["messages"][2]["content"] == shown[2]["content"]
        answer = json.loads(line["messages"][2]["content"])
        assert answer["isError"] == recording.is_error
        assert line["metadata"]["tool"] == recording.tool
    with_examples = tmp / "sft-k2.jsonl"
    run = simgate("export", "simulator-sft", "--store", str(store), "--out", str(with_examples), "--examples", "2",
                  cwd=tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    longest = max(len(json.loads(line)["messages"]) for line in with_examples.read_text().splitlines())
    assert longest == 3 + 2 * 2  # two recorded calls shown as user/assistant turns before the call


def _bad(*args: str, cwd: Path) -> str:
    run = simgate(*args, cwd=cwd, timeout=120)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    return run.stderr.strip()


def test_bad_input_is_one_clear_line(recorded: tuple[Path, Path, int], tmp_path: Path) -> None:
    _tmp, store, _made = recorded
    missing = _bad("fidelity", "calls", "--store", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing == f"simgate fidelity calls: no recording store at {tmp_path / 'nowhere'} " \
                      "(give --store DIR or --config FILE)"
    DiskStore(tmp_path / "empty").close()
    empty = _bad("fidelity", "calls", "--store", str(tmp_path / "empty"), cwd=tmp_path)
    assert "holds no recorded call" in empty
    unknown = _bad("fidelity", "calls", "--store", str(store), "--server", "nope", cwd=tmp_path)
    assert "nothing recorded for server 'nope'" in unknown and "calculator" in unknown
    no_url = _bad("fidelity", "calls", "--store", str(store), "--backend", "openai", cwd=tmp_path)
    assert "--base-url" in no_url
    no_config = _bad("fidelity", "calls", "--store", str(store), "--second-live", cwd=tmp_path)
    assert "--second-live needs --config" in no_config
    export = _bad("export", "simulator-sft", "--store", str(store), "--out", str(tmp_path / "no" / "x.jsonl"),
                  cwd=tmp_path)
    assert "does not exist" in export


def test_openai_backend_on_the_tiny_llm(tmp_path: Path, llm_server: LLMServer) -> None:  # noqa: F811
    """A small run with a real LLM behind an OpenAI-compatible API (base Gemma 3 270M: its content is
    meaningless, so structure is asserted, not fidelity)."""
    store, made = anyio.run(record_real_servers, tmp_path, ("calculator",))
    out = tmp_path / "llm-report"
    run = simgate("fidelity", "calls", "--store", str(store), "--backend", "openai", "--base-url", llm_server.base_url,
                  "--model", "gemma", "--max-tokens", "256", "--max-string-length", "32", "--max-array-items", "2",
                  "--timeout", "240", "--examples", "3", "--out", str(out), cwd=tmp_path, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _report(out)
    assert report.backend == "openai" and report.model == "gemma@prompt-v1"
    assert len(report.calls) == 2 * made
    answered = [c for c in report.calls if c.simulator_error is None]
    assert len(answered) >= made  # the repair loop gets most answers through
    # The simulator validates against the outputSchema before it answers: every answer is valid.
    assert all(c.simulated.schema_valid for c in answered), [c.simulated.schema_problem for c in answered]
    few = report.settings["few_shot"].overall.simulated
    assert few.outcome_agreement is not None and few.path_jaccard is not None
