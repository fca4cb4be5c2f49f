"""`simgate export trajectories`: TOUCAN columns and ShareGPT, on trajectories with known conversions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import REPO_ROOT

from simgate.runner.export.formats import ExportError, to_sharegpt, to_toucan

TOOLS = [{"type": "function", "function": {"name": "calc__calculate", "description": "Evaluate",
                                           "parameters": {"type": "object", "properties": {"expression": {}}}}}]


def _trajectory(**overrides: Any) -> dict[str, Any]:
    trajectory: dict[str, Any] = {
        "id": "t1", "question": "What is 6*7 and 2+2?", "mode": "replay", "repeat": 0, "session": "s-1",
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "What is 6*7 and 2+2?"},
            {"role": "assistant", "content": "Let me compute.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "calc__calculate",
                                                              "arguments": "{\"expression\": \"6*7\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "calc__calculate",
                                                              "arguments": "{\"expression\": \"2+2\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "tool", "tool_call_id": "c2", "content": "4"},
            {"role": "assistant", "content": [{"type": "text", "text": "42 and 4."}]},
        ],
        "tools": TOOLS, "target_tools": ["calc__calculate"],
        "tool_events": [{"step": 0, "name": "calc__calculate", "source": "cache", "is_error": False}],
        "final_answer": "42 and 4.", "outcome": "final_answer", "error": None, "usage": {"total_tokens": 10},
        "checks": {"passed": True}, "agent": {"kind": "prompted"}, "created_at": "2026-11-24T00:00:00+00:00",
    }
    trajectory.update(overrides)
    return trajectory


def test_toucan_columns() -> None:
    row = to_toucan(_trajectory())
    assert set(row) == {"uuid", "subset_name", "question", "target_tools", "available_tools", "messages",
                        "question_quality_assessment", "response_quality_assessment", "metadata"}
    assert row["subset_name"] == "simgate-replay" and row["target_tools"] == "calc__calculate"
    # The published message shape: one assistant message per call (function_call), answers as role function.
    assert json.loads(row["messages"]) == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is 6*7 and 2+2?"},
        {"role": "assistant", "content": "Let me compute."},
        {"role": "assistant", "content": "", "function_call": {"name": "calc__calculate",
                                                               "arguments": "{\"expression\": \"6*7\"}"}},
        {"role": "assistant", "content": "", "function_call": {"name": "calc__calculate",
                                                               "arguments": "{\"expression\": \"2+2\"}"}},
        {"role": "function", "name": "calc__calculate", "content": "42"},
        {"role": "function", "name": "calc__calculate", "content": "4"},
        {"role": "assistant", "content": "42 and 4."}]
    assert json.loads(row["available_tools"]) == TOOLS
    assert json.loads(row["metadata"])["mcp_servers"] == [{"server_name": "calc", "remote_server_response": {
        "tools": [{"name": "calculate", "description": "Evaluate", "input_schema": TOOLS[0]["function"]["parameters"]}]}}]
    # Not judged: no assessment is made up.
    assert row["question_quality_assessment"] is None and row["response_quality_assessment"] is None
    judged = to_toucan(_trajectory(
        checks={"passed": True, "target_tool_share": 1.0, "target_order_kept": True},
        task_extra={"question_quality_assessment": {"question_quality": {"reasoning": "clear", "score": 5}}},
        response_quality_assessment={"completeness": {"reasoning": "a", "score": 5},
                                     "conciseness": {"reasoning": "b", "score": 3}, "judge": {"model": "m"}}))
    assert json.loads(judged["question_quality_assessment"])["question_quality"]["score"] == 5
    response = json.loads(judged["response_quality_assessment"])
    assert response["overall_score"] == 4.0 and response["desired_tools_used_percentage"] == 1.0
    assert response["order_correctness"] is True
    assert json.loads(row["metadata"])["tool_events"][0]["source"] == "cache"
    # Stable per (id, mode, repeat): re-exports deduplicate; another repeat is another row.
    assert row["uuid"] == to_toucan(_trajectory())["uuid"] != to_toucan(_trajectory(repeat=1))["uuid"]


def test_a_tasks_own_keys_are_kept_in_every_format() -> None:
    extra = {"subset_name": "multi-server", "question_quality_assessment": {"clarity": 5}, "source": "toucan"}
    row = to_toucan(_trajectory(task_extra=extra))
    assert row["subset_name"] == "multi-server"  # not simgate-replay: the task's own subset
    assert json.loads(row["question_quality_assessment"]) == {"clarity": 5}
    assert json.loads(row["metadata"])["task"] == extra
    assert to_toucan(_trajectory(task_extra=extra), subset_name="chosen")["subset_name"] == "chosen"
    record = to_sharegpt(_trajectory(task_extra={**extra, "tools": "not the record's"}))
    assert record["subset_name"] == "multi-server" and record["source"] == "toucan"
    assert json.loads(record["tools"]) == [TOOLS[0]["function"]]  # the record's own fields win
    with pytest.raises(ExportError, match="task_extra must be an object"):
        to_toucan(_trajectory(task_extra=["x"]))


def test_sharegpt_turns_with_parallel_calls() -> None:
    record = to_sharegpt(_trajectory())
    assert record["system"] == "You are helpful."
    assert [turn["from"] for turn in record["conversations"]] == ["human", "gpt", "function_call", "observation",
                                                                  "gpt"]
    calls = json.loads(record["conversations"][2]["value"])
    assert calls == [{"name": "calc__calculate", "arguments": {"expression": "6*7"}},
                     {"name": "calc__calculate", "arguments": {"expression": "2+2"}}]
    assert json.loads(record["conversations"][3]["value"]) == ["42", "4"]
    assert record["conversations"][4]["value"] == "42 and 4."
    assert json.loads(record["tools"]) == [TOOLS[0]["function"]]


def test_a_single_call_is_one_object_and_malformed_arguments_are_kept() -> None:
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "[\"a list\"]"}]
    record = to_sharegpt(_trajectory(messages=messages))
    assert json.loads(record["conversations"][1]["value"]) == {"name": "f", "arguments": "{not json"}
    assert record["conversations"][2] == {"from": "observation", "value": "[\"a list\"]"}


def test_bad_trajectories_are_refused() -> None:
    with pytest.raises(ExportError, match="lacks messages"):
        to_toucan({"id": "x", "question": "q", "tools": []})
    with pytest.raises(ExportError, match="unknown message role 'robot'"):
        to_sharegpt(_trajectory(messages=[{"role": "robot", "content": "beep"}]))


def _export(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simgate", "export", "trajectories", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_export_command(tmp_path: Path) -> None:
    source = tmp_path / "run.jsonl"
    lines = [_trajectory(), _trajectory(id="t2", checks={"passed": False})]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = _export(tmp_path, "run.jsonl", "--format", "sharegpt", "--out", "out.jsonl", "--only-passed")
    assert done.returncode == 0, done.stderr
    assert "wrote 1 sharegpt rows" in done.stdout and "1 without passed checks" in done.stdout
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1

    # A broken line names file and line, and the previous output stays as it was.
    source.write_text(json.dumps(_trajectory()) + "\n{broken\n")
    failed = _export(tmp_path, "run.jsonl", "--out", "out.jsonl")
    assert failed.returncode == 2 and "run.jsonl:2:" in failed.stderr and "Traceback" not in failed.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_a_dataset_card_counts_what_is_in_the_file_and_draws_the_scores(tmp_path: Path) -> None:
    from simgate.runner.export.card import card_facts

    def judged(mode: str, completeness: int, generator: str | None) -> dict[str, Any]:
        return _trajectory(mode=mode, task_extra={"subset_name": "single-server", "metadata": (
            {"generator": generator, "filter": "sft"} if generator else {})},
            response_quality_assessment={"completeness": {"reasoning": "r", "score": completeness},
                                         "judge": {"model": "m", "prompt_version": "v"}})
    rows = [judged("live", 5, "gen-a"), judged("simulated", 4, "gen-b"), judged("simulated", 5, None),
            _trajectory(mode="live", response_quality_assessment={"error": "not JSON", "judge": {}})]
    facts = card_facts(rows)
    assert facts.rows == 4 and facts.modes == {"live": 2, "simulated": 2}
    assert facts.generators == {"gen-a": 1, "gen-b": 1, "hand-written": 2} and facts.filters == {"sft": 2}
    assert facts.scores == {"completeness": {1: 0, 2: 0, 3: 0, 4: 1, 5: 2}}  # the failed judgement counts nowhere
    source = tmp_path / "run.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = subprocess.run([sys.executable, "-m", "simgate", "export", "trajectories", str(source), "--format",
                             "toucan", "--out", str(tmp_path / "data.parquet"), "--card"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    card = (tmp_path / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "data_files: data.parquet" in card
    assert "| simulated | 2 |" in card and "![completeness](card/completeness.svg)" in card
    svg = (tmp_path / "card" / "completeness.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<rect") >= 2
