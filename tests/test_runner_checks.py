"""The runner's plain parts on constructed input with known answers: TOUCAN's rule checks and the
tool-use metrics, task files, the output file's repair and resume keys, the prompted answer format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simgate.runner.agents.prompted import answer_schema, parse_answer, prompted_view
from simgate.runner.checks import (
    calls_loop,
    has_final_answer,
    has_tool_call,
    has_tool_success,
    no_agent_error_text,
    run_checks,
    target_order_kept,
    target_tool_share,
    text_is_degenerate,
)
from simgate.runner.errors import AgentError, OutputFileError, TaskFileError
from simgate.runner.output import repair_and_read
from simgate.runner.settings import RunSettings
from simgate.runner.tasks import load_tasks, parse_tasks
from simgate.runner.trajectory import ToolEvent


def event(name: str, arguments: dict[str, Any] | None = None, *, is_error: bool = False, step: int = 0) -> ToolEvent:
    server, _, tool = name.partition("__")
    return ToolEvent(step=step, call_id=f"call_{step}_0", name=name, server=server, tool=tool,
                     arguments=arguments or {}, source="live", cache_key="k", latency_ms=1.0, is_error=is_error)


ADD = event("calc__add", {"a": 1, "b": 2})
MUL = event("calc__mul", {"a": 3, "b": 4}, step=1)
FAIL = event("calc__div", {"a": 1, "b": 0}, is_error=True, step=2)


def test_rule_checks_each_catch_their_case() -> None:
    assert not has_tool_call([]) and has_tool_call([ADD])
    assert not has_tool_success([FAIL]) and has_tool_success([FAIL, ADD])
    assert has_final_answer("3") and not has_final_answer("  \n") and not has_final_answer(None)
    clean = [{"role": "assistant", "content": "The sum is 3."}]
    assert no_agent_error_text(clean, "The sum is 3.")
    assert not no_agent_error_text([{"role": "assistant", "content": "I was unable to reach the tool."}], "3")
    assert not no_agent_error_text(clean, "Error: division by zero")
    # tool messages are not the agent's text: a tool's error answer does not fail the agent
    assert no_agent_error_text([*clean, {"role": "tool", "content": "Error: boom"}], "3")


def test_repetition_in_calls_and_text() -> None:
    assert not calls_loop([ADD, ADD, MUL])
    assert calls_loop([MUL, ADD, ADD, ADD])
    assert not calls_loop([ADD, event("calc__add", {"a": 1, "b": 3}), ADD])  # other arguments: not a loop
    assert text_is_degenerate("the answer is\nthe answer is\nthe answer is")
    assert text_is_degenerate(" ".join(["so the sum is three"] * 10))
    assert not text_is_degenerate("The sum of one and two is three, and three times four is twelve; "
                                  "both came from the calculator, which was asked twice in this conversation.")
    assert not text_is_degenerate("short short short short")  # too short to judge


def test_target_tool_share_and_order() -> None:
    events = [ADD, MUL, ADD]
    assert target_tool_share(["calc__add", "calc__mul"], events) == 1.0
    assert target_tool_share(["calc__add", "calc__pow"], events) == 0.5
    assert target_tool_share(["add", "pow", "sqrt", "mul"], events) == 0.5  # bare tool names count too
    assert target_tool_share([], events) is None and target_order_kept([], events) is None
    assert target_order_kept(["calc__add", "calc__mul"], events)
    assert target_order_kept(["calc__mul", "calc__add"], events)  # add is called again after mul
    assert not target_order_kept(["calc__mul", "calc__add"], [ADD, MUL])
    assert not target_order_kept(["calc__add", "calc__pow"], events)


def test_run_checks_combines_the_rules() -> None:
    messages = [{"role": "user", "content": "1+2?"}, {"role": "assistant", "content": None},
                {"role": "tool", "content": "3"}, {"role": "assistant", "content": "3"}]
    good = run_checks(messages=messages, tool_events=[ADD], final_answer="3", target_tools=["calc__add"])
    assert good == {"has_tool_call": True, "has_tool_success": True, "no_agent_error_text": True,
                    "has_final_answer": True, "no_repetition": True, "passed": True,
                    "target_tool_share": 1.0, "target_order_kept": True}
    bad = run_checks(messages=messages, tool_events=[FAIL], final_answer=None, target_tools=["calc__add"])
    assert bad["passed"] is False and bad["has_tool_success"] is False
    assert bad["has_final_answer"] is False and bad["target_tool_share"] == 0.0


def test_task_file_errors_name_the_line(tmp_path: Path) -> None:
    lines = ['{"id": "a", "question": "q1", "servers": ["calc"], "subset": "x"}', "", '{"id": 7, "question": "q2"}']
    tasks = parse_tasks(lines, "t.jsonl")
    assert [t.id for t in tasks] == ["a", "7"] and tasks[0].extra == {"subset": "x"}
    with pytest.raises(TaskFileError, match=r"t\.jsonl:2: not JSON"):
        parse_tasks(['{"id": "a", "question": "q"}', "{oops"], "t.jsonl")
    with pytest.raises(TaskFileError, match=r"t\.jsonl:1: question: Field required"):
        parse_tasks(['{"id": "a"}'], "t.jsonl")
    with pytest.raises(TaskFileError, match=r"t\.jsonl:3: id 'a' repeats the task on line 1"):
        parse_tasks(['{"id": "a", "question": "q"}', '{"id": "b", "question": "q"}', '{"id": "a", "question": "q"}'],
                    "t.jsonl")
    with pytest.raises(TaskFileError, match=r"t\.jsonl:1: a task must be a JSON object"):
        parse_tasks(["[1, 2]"], "t.jsonl")
    with pytest.raises(TaskFileError, match="no such tasks file"):
        load_tasks(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(TaskFileError, match="no tasks"):
        load_tasks(tmp_path / "empty.jsonl")


def test_output_repair_cuts_a_partial_last_line_only(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    whole = [json.dumps({"id": "a", "mode": "live", "repeat": 0}), json.dumps({"id": "b", "mode": "live", "repeat": 1})]
    out.write_text("\n".join(whole) + "\n" + '{"id": "c", "mo')
    records = repair_and_read(out)
    assert [r["id"] for r in records] == ["a", "b"]
    assert out.read_text() == "\n".join(whole) + "\n"  # the fragment is gone from the file
    assert repair_and_read(out) == records  # idempotent
    # a partial line longer than the chunks the end of the file is searched in, and no line at all
    out.write_text("\n".join(whole) + "\n" + '{"id": "c", "question": "' + "x" * 200_000)
    assert [r["id"] for r in repair_and_read(out)] == ["a", "b"] and out.read_text() == "\n".join(whole) + "\n"
    out.write_text('{"id": "c", "question": "' + "x" * 100_000)
    assert repair_and_read(out) == [] and out.read_bytes() == b""
    out.write_text(whole[0] + "\nnot json\n")
    with pytest.raises(OutputFileError, match=r"out\.jsonl:2: not a trajectory line"):
        repair_and_read(out)


def test_prompted_answers_are_parsed_and_checked() -> None:
    names = {"calc__add"}
    assert parse_answer('{"final_answer": "3"}', names) == ("final_answer", "3")
    assert parse_answer('{"tool_call": {"name": "calc__add", "arguments": {"a": 1}}}', names) == (
        "tool_call", ("calc__add", {"a": 1}))
    for bad, why in [('{"tool_call": {"name": "calc__pow", "arguments": {}}}', "unknown tool"),
                     ('{"final_answer": "3", "tool_call": {}}', "one of"),
                     ('{"final_answer": "thr', "not JSON"),
                     ('{"tool_call": {"name": "calc__add", "arguments": [1]}}', "arguments object")]:
        with pytest.raises(AgentError, match=why):
            parse_answer(bad, names)


def test_answer_schema_offers_each_tool_with_its_own_arguments() -> None:
    tools = [{"type": "function", "function": {"name": "calc__add", "description": "", "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"a": {"type": "number"}, "note": {"type": "string"}}, "required": ["a"]}}}]
    schema = answer_schema(tools, per_tool_arguments=True, max_string=16, max_items=None)
    call_branch, final_branch = schema["anyOf"]
    (tool_branch,) = call_branch["properties"]["tool_call"]["anyOf"]
    assert tool_branch["properties"]["name"] == {"type": "string", "enum": ["calc__add"]}
    assert "$schema" not in tool_branch["properties"]["arguments"]
    assert tool_branch["properties"]["arguments"]["properties"]["note"]["maxLength"] == 16
    assert final_branch["properties"]["final_answer"]["maxLength"] == 16
    loose = answer_schema(tools, per_tool_arguments=False, max_string=None, max_items=16)
    assert loose["anyOf"][0]["properties"]["tool_call"]["properties"]["name"]["enum"] == ["calc__add"]
    assert loose["anyOf"][0]["properties"]["tool_call"]["properties"]["arguments"]["maxProperties"] == 16


def test_prompted_view_shows_calls_as_json_and_results_as_user_turns() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_0_0", "type": "function", "function": {"name": "calc__add",
                                                                        "arguments": '{"a": 1}'}}]},
                {"role": "tool", "tool_call_id": "call_0_0", "content": "1"},
                {"role": "assistant", "content": "one"}]
    assert prompted_view(messages) == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
        {"role": "assistant", "content": '{"tool_call": {"name": "calc__add", "arguments": {"a": 1}}}'},
        {"role": "user", "content": "Result of calc__add:\n1"},
        {"role": "assistant", "content": '{"final_answer": "one"}'}]


def test_settings_normalize_the_gateway_url_and_keep_session_ids_deterministic() -> None:
    settings = RunSettings(gateway="http://127.0.0.1:8808/", llm_base_url="http://127.0.0.1:1/v1", model="m",
                           session_prefix="run1/")
    assert settings.gateway == "http://127.0.0.1:8808/mcp"
    # the mode and the run are in the id; a replay names the live session it replays
    assert settings.session_id("t1", 2) == "run1/live/t1#2"
    named = settings.model_copy(update={"run_id": "r7", "mode": "simulated"})
    assert named.session_id("t1", 2) == "run1/r7/simulated/t1#2"
    assert named.model_copy(update={"mode": "replay"}).session_id("t1", 0) == "run1/r7/live/t1#0"
    assert named.model_copy(update={"mode": "replay", "replay_of": "r6"}).session_id("t1", 0) == "run1/r6/live/t1#0"
    with pytest.raises(ValueError, match="must not contain '/'"):
        RunSettings(gateway="http://x/mcp", llm_base_url="http://x/v1", model="m", run_id="a/b")
    with pytest.raises(ValueError, match="must start with http"):
        RunSettings(gateway="127.0.0.1:8808", llm_base_url="http://x/v1", model="m")


def test_agents_sdk_items_become_chat_messages_with_runner_ids_and_matched_events() -> None:
    pytest.importorskip("agents", reason="the OpenAI Agents SDK (openai-agents) is not installed")
    from simgate.runner.agents.agents_sdk import chat_messages

    items = [{"role": "user", "content": "Q"},
             {"type": "function_call", "call_id": "rnd-1", "name": "calc__add", "arguments": '{"a": 1}',
              "id": "fc1", "status": "completed"},
             {"type": "function_call_output", "call_id": "rnd-1", "output": "1"},
             {"type": "function_call", "call_id": "rnd-2", "name": "calc__mul", "arguments": '{"a": 3, "b": 4}',
              "id": "fc2", "status": "completed"},
             {"type": "function_call_output", "call_id": "rnd-2", "output": "12"},
             {"id": "m1", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "twelve", "annotations": []}]}]
    # the SDK's calls, in the order it made them, with no ids yet
    seen = [event("calc__add", {"a": 1}).model_copy(update={"call_id": ""}),
            event("calc__mul", {"a": 3, "b": 4}).model_copy(update={"call_id": ""})]
    messages, events = chat_messages(items, seen)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [m["tool_calls"][0]["id"] for m in messages if m.get("tool_calls")] == ["call_0_0", "call_1_0"]
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == ["call_0_0", "call_1_0"]
    assert [(e.call_id, e.step, e.name) for e in events] == [("call_0_0", 0, "calc__add"), ("call_1_0", 1, "calc__mul")]
    assert messages[-1] == {"role": "assistant", "content": "twelve"}


def test_answer_schema_hoists_each_tools_definitions_under_its_own_names() -> None:
    import jsonschema

    item = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tools = [
        {"type": "function", "function": {"name": "a__x", "description": "", "parameters": {
            "type": "object", "$defs": {"Item": item},
            "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}}, "required": ["items"]}}},
        {"type": "function", "function": {"name": "b__y", "description": "", "parameters": {
            "type": "object", "definitions": {"Item": {"type": "string"}},
            "properties": {"i": {"$ref": "#/definitions/Item"}, "same": {"$ref": "#/properties/i"}},
            "required": ["i"]}}},
    ]
    schema = answer_schema(tools, per_tool_arguments=True, max_string=None, max_items=None)
    assert set(schema["$defs"]) == {"t0_Item", "t1_Item"}  # the same name in two tools, kept apart
    validator = jsonschema.Draft202012Validator(schema)

    def valid(answer: dict[str, Any]) -> bool:
        return not list(validator.iter_errors(answer))

    assert valid({"tool_call": {"name": "a__x", "arguments": {"items": [{"n": 1}]}}})
    assert not valid({"tool_call": {"name": "a__x", "arguments": {"items": [{"n": "one"}]}}})
    assert valid({"tool_call": {"name": "b__y", "arguments": {"i": "s", "same": "t"}}})
    assert not valid({"tool_call": {"name": "b__y", "arguments": {"i": "s", "same": 3}}})  # a pointer into the tool
    assert not valid({"tool_call": {"name": "b__y", "arguments": {"i": 3}}})
    assert valid({"final_answer": "done"})


def test_tools_are_filtered_by_server_prefix_and_results_read_as_text() -> None:
    import mcp_types as types

    from simgate.runner.mcp_tools import openai_tool, result_text, tool_filter

    allowed = tool_filter(["calc", "my server"])
    assert allowed("calc__add") and not allowed("calculator__add") and not allowed("other__calc__add")
    # a server whose name is not a valid prefix is matched by its exposed prefix (with a hash)
    from simgate.gateway.naming import server_prefix

    assert allowed(server_prefix("my server") + "__tool") and not allowed("my server__tool")
    assert tool_filter(None)("anything__at_all")
    tool = types.Tool(name="calc__add", description="Add.", input_schema={"properties": {"a": {"type": "number"}}})
    assert openai_tool(tool) == {"type": "function", "function": {"name": "calc__add", "description": "Add.",
                                                                  "parameters": {"properties": {"a": {"type": "number"}},
                                                                                 "type": "object"}}}
    mixed = types.CallToolResult(content=[types.TextContent(type="text", text="one"),
                                          types.ImageContent(type="image", data="QUJD", mime_type="image/png")],
                                 structured_content={"ignored": True})
    assert result_text(mixed) == "one\n[image: image/png, 4 base64 characters]"
    only_structured = types.CallToolResult(content=[], structured_content={"b": 2, "a": 1})
    assert result_text(only_structured) == '{"a": 1, "b": 2}'
