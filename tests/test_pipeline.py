"""The data pipeline end to end with the tiny real LLM as generator, judge and agent, on real servers
behind a real gateway, live and simulated: synth → dedup → judge tasks → run → judge trajectories →
filter → export (Parquet, loaded with `datasets`). The model's text is meaningless: structure and
counts are asserted, not content. A synth killed mid-stage resumes without duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import real_servers as rs
from harness import REPO_ROOT, GatewayProcess, running_gateway
from llm_server import LLMServer

from simgate.runner.pipeline.prompts import TASK_DIMENSIONS, TRAJECTORY_DIMENSIONS

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("pipeline")
    servers = {"calculator": rs.gateway_server("calculator", base / "calculator"),
               "everything": {**rs.gateway_server("everything", base / "everything"),
                              "tools": {"allow": ["echo", "get-sum"]}},
               "time": rs.gateway_server("time", base / "time")}
    config = {"gateway": {"record": "all", "cache_dir": str(base / "cache"), "simulator": {"backend": "schema"}},
              "mcpServers": servers}
    with running_gateway(config, base / "gw") as process:
        yield process


def simgate(*args: str, cwd: Path, timeout: float = 600) -> dict[str, Any]:
    """Run a command; its last stdout line is its JSON summary."""
    result = subprocess.run([sys.executable, "-m", "simgate", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(summaries[-1]) if summaries else {}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(1500)  # a tiny model on two CPUs writes every task, judgement and trajectory
def test_pipeline_end_to_end_live_and_simulated(gateway: GatewayProcess, llm_server: LLMServer,  # noqa: F811
                                                tmp_path: Path) -> None:
    llm = ["--llm-base-url", llm_server.base_url, "--concurrency", "1"]
    synth = ["synth", "--gateway", gateway.mcp_url(), "--strategy", "single:uniform", "--per-server", "2",
             "--model", "gemma-a", "--model", "gemma-b", "--max-tokens", "160", "--temperature", "0",
             "--out", "tasks.jsonl", *llm]
    # A synth killed once its first task is written, then run again: no task twice, none lost.
    process = subprocess.Popen([sys.executable, "-m", "simgate", *synth], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    tasks_file = tmp_path / "tasks.jsonl"
    while process.poll() is None and time.monotonic() < deadline:
        if tasks_file.exists() and tasks_file.read_text().count("\n") >= 1:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=30)
    before = len(lines(tasks_file)) if tasks_file.exists() else 0
    stats = simgate(*synth, cwd=tmp_path)
    tasks = lines(tasks_file)
    ids = [task["id"] for task in tasks]
    assert len(ids) == len(set(ids)), "a resumed synth wrote a task twice"
    assert stats["planned"] == 6 and stats["already_done"] == before
    assert stats["already_done"] + stats["written"] + sum(stats["dropped"].values()) == stats["planned"], stats
    assert len(tasks) == stats["already_done"] + stats["written"]
    if len(tasks) < 2:
        pytest.fail(f"the tiny model produced {len(tasks)} usable tasks of 6 (dropped: {stats['dropped']}); the "
                    "pipeline below needs some")
    for task in tasks:
        assert task["question"] and 1 <= len(task["target_tools"]) <= 3 and len(task["servers"]) == 1
        assert all(tool.startswith(f"{task['servers'][0]}__") for tool in task["target_tools"])
        assert task["metadata"]["generator"] in ("gemma-a", "gemma-b")
        assert task["metadata"]["prompt_version"] == "synth-v1" and task["subset_name"] == "single-server"

    dedup = simgate("dedup", "tasks.jsonl", "--out", "unique.jsonl", cwd=tmp_path)
    unique = lines(tmp_path / "unique.jsonl")
    assert dedup["tasks"] == len(tasks) and dedup["kept"] == len(unique)
    assert dedup["kept"] + dedup["exact_duplicates"] + dedup["near_duplicates"] == dedup["tasks"]

    judged_stats = simgate("judge", "tasks", "unique.jsonl", "--gateway", gateway.mcp_url(), "--model", "judge",
                           "--max-tokens", "600", "--out", "judged.jsonl", *llm, cwd=tmp_path)
    judged = lines(tmp_path / "judged.jsonl")
    assert judged_stats["judged"] + judged_stats["failed"] == len(unique) == len(judged)
    for task in judged:
        assessment = task["question_quality_assessment"]
        assert assessment["judge"] == {"model": "judge", "prompt_version": "judge-task-v1"}
        if "error" not in assessment:
            assert all(1 <= assessment[name]["score"] <= 5 for name in TASK_DIMENSIONS)

    for mode in ("live", "simulated"):
        simgate("run", "--tasks", "judged.jsonl", "--gateway", gateway.mcp_url(), "--mode", mode, "--model", "gemma",
                "--llm-base-url", llm_server.base_url, "--agent", "prompted", "--max-turns", "2", "--max-tokens", "80",
                "--max-string-length", "32", "--max-array-items", "3", "--no-progress", "--out", f"run-{mode}.jsonl",
                cwd=tmp_path)
        trajectories = lines(tmp_path / f"run-{mode}.jsonl")
        assert len(trajectories) == len(judged) and {t["mode"] for t in trajectories} == {mode}
        # The task's own keys travel into the trajectory (subset, metadata, the judge's scores).
        assert all("question_quality_assessment" in t or "subset_name" in t or t["id"] for t in trajectories)
        simgate("judge", "trajectories", f"run-{mode}.jsonl", "--model", "judge", "--max-tokens", "250",
                "--tool-output-budget", "300", "--out", f"judged-{mode}.jsonl", *llm, cwd=tmp_path)
        scored = lines(tmp_path / f"judged-{mode}.jsonl")
        assert len(scored) == len(trajectories)
        for trajectory in scored:
            assessment = trajectory["response_quality_assessment"]
            assert assessment["judge"] == {"model": "judge", "prompt_version": "judge-trajectory-v1"}
            if "error" not in assessment:
                assert all(1 <= assessment[name]["score"] <= 5 for name in TRAJECTORY_DIMENSIONS)
            assert "passed" in trajectory["checks"]  # the runner's rule checks stay beside the judge's scores
        kept = simgate("filter", f"judged-{mode}.jsonl", "--where", "completeness >= 1", "--out",
                       f"kept-{mode}.jsonl", cwd=tmp_path)
        judged_ok = sum("error" not in t["response_quality_assessment"] for t in scored)
        assert kept["kept"] == judged_ok and kept["records"] == len(scored)
        simgate("export", "trajectories", f"judged-{mode}.jsonl", "--format", "toucan", "--out",
                f"toucan-{mode}.parquet", cwd=tmp_path)
        import datasets

        dataset = datasets.load_dataset("parquet", data_files=str(tmp_path / f"toucan-{mode}.parquet"),
                                        split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert set(dataset.column_names) == {"uuid", "subset_name", "question", "target_tools", "available_tools",
                                             "messages", "question_quality_assessment",
                                             "response_quality_assessment", "metadata"}
        assert len(dataset) == len(scored)
        for row in dataset:
            messages = json.loads(row["messages"])
            assert {m["role"] for m in messages} <= {"system", "user", "assistant", "function"}
            assert all("function_call" in m or "content" in m for m in messages)


@pytest.mark.timeout(900)
def test_pipeline_run_declared_once_resumes_and_refuses_changed_settings(gateway: GatewayProcess,  # noqa: F811
                                                                         llm_server: LLMServer,
                                                                         tmp_path: Path) -> None:
    import yaml

    pipeline = {"dir": "out", "gateway": gateway.mcp_url(),
                "llm": {"base_url": llm_server.base_url, "model": "gemma", "max_tokens": 160},
                "stages": {"synth": {"strategy": "single:random", "count": 3, "temperature": 0, "concurrency": 1},
                           "dedup": {"threshold": 0.8},
                           "run": {"mode": "simulated", "agent": "prompted", "max_turns": 2, "max_tokens": 80,
                                   "max_string_length": 32, "max_array_items": 3},
                           "filter": {"where": "has_final_answer or not has_final_answer"},
                           "export": {"format": "toucan", "file": "dataset.parquet"}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    first = subprocess.run([sys.executable, "-m", "simgate", "pipeline", "run", str(path)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=800, env=ENV)
    assert first.returncode == 0, first.stdout + first.stderr
    stages = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert [s["stage"] for s in stages] == ["synth", "dedup", "run", "filter", "export"]
    out = tmp_path / "out"
    for name in ("01-synth", "02-dedup", "04-run", "06-filter"):
        manifest = json.loads((out / f"{name}.manifest.json").read_text())
        assert manifest["prompt_versions"]["synth"] == "synth-v1" and manifest["settings"] is not None
    tasks = lines(out / "02-dedup.jsonl")
    trajectories = lines(out / "04-run.jsonl")
    assert len(trajectories) == len(tasks) and all(t["mode"] == "simulated" for t in trajectories)
    assert stages[-1]["rows"] == len(lines(out / "06-filter.jsonl")) == len(trajectories)
    assert "| simulated |" in (out / "README.md").read_text() or not trajectories  # the dataset card
    # A second run does nothing again (every stage finished with the same settings).
    again = subprocess.run([sys.executable, "-m", "simgate", "pipeline", "run", str(path)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120, env=ENV)
    assert again.returncode == 0 and again.stdout == first.stdout, again.stdout + again.stderr
    # Changing a finished stage's settings is refused, naming it, instead of mixing two settings.
    pipeline["stages"]["dedup"]["threshold"] = 0.5
    path.write_text(yaml.safe_dump(pipeline))
    changed = subprocess.run([sys.executable, "-m", "simgate", "pipeline", "run", str(path)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env=ENV)
    assert changed.returncode == 2 and "stage dedup already ran with other settings" in changed.stderr


@pytest.mark.timeout(900)
def test_extensions_persona_and_irrelevance(gateway: GatewayProcess, llm_server: LLMServer,  # noqa: F811
                                            tmp_path: Path) -> None:
    tasks = [{"id": "calc-1", "question": "What is 2 to the power of 10, plus 3?", "servers": ["calculator"],
              "target_tools": ["calculator__calculate"], "subset_name": "single-server",
              "metadata": {"strategy": "hand"}},
             {"id": "time-1", "question": "What time is it now in Tokyo?", "servers": ["time"],
              "target_tools": ["time__get_current_time"], "metadata": {"strategy": "hand"}}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(task) + "\n" for task in tasks))
    stats = simgate("extend", "persona", "tasks.jsonl", "--gateway", gateway.mcp_url(), "--count", "2",
                    "--llm-base-url", llm_server.base_url, "--model", "gemma", "--max-tokens", "200",
                    "--concurrency", "1", "--out", "personas.jsonl", cwd=tmp_path)
    written = lines(tmp_path / "personas.jsonl")
    assert stats["written"] + sum(stats["dropped"].values()) == 4 == stats["source_tasks"] * 2
    assert len(written) == stats["written"] and len({t["id"] for t in written}) == len(written)
    for task in written:
        source = next(t for t in tasks if task["id"].startswith(t["id"] + "-persona-"))
        assert task["target_tools"] == source["target_tools"] and task["servers"] == source["servers"]
        assert task["metadata"]["source_id"] == source["id"] and task["metadata"]["extension"] == "persona"
    # A re-run writes nothing twice.
    again = simgate("extend", "persona", "tasks.jsonl", "--gateway", gateway.mcp_url(), "--count", "2",
                    "--llm-base-url", llm_server.base_url, "--model", "gemma", "--max-tokens", "200",
                    "--out", "personas.jsonl", cwd=tmp_path)
    # A re-run keeps what was written and retries only what was dropped: no id twice.
    after = lines(tmp_path / "personas.jsonl")
    assert after[:len(written)] == written and len({t["id"] for t in after}) == len(after) <= 4
    assert again["already_done"] + again["written"] + sum(again["dropped"].values()) == 4
    irrelevant = simgate("extend", "irrelevance", "tasks.jsonl", "--gateway", gateway.mcp_url(), "--out",
                         "irrelevant.jsonl", cwd=tmp_path)
    made = lines(tmp_path / "irrelevant.jsonl")
    assert irrelevant["written"] == len(made) == 2
    assert all(t["target_tools"] == [] and t["servers"][0] not in src["servers"] for t, src in zip(made, tasks, strict=False))
