"""Multi-turn trajectories and the multi-turn extensions on constructed inputs with known answers: the
digest the simulated user reads, its follow-ups and its stop, conversations of several user turns in one
gateway session (through a real gateway and a real fixture server; the agent's and the user's LLMs are
real HTTP servers with scripted replies, so every turn is known), question splitting, and multi-turn rows
through the exporters, the judge and the filters. `test_pipeline.py` has the end-to-end run with the tiny
real LLM as both user and agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import REPO_ROOT, GatewayProcess, fixture_server, running_gateway
from llm_server import LLMServer
from scripted_llm import ScriptedEndpoint

from simgate.runner.agents.base import Draft
from simgate.runner.conversation import FOLLOW_UPS_DONE, GOAL_DONE, SimulatedUser, turn_seed
from simgate.runner.errors import LLMUnreachable
from simgate.runner.export.formats import to_openai, to_sharegpt, to_toucan
from simgate.runner.pipeline.catalogue import Catalogue, CatalogueServer, CatalogueTool
from simgate.runner.pipeline.extensions import multi_turn_tasks, split_tasks
from simgate.runner.pipeline.filters import compile_filter, passes
from simgate.runner.pipeline.judge import judge_trajectories
from simgate.runner.pipeline.prompts import digest, user_schema
from simgate.runner.run import run_tasks
from simgate.runner.settings import RunSettings, UserSettings
from simgate.runner.structured import Endpoint, EndpointPool
from simgate.runner.tasks import Task

ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
LONG = "x" * 5000
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Please note a."},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_0_0", "type": "function", "function": {
        "name": "routing__note", "arguments": '{"text": "a"}'}}]},
    {"role": "tool", "tool_call_id": "call_0_0", "content": "note: a " + LONG},
    {"role": "assistant", "content": "I noted a."},
    {"role": "user", "content": "Now note b as well."},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_2_0", "type": "function", "function": {
        "name": "routing__note", "arguments": '{"text": "b"}'}}]},
    {"role": "tool", "tool_call_id": "call_2_0", "content": "note: b"},
    {"role": "assistant", "content": "I noted b too."},
]
TOOLS = [{"type": "function", "function": {"name": "routing__note", "description": "Take a note.",
                                           "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]


def simgate(*args: str, cwd: Path) -> dict[str, Any]:
    """Run a command; its last stdout line that is JSON is its summary."""
    result = subprocess.run([sys.executable, "-m", "simgate", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    summaries = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(summaries[-1]) if summaries else {}


def _call(name: str, **arguments: Any) -> str:
    return json.dumps({"tool_call": {"name": name, "arguments": arguments}})


def _final(text: str) -> str:
    return json.dumps({"final_answer": text})


def _user(follow_up: str, done: bool = False) -> str:
    return json.dumps({"reasoning": "r", "goal_done": done, "follow_up": follow_up})


def _prompt(request: dict[str, Any]) -> str:
    return str(request["body"]["messages"][-1]["content"])


def test_the_digest_keeps_user_turns_and_cuts_tool_outputs() -> None:
    text = digest(CONVERSATION, 40)
    assert "You are a helpful" not in text  # the system prompt is not the user's business
    assert text.splitlines()[0] == "You: Please note a." and "You: Now note b as well." in text
    assert '(the assistant used routing__note with {"text": "a"})' in text
    assert "(routing__note returned: note: a " + "x" * 32 + "… [4968 more characters])" in text
    assert "x" * 41 not in text and "Assistant: I noted b too." in text


def test_simulated_user_writes_follow_ups_and_stops_when_its_goal_is_done() -> None:
    draft = Draft(messages=CONVERSATION[:5], tools=TOOLS)
    task = Task(id="t", question="Please note a.")
    settings = RunSettings(gateway="http://127.0.0.1:1/mcp", llm_base_url="http://127.0.0.1:1/v1", model="agent",
                           seed=3, user=UserSettings(turns=3, min_turns=2, digest_budget=20))
    replies = [json.dumps({"reasoning": "r", "follow_up": "Now note b as well."}), _user("", done=True), "no json",
               _user("   ")]
    with ScriptedEndpoint(replies) as endpoint:
        user = SimulatedUser(settings.user.model_copy(update={"llm_base_url": endpoint.base_url, "model": "user"}),
                             settings)

        async def turns() -> list[tuple[str | None, str]]:
            return [await user.follow_up(task, draft, 1), await user.follow_up(task, draft, 2),
                    await user.follow_up(task, draft, 2), await user.follow_up(task, draft, 2)]

        results = anyio.run(turns)
    assert results == [("Now note b as well.", ""), (None, GOAL_DONE),
                       (None, "the simulated user gave no usable turn (not JSON (7 characters))"),
                       (None, "the simulated user wrote an empty follow-up")]
    first, second = endpoint.requests[0]["body"], endpoint.requests[1]["body"]
    assert first["model"] == "user" and first["seed"] == turn_seed(3, "t", 1) != turn_seed(3, "u", 1)
    assert second["seed"] == turn_seed(3, "t", 2) != turn_seed(3, "t", 1)
    # Before min_turns the user may not stop: no goal_done in the schema; after it, it may.
    assert first["response_format"]["json_schema"]["schema"] == user_schema(may_stop=False)
    assert "goal_done" not in first["response_format"]["json_schema"]["schema"]["properties"]
    assert second["response_format"]["json_schema"]["schema"] == user_schema(may_stop=True)
    prompt = _prompt(endpoint.requests[0])
    assert "What you wanted when you started: Please note a." in prompt and "You: Please note a." in prompt
    assert "note: a xxxxxxxxxxxx… [" in prompt and LONG not in prompt  # a digest, not the tool's whole output
    assert "- Take a note." in prompt and "routing__note returned" in prompt
    assert "You may send 2 more message(s)" in prompt and "goal_done" not in prompt
    assert "set goal_done to true" in _prompt(endpoint.requests[1])

    # An endpoint that cannot be reached is not "the user is done": the trajectory is retried later.
    gone = SimulatedUser(settings.user.model_copy(update={"llm_base_url": "http://127.0.0.1:1/v1"}), settings)
    with pytest.raises(LLMUnreachable, match="simulated user's LLM at http://127.0.0.1:1/v1"):
        anyio.run(gone.follow_up, task, draft, 1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("multi-turn")
    config = {"gateway": {"record": "all", "cache_dir": str(base / "cache")},
              "mcpServers": {"routing": {**fixture_server("routing_server.py"),
                                         "tools": {"allow": ["note", "echo"]}}}}
    with running_gateway(config, base / "gw") as process:
        yield process


def _settings(gateway: GatewayProcess, llm: ScriptedEndpoint, mode: str = "live", **overrides: Any) -> RunSettings:
    return RunSettings(gateway=gateway.mcp_url(), llm_base_url=llm.base_url, model="agent", mode=mode,
                       max_turns=3, progress=False, session_prefix="multi/", **overrides)


def test_a_simulated_user_continues_the_conversation_in_one_gateway_session(gateway: GatewayProcess,
                                                                           tmp_path: Path) -> None:
    task = Task(id="notes-1", question="Please note a.", servers=["routing"],
                target_tools=["routing__note", "routing__note"])
    agent_script = [_call("routing__note", text="a"), _final("I noted a."),
                    _call("routing__note", text="b"), _final("I noted b too.")]
    user_script = [_user("Now note b as well."), _user("", done=True)]
    runs = {}
    for mode in ("live", "replay"):
        with ScriptedEndpoint(agent_script) as agent, ScriptedEndpoint(user_script) as user:
            settings = _settings(gateway, agent, mode, user=UserSettings(turns=3, llm_base_url=user.base_url,
                                                                         model="user", temperature=0))
            (runs[mode],) = anyio.run(run_tasks, [task], settings, tmp_path / f"{mode}.jsonl")
        assert len(agent.requests) == 4 and len(user.requests) == 2
    live, replayed = runs["live"], runs["replay"]
    assert [m["role"] for m in live.messages] == ["system", "user", "assistant", "tool", "assistant", "user",
                                                  "assistant", "tool", "assistant"]
    assert live.messages[5] == {"role": "user", "content": "Now note b as well."}
    assert [m["content"] for m in live.messages if m["role"] == "tool"] == ["note: a", "note: b"]
    # Step numbers run on over the turns: every call id is unique in the conversation.
    assert [e.call_id for e in live.tool_events] == ["call_0_0", "call_2_0"]
    assert [(t.question, t.source, t.message, t.outcome, t.user_model) for t in live.turns] == [
        ("Please note a.", "task", 1, "final_answer", None),
        ("Now note b as well.", "simulated_user", 5, "final_answer", "user@user-v1")]
    assert live.conversation_end == GOAL_DONE and live.outcome == "final_answer"
    assert live.final_answer == "I noted b too." and live.checks["target_tool_share"] == 1.0
    # The second turn's agent saw the whole conversation, not only the new question.
    assert len(agent.requests[2]["body"]["messages"]) == 6
    # Recorded live, the conversation replays as it was.
    assert [e.source for e in live.tool_events] == ["live", "live"]
    assert [e.source for e in replayed.tool_events] == ["cache", "cache"]
    assert replayed.messages == live.messages and replayed.session == live.session == "multi/live/notes-1#0"
    assert json.loads((tmp_path / "live.jsonl").read_text())["turns"][1]["source"] == "simulated_user"

    # One gateway connection for the whole conversation: simulated, the second turn's call is shown the
    # first turn's as "this session, call 1" (the gateway keeps a session's history per connection, so a
    # connection opened per turn would show none).
    simulated_answers = [json.dumps({"isError": False, "content_text": f"note: {text}"}) for text in "ab"]
    with ScriptedEndpoint(simulated_answers) as simulator_llm, ScriptedEndpoint(agent_script) as agent, \
            ScriptedEndpoint(user_script) as user:
        config = {"gateway": {"cache_dir": str(tmp_path / "sim-cache"), "simulator": {
            "backend": "openai", "openai": {"base_url": simulator_llm.base_url, "model": "sim"}}},
            "mcpServers": {"routing": {**fixture_server("routing_server.py"), "tools": {"allow": ["note", "echo"]}}}}
        with running_gateway(config, tmp_path / "sim-gw") as simulating:
            settings = _settings(simulating, agent, "simulated",
                                 user=UserSettings(turns=3, llm_base_url=user.base_url, model="user"))
            (simulated,) = anyio.run(run_tasks, [task], settings, None)
    assert [e.source for e in simulated.tool_events] == ["simulator", "simulator"] and len(simulated.turns) == 2
    first_call, second_call = ([m["content"] for m in r["body"]["messages"] if m["role"] == "user"]
                               for r in simulator_llm.requests)
    assert first_call == ['[this session, call 1] note {"text":"a"}']
    assert second_call == ['[this session, call 1] note {"text":"a"}', '[this session, call 2] note {"text":"b"}']


def test_a_tasks_follow_ups_are_asked_in_order_and_an_unanswered_turn_ends_the_conversation(
        gateway: GatewayProcess) -> None:
    split = Task(id="split-1", question="Note a.", follow_ups=["Now note b.", "Echo c."], servers=["routing"])
    script = [_final("ok a"), _call("routing__note", text="b"), _final("ok b"), _call("routing__echo", text="c"),
              _final("ok c")]
    with ScriptedEndpoint(script) as agent:
        # A simulated user in the settings does not replace a task's own follow-ups.
        settings = _settings(gateway, agent, user=UserSettings(turns=2, llm_base_url="http://127.0.0.1:1/v1"))
        (trajectory,) = anyio.run(run_tasks, [split], settings, None)
    assert [(t.question, t.source, t.outcome) for t in trajectory.turns] == [
        ("Note a.", "task", "final_answer"), ("Now note b.", "follow_up", "final_answer"),
        ("Echo c.", "follow_up", "final_answer")]
    assert [m["content"] for m in trajectory.messages if m["role"] == "user"] == ["Note a.", "Now note b.", "Echo c."]
    assert trajectory.conversation_end == FOLLOW_UPS_DONE and trajectory.final_answer == "ok c"
    assert [e.call_id for e in trajectory.tool_events] == ["call_1_0", "call_3_0"]

    # The agent runs out of model turns on turn 1: no follow-up is asked of an unanswered question.
    looping = [_call("routing__echo", text="x")] * 3
    with ScriptedEndpoint(looping) as agent:
        (stuck,) = anyio.run(run_tasks, [split], _settings(gateway, agent), None)
    assert stuck.outcome == "max_turns" and len(stuck.turns) == 1 and stuck.turns[0].outcome == "max_turns"
    assert stuck.conversation_end == "the agent gave no final answer to turn 1"
    assert [m["role"] for m in stuck.messages].count("user") == 1

    # A single-turn task says so; the Agents SDK agent refuses a conversation instead of dropping turns.
    with ScriptedEndpoint([_final("done")]) as agent:
        (single,) = anyio.run(run_tasks, [Task(id="one", question="Hi?", servers=["routing"])],
                              _settings(gateway, agent), None)
        (sdk,) = anyio.run(run_tasks, [split], _settings(gateway, agent, agent="agents-sdk"), None)
    assert single.conversation_end == "single turn" and [t.source for t in single.turns] == ["task"]
    assert sdk.outcome == "error" and "multi-turn conversations need the native or prompted agent" in (sdk.error or "")


CATALOGUE = Catalogue(servers=[CatalogueServer(name="calculator", category="Math", tools=[
    CatalogueTool(name="calculator__add", tool="add", description="Add two numbers."),
    CatalogueTool(name="calculator__multiply", tool="multiply", description="Multiply two numbers.")])])


def test_split_turns_a_multi_tool_question_into_follow_ups(tmp_path: Path) -> None:
    tasks = [{"id": "m1", "question": "What is (2 + 3) * 4?", "servers": ["calculator"],
              "target_tools": ["calculator__add", "calculator__multiply"], "subset_name": "single-server",
              "metadata": {"strategy": "hand"}},
             {"id": "m2", "question": "What is 2 + 3, then times 5?", "servers": ["calculator"],
              "target_tools": ["calculator__add", "calculator__multiply"]},
             {"id": "s1", "question": "What is 2 + 3?", "servers": ["calculator"], "target_tools": ["calculator__add"]}]
    out = tmp_path / "split.jsonl"
    replies = [json.dumps({"turns": ["What is 2 + 3?", "Multiply that by 4."]}),
               json.dumps({"turns": ["Ask the calculator for 2 + 3.", "Then times 5."]})]  # names a tool: dropped
    with ScriptedEndpoint(replies) as endpoint:
        pool = EndpointPool([Endpoint(base_url=endpoint.base_url, model="splitter")])

        async def split() -> Any:
            async with pool:
                return await split_tasks(tasks, CATALOGUE, pool, out, concurrency=1)

        stats = anyio.run(split)
    assert all(client.is_closed() for client in pool.clients)  # its HTTP connections end with the pool
    assert stats.written == 1 and stats.dropped == {"a turn names a tool or server": 1,
                                                    "fewer than two target tools": 1}
    [made] = [json.loads(line) for line in out.read_text().splitlines()]
    assert made["id"] == "m1-split" and made["question"] == "What is 2 + 3?"
    assert made["follow_ups"] == ["Multiply that by 4."] and made["subset_name"] == "multi-turn"
    assert made["target_tools"] == tasks[0]["target_tools"] and made["servers"] == ["calculator"]
    assert made["metadata"] == {"strategy": "hand", "extension": "split", "source_id": "m1",
                                "source_question": "What is (2 + 3) * 4?", "generator": "splitter",
                                "prompt_version": "split-v1"}
    assert Task.model_validate(made).follow_ups == ["Multiply that by 4."]  # the runner reads it as it is
    request = endpoint.requests[0]["body"]
    assert request["response_format"]["json_schema"]["schema"]["properties"]["turns"]["maxItems"] == 2
    assert "1. Add two numbers.\n2. Multiply two numbers." in request["messages"][-1]["content"]
    # A re-run asks nothing again for what is written.
    with ScriptedEndpoint([]) as endpoint:
        again = anyio.run(lambda: split_tasks(tasks, CATALOGUE, EndpointPool(
            [Endpoint(base_url=endpoint.base_url, model="splitter")]), out, concurrency=1))
    assert again.already_done == 1 and again.written == 0 and len(out.read_text().splitlines()) == 1
    # The simulated-user extension's tasks: new ids, TOUCAN's multi-turn subset, the source named.
    marked = multi_turn_tasks(tasks[:1])
    assert marked[0]["id"] == "m1-multi-turn" and marked[0]["subset_name"] == "multi-turn"
    assert marked[0]["metadata"] == {"strategy": "hand", "extension": "multi-turn", "source_id": "m1"}


def _multi_turn_trajectory() -> dict[str, Any]:
    messages = [{**m, "content": "note: a"} if m.get("role") == "tool" and m["tool_call_id"] == "call_0_0" else m
                for m in CONVERSATION]
    return {"id": "notes-1", "question": "Please note a.", "mode": "live", "repeat": 0, "session": "s",
            "messages": messages, "tools": TOOLS, "target_tools": ["routing__note"], "tool_events": [],
            "final_answer": "I noted b too.", "outcome": "final_answer", "error": None, "usage": {},
            "checks": {"passed": True, "target_tool_share": 1.0, "target_order_kept": True},
            "agent": {}, "created_at": "2026-01-01T00:00:00.000Z",
            "turns": [{"question": "Please note a.", "source": "task", "message": 1, "outcome": "final_answer",
                       "user_model": None},
                      {"question": "Now note b as well.", "source": "simulated_user", "message": 5,
                       "outcome": "final_answer", "user_model": "user@user-v1"}],
            "conversation_end": GOAL_DONE, "task_extra": {"subset_name": "multi-turn"}}


def test_multi_turn_rows_in_toucan_openai_and_sharegpt() -> None:
    trajectory = _multi_turn_trajectory()
    row = to_toucan(trajectory)
    messages = json.loads(row["messages"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "function", "assistant", "user",
                                             "assistant", "function", "assistant"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Please note a.", "Now note b as well."]
    assert messages[2]["function_call"] == {"name": "routing__note", "arguments": '{"text": "a"}'}
    assert row["question"] == "Please note a." and row["subset_name"] == "multi-turn"
    metadata = json.loads(row["metadata"])
    assert [t["question"] for t in metadata["turns"]] == ["Please note a.", "Now note b as well."]
    assert metadata["conversation_end"] == GOAL_DONE
    assert [m["role"] for m in to_openai(trajectory)["messages"]].count("user") == 2
    conversations = to_sharegpt(trajectory)["conversations"]
    assert [c["from"] for c in conversations] == ["human", "function_call", "observation", "gpt", "human",
                                                  "function_call", "observation", "gpt"]
    assert conversations[4]["value"] == "Now note b as well."
    # LLaMA-Factory's ShareGPT alternates: human/observation at even positions, gpt/function_call at odd.
    assert all((c["from"] in ("human", "observation")) == (i % 2 == 0) for i, c in enumerate(conversations))


def test_the_judge_reads_every_user_turn_and_filters_keep_working(tmp_path: Path) -> None:
    source, out = tmp_path / "run.jsonl", tmp_path / "judged.jsonl"
    source.write_text(json.dumps(_multi_turn_trajectory()) + "\n")
    scores = {name: {"reasoning": "r", "score": 5} for name in ("completeness", "conciseness")}
    with ScriptedEndpoint([json.dumps(scores)]) as endpoint:
        pool = EndpointPool([Endpoint(base_url=endpoint.base_url, model="judge")])
        stats = anyio.run(lambda: judge_trajectories(source, out, pool, tool_output_budget=50, concurrency=1))
    assert stats.judged == 1
    prompt = _prompt(endpoint.requests[0])
    assert "[user] Please note a." in prompt and "[user] Now note b as well." in prompt
    assert prompt.index("[user] Please note a.") < prompt.index("[assistant] I noted a.") < prompt.index(
        "[user] Now note b as well.") < prompt.index("[assistant] I noted b too.")
    [judged] = [json.loads(line) for line in out.read_text().splitlines()]
    assert judged["turns"] == _multi_turn_trajectory()["turns"]  # the record is carried whole
    assert passes(judged, compile_filter("completeness >= 4 and conciseness >= 4"))[0]
    assert json.loads(to_toucan(judged)["response_quality_assessment"])["overall_score"] == 5


@pytest.mark.timeout(900)  # the tiny model on two CPUs plays the agent and the user of every turn
def test_tiny_llm_as_user_and_agent_makes_a_two_turn_trajectory_exported_three_ways(
        gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    tasks = [{"id": "echo-1", "question": "Please echo the word hello back to me.", "servers": ["routing"],
              "target_tools": ["routing__echo"], "subset_name": "single-server"},
             {"id": "note-1", "question": "Take a note that says: buy milk.", "servers": ["routing"],
              "target_tools": ["routing__note"]}]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(task) + "\n" for task in tasks))
    summary = simgate("extend", "multi-turn", "tasks.jsonl", "--gateway", gateway.mcp_url(), "--turns", "2",
                      "--llm-base-url", llm_server.base_url, "--model", "gemma", "--user-model", "gemma-user",
                      "--user-temperature", "0", "--user-max-tokens", "300", "--max-turns", "3", "--max-tokens", "80",
                      # the native agent: the tiny base model, prompted, calls tools until its turns run out
                      "--agent", "native", "--no-progress", "--out", "mt.jsonl", cwd=tmp_path)
    trajectories = [json.loads(line) for line in (tmp_path / "mt.jsonl").read_text().splitlines()]
    assert summary["written"] == len(trajectories) == 2 and summary["not_written"] == 0
    for trajectory in trajectories:
        assert trajectory["id"].endswith("-multi-turn") and trajectory["task_extra"]["subset_name"] == "multi-turn"
        users = [m["content"] for m in trajectory["messages"] if m["role"] == "user"]
        assert users == [turn["question"] for turn in trajectory["turns"]]
        assert [trajectory["messages"][turn["message"]]["content"] for turn in trajectory["turns"]] == users
    two = [t for t in trajectories if len(t["turns"]) == 2]
    if not two:
        pytest.fail("no 2-turn trajectory: " + "; ".join(f"{t['id']}: {t['conversation_end']}" for t in trajectories))
    for trajectory in two:
        first, second = trajectory["turns"]
        assert first["source"] == "task" and first["outcome"] == "final_answer"
        # --min-turns defaults to 2: the user had to write a follow-up, and 2 turns is the limit
        assert second["source"] == "simulated_user" and second["user_model"] == "gemma-user@user-v1"
        assert second["question"].strip() and trajectory["conversation_end"] in ("turn limit reached",
                                                                                  "the agent gave no final answer "
                                                                                  "to turn 2")

    import datasets

    loaded = {}
    for name, out in (("toucan", "mt.parquet"), ("openai", "mt-openai.jsonl"), ("sharegpt", "mt-sharegpt.jsonl")):
        simgate("export", "trajectories", "mt.jsonl", "--format", name, "--out", out, cwd=tmp_path)
        loaded[name] = datasets.load_dataset("parquet" if out.endswith(".parquet") else "json",
                                             data_files=str(tmp_path / out), split="train",
                                             cache_dir=str(tmp_path / "hf-cache"))
        assert len(loaded[name]) == len(trajectories)
    for index, trajectory in enumerate(trajectories):
        users = [turn["question"] for turn in trajectory["turns"]]
        toucan = loaded["toucan"][index]
        assert toucan["subset_name"] == "multi-turn" and toucan["question"] == users[0]
        assert [m["content"] for m in json.loads(toucan["messages"]) if m["role"] == "user"] == users
        assert [t["question"] for t in json.loads(toucan["metadata"])["turns"]] == users
        assert [m["content"] for m in loaded["openai"][index]["messages"] if m["role"] == "user"] == users
        assert [c["value"] for c in loaded["sharegpt"][index]["conversations"] if c["from"] == "human"] == users


def test_the_declared_run_stage_takes_a_simulated_user_and_names_a_bad_setting(tmp_path: Path) -> None:
    from simgate.runner.errors import RunnerError
    from simgate.runner.pipeline.declared import PipelineConfig, _stage

    config = PipelineConfig(dir=tmp_path, gateway="http://127.0.0.1:1/mcp",
                            llm={"base_url": "http://127.0.0.1:1/v1", "model": "m"}, stages={"run": {}})
    (tmp_path / "tasks.jsonl").write_text("")
    with pytest.raises(RunnerError, match=r"stage run: user\.turns: Input should be greater than or equal to 1"):
        anyio.run(_stage, "run", {"user": {"turns": 0}}, config, tmp_path / "tasks.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(RunnerError, match=r"stage run: user: Value error, min_turns \(3\) exceeds turns \(2\)"):
        anyio.run(_stage, "run", {"user": {"turns": 2, "min_turns": 3}}, config, tmp_path / "tasks.jsonl",
                  tmp_path / "out.jsonl")
    counts = anyio.run(_stage, "run", {"mode": "simulated", "user": {"turns": 3, "model": "u"}}, config,
                       tmp_path / "tasks.jsonl", tmp_path / "out.jsonl")
    assert counts == {"trajectories": 0, "mode": "simulated"}  # accepted (no tasks: nothing to run)
