"""The trajectory runner end to end: the tiny real LLM (prompted, temperature 0) drives real servers
through a real gateway in live mode with recording on; the same tasks replay byte-identically with
every upstream gone; simulated mode runs with no upstream at all; the OpenAI Agents SDK works
through the gateway unchanged; a runner killed mid-run resumes with no duplicate and no lost line;
`simgate fidelity trajectories` hands the report writer what it promised, and its replay on the same
gateway equals live; a task's own keys are kept in the trajectory and its exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import real_servers as rs
from harness import REPO_ROOT, GatewayProcess, fixture_server, kill_once_written, running_gateway
from llm_server import LLMServer

from simgate.runner.export.formats import to_sharegpt, to_toucan
from simgate.runner.run import run_tasks
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import Task, parse_tasks

ROOT = rs.default_install_root()
GONE = {"command": "/bin/false"}  # an upstream that cannot start
# The everything server has many tools; two keep the prompt (and the tiny model's time) small.
EVERYTHING_TOOLS = {"allow": ["echo", "get-sum"]}
TRAJECTORY_KEYS = {"id", "question", "mode", "repeat", "session", "messages", "tools", "target_tools", "tool_events",
                   "final_answer", "outcome", "error", "usage", "checks", "agent", "created_at", "turns",
                   "conversation_end", "task_extra"}
EVENT_KEYS = {"step", "call_id", "name", "server", "tool", "arguments", "source", "cache_key", "latency_ms",
              "is_error"}
TASKS = [
    {"id": "calc-1", "question": "What is 2**10 + 3? Use the calculator.", "servers": ["calculator"],
     "target_tools": ["calculator__calculate"], "subset_name": "single-server"},
    {"id": "sum-1", "question": "What is 2 plus 40?", "servers": ["everything"],
     "target_tools": ["everything__get-sum"]},
]


def _real(name: str, work_dir: Path) -> dict[str, Any]:
    return rs.gateway_server(name, work_dir, ROOT)


def _settings(gateway: GatewayProcess, llm: LLMServer, mode: str, **overrides: Any) -> RunSettings:
    # small bounds: the base model would ramble on until max_tokens
    values: dict[str, Any] = {"gateway": gateway.url, "mode": mode, "llm_base_url": llm.base_url, "model": "gemma",
                              "agent": "prompted", "max_turns": 2, "max_tokens": 80, "max_string_length": 32,
                              "max_array_items": 3, "temperature": 0.0, "seed": 0, "task_timeout": 180,
                              "progress": False}
    return RunSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Two pure real servers, recording every live answer; a schema simulator for simulated calls."""
    base = tmp_path_factory.mktemp("live")
    servers = {"calculator": _real("calculator", base / "calculator"),
               "everything": {**_real("everything", base / "everything"), "tools": EVERYTHING_TOOLS}}
    config = {"gateway": {"record": "all", "cache_dir": str(base / "cache"), "simulator": {"backend": "schema"}},
              "mcpServers": servers}
    with running_gateway(config, base / "gw") as gateway:
        yield gateway


def _upstreams_never_ready(gateway: GatewayProcess) -> bool:
    states = [s["state"] for s in httpx.get(gateway.url + "/admin/servers", timeout=10).json()["servers"]]
    return bool(states) and all(state != "ready" for state in states)


def _check_shape(trajectory: dict[str, Any], task: dict[str, Any], mode: str, *, kind: str = "prompted",
                 prefix: str = "") -> None:
    assert set(trajectory) == TRAJECTORY_KEYS
    assert trajectory["id"] == task["id"] and trajectory["mode"] == mode and trajectory["repeat"] == 0
    # the session names the mode; a replay names the live session it replays
    session = f"{prefix}{'live' if mode == 'replay' else mode}/{task['id']}#0"
    assert trajectory["session"] == session and trajectory["target_tools"] == task["target_tools"]
    assert trajectory["task_extra"] == {k: v for k, v in task.items() if k not in ("id", "question", "servers",
                                                                                 "target_tools")}
    assert trajectory["outcome"] in ("final_answer", "max_turns", "timeout", "error")
    assert trajectory["agent"] == {"kind": kind, "model": "gemma", "temperature": 0.0, "seed": 0, "max_turns": 2}
    messages = trajectory["messages"]
    assert [m["role"] for m in messages[:2]] == ["system", "user"] and messages[1]["content"] == task["question"]
    # a task without follow-ups is one user turn
    assert trajectory["turns"] == [{"question": task["question"], "source": "task", "message": 1,
                                    "outcome": trajectory["outcome"], "user_model": None}]
    assert trajectory["conversation_end"] == ("single turn" if trajectory["outcome"] == "final_answer"
                                              else "the agent gave no final answer to turn 1"
                                              if trajectory["outcome"] == "max_turns" else None)
    # only the task's server's tools are offered, as OpenAI function tools
    prefix = task["servers"][0] + "__"
    assert trajectory["tools"] and all(t["type"] == "function" and t["function"]["name"].startswith(prefix)
                                       for t in trajectory["tools"])
    # every assistant tool call is answered by a `role: tool` message with its id, and has its event
    asked = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert [c["id"] for c in asked] == answered == [e["call_id"] for e in trajectory["tool_events"]]
    for call, event in zip(asked, trajectory["tool_events"], strict=True):
        assert set(event) == EVENT_KEYS
        assert event["name"] == call["function"]["name"] and event["arguments"] == json.loads(
            call["function"]["arguments"])
        assert event["server"] == task["servers"][0] and event["name"] == f"{event['server']}__{event['tool']}"
    usage = trajectory["usage"]
    assert usage["llm_calls"] >= 1 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def _events(trajectories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for t in trajectories for e in t["tool_events"]]


def test_live_then_replay_with_upstreams_gone_then_simulated_with_none(
        live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    tasks = parse_tasks([json.dumps(t) for t in TASKS])
    live_out = tmp_path / "live.jsonl"
    live = anyio.run(run_tasks, tasks, _settings(live_gateway, llm_server, "live"), live_out)
    lines = [json.loads(line) for line in live_out.read_text().splitlines()]
    assert [t.model_dump(mode="json") for t in live] == lines  # returned = written
    for trajectory, task in zip(lines, TASKS, strict=True):
        _check_shape(trajectory, task, "live")
    events = _events(lines)
    assert events and all(e["source"] == "live" and e["cache_key"] for e in events)
    assert any(not e["is_error"] for e in events)  # a real server answered
    assert any(t["checks"]["has_tool_call"] for t in lines)
    assert to_toucan(lines[0])["subset_name"] == "single-server"  # the task's own key, kept through run and export
    assert to_sharegpt(lines[0])["subset_name"] == "single-server"

    # Replay: a second gateway on the same recordings whose upstreams cannot even start; its default
    # mode is live, so it is the runner's X-Simgate-Mode header that makes every call a replay.
    cache = live_gateway.workdir.parent / "cache"
    gone = {"calculator": GONE, "everything": {**GONE, "tools": EVERYTHING_TOOLS}}
    with running_gateway({"gateway": {"cache_dir": str(cache)}, "mcpServers": gone}, tmp_path / "replay",
                         wait_ready=False) as replaying:
        replayed = [t.model_dump(mode="json") for t in
                    anyio.run(run_tasks, tasks, _settings(replaying, llm_server, "replay"), tmp_path / "replay.jsonl")]
        assert _upstreams_never_ready(replaying)
    for got, want in zip(replayed, lines, strict=True):
        assert json.dumps(got["messages"]) == json.dumps(want["messages"])  # byte-identical at temperature 0
        assert got["tools"] == want["tools"] and got["final_answer"] == want["final_answer"]
        assert got["outcome"] == want["outcome"] and got["mode"] == "replay"
        assert got["session"] == want["session"] and got["task_extra"] == want["task_extra"]
    replay_events = _events(replayed)
    assert all(e["source"] == "cache" for e in replay_events)
    assert [e["cache_key"] for e in replay_events] == [e["cache_key"] for e in events]

    # Simulated: no upstream at all (the tool list comes from the recordings), a schema simulator.
    simulator = {"cache_dir": str(cache), "simulator": {"backend": "schema"}}
    with running_gateway({"gateway": simulator, "mcpServers": gone}, tmp_path / "sim", wait_ready=False) as simulating:
        simulated = [t.model_dump(mode="json") for t in
                     anyio.run(run_tasks, tasks, _settings(simulating, llm_server, "simulated"), tmp_path / "sim.jsonl")]
        assert _upstreams_never_ready(simulating)
    for trajectory, task in zip(simulated, TASKS, strict=True):
        _check_shape(trajectory, task, "simulated")
    sim_events = _events(simulated)
    assert sim_events and all(e["source"] == "simulator" for e in sim_events)


def test_replay_straight_after_live_on_one_gateway_equals_live(
        live_gateway: GatewayProcess, llm_server: LLMServer) -> None:  # noqa: F811
    # The same gateway, the same session names: each trajectory's fresh connection replays the
    # recorded session from its first call, not from where the live run left the name.
    tasks = [Task(**TASKS[0])]
    settings = _settings(live_gateway, llm_server, "live", session_prefix="again/")
    (live,) = anyio.run(run_tasks, tasks, settings, None)
    (replayed,) = anyio.run(run_tasks, tasks, settings.model_copy(update={"mode": "replay"}), None)
    assert live.tool_events and all(e.source == "live" for e in live.tool_events)
    assert json.dumps(replayed.messages) == json.dumps(live.messages)
    assert [e.source for e in replayed.tool_events] == ["cache"] * len(live.tool_events)
    assert replayed.session == live.session == "again/live/calc-1#0"


def test_native_agent_calls_the_gateway_tools_as_functions(
        live_gateway: GatewayProcess, llm_server: LLMServer) -> None:  # noqa: F811
    task = {"id": "native-1", "question": "Echo hi", "servers": ["everything"], "target_tools": ["everything__echo"]}
    settings = _settings(live_gateway, llm_server, "live", agent="native", max_tokens=128, session_prefix="native/")
    (trajectory,) = anyio.run(run_tasks, [Task(**task)], settings, None)  # no output file: returned only
    dumped = trajectory.model_dump(mode="json")
    _check_shape(dumped, task, "live", kind="native", prefix="native/")
    assert dumped["tool_events"] and all(e["source"] == "live" for e in dumped["tool_events"])
    assert dumped["checks"]["target_tool_share"] == 1.0


def test_a_slow_trajectory_is_written_as_a_timeout(
        live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    task = Task(id="slow-1", question="What is 6 * 7?", servers=["calculator"])
    settings = _settings(live_gateway, llm_server, "live", task_timeout=0.05, max_tokens=16, session_prefix="slow/")
    out = tmp_path / "slow.jsonl"
    (trajectory,) = anyio.run(run_tasks, [task], settings, out)
    assert trajectory.outcome == "timeout" and trajectory.final_answer is None
    assert trajectory.error == "the trajectory took longer than 0.05s"
    assert json.loads(out.read_text())["outcome"] == "timeout"  # written: a rerun does not retry it


def test_prompted_agent_falls_back_when_the_endpoint_refuses_a_tool_schema(
        llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    from simgate.runner.agents.prompted import answer_schema, response_format

    config = {"gateway": {"cache_dir": str(tmp_path / "cache")},
              "mcpServers": {"odd": fixture_server("runner_schema_server.py")}}
    with running_gateway(config, tmp_path / "gw") as gateway:
        settings = _settings(gateway, llm_server, "live", max_turns=1, max_tokens=48)
        (trajectory,) = anyio.run(run_tasks, [Task(id="odd-1", question="Look up the key x.")], settings, None)
    # the precondition: this endpoint refuses the tool's own argument schema
    refused = httpx.post(f"{llm_server.base_url}/chat/completions", timeout=60, json={
        "model": "gemma", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
        "response_format": response_format(answer_schema(trajectory.tools, per_tool_arguments=True, max_string=None,
                                                         max_items=None))})
    assert refused.status_code == 400, refused.text
    # The refusal did not end the trajectory: the model answered under the looser schema (the tiny
    # model's answer itself may still be cut off by max_tokens: that is its own error, not HTTP's).
    assert trajectory.usage.llm_calls == 1  # the refused request is not a model turn
    assert "HTTP" not in (trajectory.error or "")
    answer = trajectory.messages[2]
    assert answer["role"] == "assistant"
    assert (answer.get("tool_calls") or [{}])[0].get("function", {}).get("name") == "odd__lookup" or (
        answer.get("content") or "").replace(" ", "").replace("\n", "").startswith('{"tool_call":{"name":"odd__lookup"')


def test_agents_sdk_adapter_runs_a_task_through_the_gateway(
        live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    pytest.importorskip("agents", reason="the OpenAI Agents SDK (openai-agents) is not installed")
    task = Task(id="sdk-1", question="What is 2 plus 40?", servers=["everything"],
                target_tools=["everything__get-sum"])
    settings = _settings(live_gateway, llm_server, "live", agent="agents-sdk", agents_sdk_tool_calls="prompted",
                         session_prefix="sdk/")
    (trajectory,) = anyio.run(run_tasks, [task], settings, tmp_path / "sdk.jsonl")
    assert trajectory.error is None and trajectory.outcome in ("final_answer", "max_turns")
    assert trajectory.session == "sdk/live/sdk-1#0" and trajectory.agent.kind == "agents-sdk"
    messages = trajectory.messages
    assert [m["role"] for m in messages[:2]] == ["system", "user"]
    asked = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert asked, messages  # the framework called the gateway's tools
    answered = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert [c["id"] for c in asked] == answered == [e.call_id for e in trajectory.tool_events]
    assert all(e.source == "live" and e.server == "everything" and e.cache_key for e in trajectory.tool_events)
    assert trajectory.usage.llm_calls >= 1 and trajectory.usage.prompt_tokens > 0


def _simgate(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "simgate", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, **kwargs)


def _cli_args(gateway: GatewayProcess, llm: LLMServer, tasks: Path, out: Path) -> list[str]:
    return ["run", "--tasks", str(tasks), "--gateway", gateway.url, "--llm-base-url", llm.base_url, "--model", "gemma",
            "--out", str(out), "--max-turns", "1", "--max-tokens", "64", "--max-string-length", "24", "--no-progress"]


def test_killed_runner_resumes_without_duplicates_or_half_lines(
        live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    ids = [f"kill-{n}" for n in range(3)]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": i, "question": f"What is {n} * 7?", "servers": ["calculator"]}) + "\n"
                             for n, i in enumerate(ids)))
    out = tmp_path / "out.jsonl"
    first = _simgate(*_cli_args(live_gateway, llm_server, tasks, out), "--session-prefix", "kill/")
    kill_once_written(first, out, timeout=150)
    before = out.read_bytes()
    done_before = before.count(b"\n")
    assert 1 <= done_before < len(ids), "the kill must come mid-run"
    # As if the kill had come in the middle of the next line's write:
    with open(out, "ab") as handle:
        handle.write(b'{"id": "kill-2", "question": "What is 2 * 7?", "mo')

    second = _simgate(*_cli_args(live_gateway, llm_server, tasks, out), "--session-prefix", "kill/")
    _, stderr = second.communicate(timeout=240)
    assert second.returncode == 0, stderr.decode()
    assert f"{done_before} already there".encode() in stderr
    after = out.read_bytes()
    assert after.startswith(before)  # nothing finished was lost or rewritten
    lines = after.decode().splitlines()
    assert after.endswith(b"\n") and all(json.loads(line) for line in lines)  # no half line
    written = [json.loads(line)["id"] for line in lines]
    assert sorted(written) == sorted(ids) and len(written) == len(set(written))


def test_cli_errors_are_one_line(live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "a", "question": "q"}\n{"id": "b"}\n')
    bad = _simgate(*_cli_args(live_gateway, llm_server, tasks, tmp_path / "o.jsonl"))
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2 and stderr.decode().strip() == f"simgate run: {tasks}:2: question: Field required"

    tasks.write_text('{"id": "a", "question": "q"}\n')
    args = _cli_args(live_gateway, llm_server, tasks, tmp_path / "o.jsonl")
    args[args.index("--gateway") + 1] = "http://127.0.0.1:9/mcp"
    nowhere = _simgate(*args)
    _, stderr = nowhere.communicate(timeout=60)
    assert nowhere.returncode == 2 and "Traceback" not in stderr.decode()
    assert stderr.decode().startswith("simgate run: cannot reach the gateway at http://127.0.0.1:9/mcp")
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


def test_fidelity_trajectories_runs_k_times_per_mode_and_reports(
        live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    from simgate.gateway.cli import build_parser

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(TASKS[0]) + "\n")
    out = tmp_path / "fidelity"
    args = build_parser().parse_args([
        "fidelity", "trajectories", "--tasks", str(tasks), "--gateway", live_gateway.url,
        "--modes", "live,replay,simulated",
        "--k", "2", "--llm-base-url", llm_server.base_url, "--model", "gemma", "--out", str(out), "--max-turns", "1",
        "--max-tokens", "64", "--max-string-length", "24", "--no-progress", "--session-prefix", "fid/",
        "--concurrency", "2"])
    assert args.handler(args) == 0
    written = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(written) == 6
    # Written as they finish (concurrency 2): ordered here by repeat.
    by_mode = {mode: sorted((t for t in written if t["mode"] == mode), key=lambda t: t["repeat"])
               for mode in ("live", "replay", "simulated")}
    sources_of = {"live": "live", "replay": "cache", "simulated": "simulator"}
    for mode, trajectories in by_mode.items():
        assert [(t["id"], t["repeat"]) for t in trajectories] == [("calc-1", 0), ("calc-1", 1)]
        named = "live" if mode == "replay" else mode  # a replay names the live session it replays
        assert [t["session"] for t in trajectories] == [f"fid/{named}/calc-1#0", f"fid/{named}/calc-1#1"]
        assert [t["agent"]["seed"] for t in trajectories] == [0, 1]  # each repeat samples with its own seed
        sources = {e["source"] for t in trajectories for e in t["tool_events"]}
        assert sources <= {sources_of[mode]}
    # On the same gateway, right after the live runs, each replay is its live run.
    for live_run, replayed in zip(by_mode["live"], by_mode["replay"], strict=True):
        assert live_run["tool_events"] and json.dumps(replayed["messages"]) == json.dumps(live_run["messages"])
        assert [e["cache_key"] for e in replayed["tool_events"]] == [e["cache_key"] for e in live_run["tool_events"]]
    # The non-live runs' calls, replayed against live: with one turn at temperature 0 they are the
    # live runs' own first calls, so live must judge them exactly as it answered the live runs.
    replay = json.loads((out / "live_replay.json").read_text())
    simulated_events = [e for t in by_mode["simulated"] for e in t["tool_events"]]
    non_live_events = [e for mode in ("replay", "simulated") for t in by_mode[mode] for e in t["tool_events"]]
    live_events = {(t["repeat"], e["step"]): e for t in by_mode["live"] for e in t["tool_events"]}
    assert replay["calls"] == len(non_live_events) > 0
    for call in replay["per_call"]:
        twin = live_events[(call["repeat"], call["step"])]
        assert (call["name"], call["arguments"]) == (twin["name"], twin["arguments"])
        assert call["live_is_error"] == twin["is_error"]
    assert replay["valid"] == sum(not c["live_is_error"] for c in replay["per_call"])
    # The report: both modes summarized, simulated compared with live (k=2 gives a live-vs-live floor),
    # the live replay folded in; the HTML page beside it.
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "live" and {m: s["trajectories"] for m, s in report["modes"].items()} == {
        "live": 2, "replay": 2, "simulated": 2}
    # what answered each mode, and what the simulator was shown: the task's recordings held out by itself
    assert set(report["shown"]) == {"live", "replay", "simulated"} and "hold-out 'task'" in report["shown"]["simulated"]
    comparisons = {c["mode"]: c for c in report["comparisons"]}
    assert comparisons["replay"]["pairs"]["edit_distance"] == 0 and comparisons["replay"]["pairs"]["pairs"] == 2
    comparison = comparisons["simulated"]
    assert comparison["pairs"]["pairs"] == 2  # repeat i with repeat i
    if report["modes"]["live"]["repeats"]["tasks_all_identical"]:  # temperature 0: copies, and said to be
        assert any("are identical" in reason for reason in comparison["degenerate"])
    assert comparison["live_vs_live"]["pairs"] == 1
    assert comparison["gap"]["ci_low"] <= comparison["gap"]["gap"] <= comparison["gap"]["ci_high"]
    assert comparison["replay"]["calls"] == len(simulated_events)
    assert comparison["replay"]["valid_calls"] == sum(not c["live_is_error"] for c in replay["per_call"]
                                                      if c["mode"] == "simulated")
    html = (out / "report.html").read_text()
    assert "<table" in html and "<svg" in html and "simulated" in html
    # a second run finds everything done and runs nothing
    again = build_parser().parse_args([*args_list(args)])
    assert again.handler(again) == 0 and (out / "trajectories.jsonl").read_text().count("\n") == 6


def args_list(args: Any) -> list[str]:
    return ["fidelity", "trajectories", "--tasks", args.tasks, "--gateway", args.gateway, "--modes", args.modes,
            "--k", str(args.k), "--llm-base-url", args.llm_base_url, "--model", args.model, "--out", args.out,
            "--max-turns", str(args.max_turns), "--max-tokens", str(args.max_tokens), "--max-string-length",
            str(args.max_string_length), "--no-progress", "--session-prefix", args.session_prefix,
            "--concurrency", str(args.concurrency)]
