"""Session state belongs to one run, and an evaluated simulator is not shown the answer it is judged on.

Through a real gateway and a real fixture server, with the real `mcp` client:
- a replay straight after a live run on the same gateway, under the same session name, gets the live
  answers (a fresh connection starts at the recorded session's first position);
- `1` and `1.0`, and an argument equal to its schema default, are the same call; a tool marked
  `deterministic` answers a repeated call from its recording (and says so), others miss and say why;
- with a hold-out, the simulator's examples leave out the call's own recordings (`call`) or all of the
  task's (`task`), and its history holds only the current connection's calls (checked on the prompt
  an OpenAI-compatible endpoint receives);
- `fidelity calls`' zero-shot prompt holds no recorded answer of the tool, few-shot none of the call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import fixture_server, mcp_session, provenance, running_gateway, without_provenance
from mcp.shared.exceptions import MCPError
from test_simulators import ScriptedEndpoint

pytestmark = pytest.mark.anyio

SUM_ANSWER = '{"structuredContent": {"total": 123.0, "terms": 9}, "isError": false, "content_text": "123"}'


def _recording_gateway(tmp_path: Path, **gateway: Any) -> dict[str, Any]:
    fx = fixture_server("misbehaving_server.py", "--echo-v2")
    fx["tool_settings"] = {"add": {"deterministic": True}}
    return {"gateway": {"record": "all", "cache_dir": str(tmp_path / "cache"), **gateway}, "mcpServers": {"fx": fx}}


async def test_replay_straight_after_live_on_one_gateway_equals_live(tmp_path: Path) -> None:
    calls = [("counter", {}), ("counter", {}), ("add", {"numbers": [1, 2]}), ("counter", {})]
    with running_gateway(_recording_gateway(tmp_path), tmp_path / "gw") as gateway:
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": "run/live/t#0"}) as session:
            live = [await session.call_tool(tool, arguments) for tool, arguments in calls]
        headers = {"X-Simgate-Session": "run/live/t#0", "X-Simgate-Mode": "replay"}
        for _ in range(2):  # and again: every fresh connection replays the recorded session from its start
            async with mcp_session(gateway.mcp_url("fx"), headers=headers) as session:
                replayed = [await session.call_tool(tool, arguments) for tool, arguments in calls]
            assert [without_provenance(r) for r in replayed] == [without_provenance(r) for r in live]
            assert all(provenance(r)["source"] == "cache" for r in replayed)
    assert [live[0].content[0].text, live[1].content[0].text] == ["1", "2"]  # state, replayed in order


async def test_equal_numbers_and_schema_defaults_hit_one_recording(tmp_path: Path) -> None:
    with running_gateway(_recording_gateway(tmp_path), tmp_path / "gw") as gateway:
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": "s"}) as session:
            recorded_sum = await session.call_tool("add", {"numbers": [1, 2]})
            recorded_echo = await session.call_tool("echo", {"text": "hi"})
            await session.call_tool("counter", {})
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": "s",
                                                               "X-Simgate-Mode": "replay"}) as session:
            as_floats = await session.call_tool("add", {"numbers": [1.0, 2.0]})
            again = await session.call_tool("add", {"numbers": [1, 2]})  # past the recorded sequence: deterministic
            with_default = await session.call_tool("echo", {"text": "hi", "shout": False})
            await session.call_tool("counter", {})
            with pytest.raises(MCPError) as repeated:
                await session.call_tool("counter", {})  # not deterministic: the second read was never recorded
    key = provenance(recorded_sum)["cache_key"]
    for replayed in (as_floats, again):
        assert provenance(replayed)["source"] == "cache" and provenance(replayed)["cache_key"] == key
        assert without_provenance(replayed) == without_provenance(recorded_sum)
    assert "deterministic_repeat" not in provenance(as_floats)
    assert provenance(again)["deterministic_repeat"] == {"recorded_position": 0, "position": 1}
    assert provenance(with_default)["cache_key"] == provenance(recorded_echo)["cache_key"]
    assert without_provenance(with_default) == without_provenance(recorded_echo)
    assert repeated.value.code == -32003 and "(call #2 of this session)" in repeated.value.message
    assert "deterministic: true" in repeated.value.message


async def test_hold_out_keeps_the_call_and_the_task_out_of_the_examples(tmp_path: Path) -> None:
    config = _recording_gateway(tmp_path, simulator={"backend": "examples"})
    with running_gateway(config, tmp_path / "gw") as gateway:
        url = gateway.mcp_url("fx")
        async with mcp_session(url, headers={"X-Simgate-Session": "live/a#0", "X-Simgate-Task": "a"}) as session:
            await session.call_tool("add", {"numbers": [1, 2]})
        async with mcp_session(url, headers={"X-Simgate-Session": "live/b#0", "X-Simgate-Task": "b"}) as session:
            await session.call_tool("add", {"numbers": [5, 5]})
        simulated = {"X-Simgate-Mode": "simulated", "X-Simgate-Session": "simulated/a#0", "X-Simgate-Task": "a"}
        async with mcp_session(url, headers=simulated) as session:
            shown_everything = await session.call_tool("add", {"numbers": [1, 2]})
        async with mcp_session(url, headers={**simulated, "X-Simgate-Holdout": "call"}) as session:
            call_held_out = await session.call_tool("add", {"numbers": [1, 2]})
        async with mcp_session(url, headers={**simulated, "X-Simgate-Holdout": "task"}) as session:
            task_held_out = await session.call_tool("add", {"numbers": [1, 3]})  # nearest: task a's own [1, 2]
            with pytest.raises(MCPError) as bad:
                await session.call_tool("add", {"numbers": [1]}, meta={"simgate/holdout": "everything"})
        async with mcp_session(url, headers={**simulated, "X-Simgate-Holdout": "task", "X-Simgate-Task": "b"}) as s:
            only_other = await s.call_tool("add", {"numbers": [5, 5]})  # b's recordings held out: a's is left
    # The examples backend answers with the nearest recorded answer it is shown.
    assert shown_everything.structured_content == {"total": 3.0, "terms": 2}  # no hold-out: its own answer
    assert call_held_out.structured_content == {"total": 10.0, "terms": 2}
    assert provenance(call_held_out)["holdout"] == "call"
    assert task_held_out.structured_content == {"total": 10.0, "terms": 2}
    assert provenance(task_held_out)["holdout"] == "task"
    # (the examples backend puts the new arguments where the recording echoed its own: `terms` may follow
    # them; the total shows which recording it was shown)
    assert only_other.structured_content["total"] == 3.0
    assert bad.value.code == -32602 and "unknown hold-out 'everything'" in bad.value.message


async def test_simulator_sees_only_its_own_connection_and_never_the_held_out_answer(tmp_path: Path) -> None:
    with ScriptedEndpoint([SUM_ANSWER] * 3) as endpoint:
        simulator = {"backend": "openai", "openai": {"base_url": endpoint.base_url, "model": "expert",
                                                      "cache_size": 0}}
        with running_gateway(_recording_gateway(tmp_path, simulator=simulator), tmp_path / "gw") as gateway:
            url = gateway.mcp_url("fx")
            async with mcp_session(url, headers={"X-Simgate-Session": "x", "X-Simgate-Task": "t"}) as session:
                await session.call_tool("add", {"numbers": [1, 2]})  # recorded live: total 3
                await session.call_tool("echo", {"text": "live history"})
            replaying = {"X-Simgate-Session": "x", "X-Simgate-Mode": "replay"}
            async with mcp_session(url, headers=replaying) as session:
                with pytest.raises(MCPError):
                    await session.call_tool("add", {"numbers": [7, 7]})  # a replay miss under the same name
            simulated = {"X-Simgate-Session": "x", "X-Simgate-Mode": "simulated", "X-Simgate-Task": "t"}
            async with mcp_session(url, headers={**simulated, "X-Simgate-Holdout": "call"}) as session:
                first = await session.call_tool("add", {"numbers": [1, 2]})
                second = await session.call_tool("add", {"numbers": [1, 2]})
        prompts = [json.dumps(request["body"]["messages"]) for request in endpoint.requests]
    assert first.structured_content == {"total": 123.0, "terms": 9} and len(prompts) == 2
    for prompt in prompts:
        assert "replay miss" not in prompt and "live history" not in prompt  # other connections' calls
        assert '"total":3' not in prompt.replace("\\", "")  # the held-out answer
        assert "recorded call" not in prompt  # the only other recording of the tool was the held-out call
    # The second call's history is the first: the simulator's own answer, in this connection.
    assert "this session, call 1" in prompts[1] and "123" in prompts[1]
    assert provenance(second)["source"] == "simulator"


async def test_fidelity_calls_zero_shot_shows_no_recorded_answer_of_the_tool(tmp_path: Path) -> None:
    from simgate.gateway.fidelity.calls import _request
    from simgate.gateway.fidelity.source import load_world
    from simgate.simulators.prompts.v1 import build_messages

    with running_gateway(_recording_gateway(tmp_path), tmp_path / "gw") as gateway:
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": "rec"}) as session:
            await session.call_tool("add", {"numbers": [20, 22]})  # 42
            await session.call_tool("counter", {})
            await session.call_tool("add", {"numbers": [20, 22]})  # the same call again, later in the session
            await session.call_tool("add", {"numbers": [300, 33]})  # 333
    world = load_world(tmp_path / "cache")
    index = max(i for i, r in enumerate(world.recordings) if r.tool == "add" and r.arguments["numbers"] == [20, 22])
    zero = json.dumps(build_messages(_request(world, index, "zero_shot", 5, {})))
    few = json.dumps(build_messages(_request(world, index, "few_shot", 5, {})))
    assert "42" not in zero and "333" not in zero and "recorded call" not in zero
    assert "333" in few and "42" not in few  # another call of the tool, never the scored one


def test_cache_key_leaves_out_defaults_wherever_the_schema_declares_them() -> None:
    from simgate.gateway.cache.cache_keys import cache_key

    schema = {"type": "object", "$defs": {"opts": {"type": "object", "properties": {
        "depth": {"type": "integer", "default": 1}, "strict": {"type": "boolean", "default": False}}}},
        "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "default": 10},
                       "options": {"$ref": "#/$defs/opts"},
                       "filters": {"type": "array", "items": {"type": "object", "properties": {
                           "op": {"type": "string", "default": "eq"}, "value": {}}}}}}

    def key(arguments: dict[str, Any]) -> str:
        return cache_key("s", "t", "f", arguments, (), schema)

    plain = key({"query": "x", "options": {}, "filters": [{"value": 2}]})
    assert key({"query": "x", "limit": 10.0, "options": {"depth": 1, "strict": False},
                "filters": [{"op": "eq", "value": 2.0}]}) == plain
    assert key({"query": "x", "limit": 11, "options": {}, "filters": [{"value": 2}]}) != plain
    assert key({"query": "x", "options": {"strict": 0}, "filters": [{"value": 2}]}) != plain  # 0 is not false
    assert key({"query": "x", "options": {}, "filters": [{"op": "ne", "value": 2}]}) != plain
