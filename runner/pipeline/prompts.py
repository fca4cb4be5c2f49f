"""The pipeline's prompts, versioned: every generated task and every score records the version of the
prompt that made it, so a changed prompt never mixes silently with the old one's output.

Their structure follows TOUCAN's (a task that needs the named number of tools without naming them;
six task-quality dimensions and two trajectory dimensions, each reasoning first, then a 1–5 score, under
TOUCAN's own keys so the scores drop into its dataset columns as they are);
the wording is simgate's own.
"""

from __future__ import annotations

import json
from typing import Any

SYNTH_VERSION = "synth-v1"
JUDGE_TASK_VERSION = "judge-task-v1"
JUDGE_TRAJECTORY_VERSION = "judge-trajectory-v1"
USER_VERSION = "user-v1"
SPLIT_VERSION = "split-v1"

TASK_DIMENSIONS: dict[str, str] = {
    "tool_selection_difficulty": "How hard is it to work out which tools are needed from the question alone "
                                 "(1: the question all but names them; 5: it takes real reasoning)?",
    "tool_selection_uniqueness": "How uniquely do the target tools fit (1: many other tools would do as well; "
                                 "5: only this combination solves it)?",
    "question_quality": "Is the question clear, specific, self-contained and well written (1: vague or "
                        "broken; 5: excellent)?",
    "scenario_realism": "Would a real user ask this, in a plausible situation (1: contrived; 5: entirely "
                        "natural)?",
    "verifiable": "Can a correct final answer be checked (1: open-ended, no way to check; 5: a clear, "
                  "checkable answer)?",
    "stability": "Would the answer stay the same over time and place (1: changes by the minute; 5: stable)?",
}
TRAJECTORY_DIMENSIONS: dict[str, str] = {
    "completeness": "Did the assistant do everything the question asked and give a usable final answer "
                    "(1: nothing useful; 5: fully)?",
    "conciseness": "Did it get there without needless calls, repetition or padding (1: very wasteful; "
                   "5: as direct as possible)?",
}


def rating_schema(dimensions: dict[str, str]) -> dict[str, Any]:
    """Each dimension: reasoning first (so the rating follows from it), then an integer 1–5."""
    item = {"type": "object", "properties": {"reasoning": {"type": "string", "maxLength": 300},
                                             "score": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["reasoning", "score"], "additionalProperties": False}
    return {"type": "object", "properties": {name: item for name in dimensions}, "required": list(dimensions),
            "additionalProperties": False}


def synth_schema(tool_names: list[str], num_tools: int) -> dict[str, Any]:
    return {"type": "object",
            "properties": {"question": {"type": "string", "minLength": 10, "maxLength": 2000},
                           "target_tools": {"type": "array", "items": {"type": "string", "enum": tool_names},
                                            "minItems": num_tools, "maxItems": num_tools}},
            "required": ["question", "target_tools"], "additionalProperties": False}


def synth_prompt(servers: list[dict[str, Any]], num_tools: int, brainstorm: bool = False) -> str:
    listing = []
    for server in servers:
        listing.append(f"## Server {server['name']} ({server['category']}): {server['description'][:400]}")
        for tool in server["tools"]:
            listing.append(f"- {tool['name']}: {tool['description'][:300]}")
    several = len(servers) > 1
    task = (f"Write one question a real user could ask an assistant that has these tools. Answering it well must "
            f"take exactly {num_tools} of the tools" + (", using tools of every server" if several else "") + ".")
    if brainstorm:
        task += " First imagine a realistic situation in which someone would need all of these servers together."
    return (f"{task}\n\nRules:\n- Do not name any tool or server in the question.\n- Give every detail the tools "
            f"need (names, numbers, places) in the question itself.\n- target_tools lists the {num_tools} tools, "
            f"by the names given, in the order they would be used.\n\nTools:\n" + "\n".join(listing)
            + "\n\nAnswer in JSON.")


def task_judge_prompt(question: str, tools: list[dict[str, Any]], target_tools: list[str]) -> str:
    listing = "\n".join(f"- {tool['name']}: {tool.get('description', '')[:300]}" for tool in tools)
    criteria = "\n".join(f"- {name}: {text}" for name, text in TASK_DIMENSIONS.items())
    return (f"Judge a task written for training a tool-using assistant.\n\nQuestion: {question}\n\n"
            f"Tools available:\n{listing}\n\nIntended tools: {', '.join(target_tools)}\n\nFor each criterion give "
            f"your reasoning, then a rating from 1 to 5:\n{criteria}\n\nAnswer in JSON.")


def trajectory_judge_prompt(question: str, transcript: str) -> str:
    criteria = "\n".join(f"- {name}: {text}" for name, text in TRAJECTORY_DIMENSIONS.items())
    return (f"Judge how an assistant answered a question with tools.\n\nQuestion: {question}\n\nWhat happened "
            f"(tool outputs shortened):\n{transcript}\n\nFor each criterion give your reasoning, then a rating "
            f"from 1 to 5:\n{criteria}\n\nAnswer in JSON.")


def shorten(text: str, budget: int) -> str:
    """At most `budget` characters, the cut said in the text (a judge must know it saw a part)."""
    if len(text) <= budget:
        return text
    return f"{text[:budget]}… [{len(text) - budget} more characters]"


def transcript(messages: list[dict[str, Any]], tool_output_budget: int) -> str:
    """The trajectory as the judge reads it: every turn, tool outputs cut to the budget."""
    lines = []
    for message in messages:
        role = message.get("role")
        if role == "system":
            continue
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        if role == "tool":
            lines.append(f"[tool result] {shorten(content, tool_output_budget)}")
            continue
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            lines.append(f"[{role} calls {function.get('name')}] {shorten(str(function.get('arguments')), 600)}")
        if content:
            lines.append(f"[{role}] {content}")
    return "\n".join(lines)


def digest(messages: list[dict[str, Any]], budget: int) -> str:
    """The conversation condensed for the simulated user: its own messages whole, each tool call with
    its arguments and its output cut to `budget`, the assistant's texts cut to twice that. A user
    reads answers, not tool dumps, and a short prompt keeps every turn cheap."""
    lines: list[str] = []
    names: dict[str, str] = {}
    for message in messages:
        role = message.get("role")
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        if role == "user":
            lines.append(f"You: {content}")
        elif role == "tool":
            name = names.get(str(message.get("tool_call_id")), "a tool")
            lines.append(f"  ({name} returned: {shorten(content, budget)})")
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                names[call.get("id")] = function.get("name")
                lines.append(f"  (the assistant used {function.get('name')} with "
                             f"{shorten(str(function.get('arguments')), 200)})")
            if content:
                lines.append(f"Assistant: {shorten(content, 2 * budget)}")
    return "\n".join(lines)


def user_schema(may_stop: bool = True) -> dict[str, Any]:
    """The simulated user's turn: why, whether the goal is done, and (if not) the next message. Before
    the conversation's minimum length the user may not stop: the schema has no `goal_done` then."""
    properties: dict[str, Any] = {"reasoning": {"type": "string", "maxLength": 300}}
    if may_stop:
        properties["goal_done"] = {"type": "boolean"}
    properties["follow_up"] = {"type": "string", "minLength": 0 if may_stop else 5, "maxLength": 1000}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def user_prompt(goal: str, conversation: str, tools: list[dict[str, Any]], remaining: int,
                may_stop: bool = True) -> str:
    # Tools are described without their names, so the follow-up cannot name them.
    listing = "\n".join(f"- {shorten(str(tool.get('function', tool).get('description') or ''), 150)}"
                         for tool in tools) or "- (none)"
    choice = ("If what you want is done and nothing natural is left to ask, set goal_done to true and leave "
              "follow_up empty. Otherwise set goal_done to false and write your next message as follow_up"
              if may_stop else "Write your next message as follow_up")
    return (f"You are the user in a conversation with an assistant that can use tools. What you wanted when you "
            f"started: {goal}\n\nThe conversation so far (tool outputs shortened):\n{conversation}\n\nWhat the "
            f"assistant's tools can do:\n{listing}\n\nYou may send {remaining} more message(s). {choice}: it "
            f"builds on the answers so far, needs the assistant's tools, gives every detail they need, and names "
            f"no tool.\n\nAnswer in JSON.")


def split_schema(most: int) -> dict[str, Any]:
    return {"type": "object", "properties": {"turns": {
        "type": "array", "minItems": 2, "maxItems": max(2, most),
        "items": {"type": "string", "minLength": 5, "maxLength": 1000}}},
        "required": ["turns"], "additionalProperties": False}


def split_prompt(question: str, steps: list[str]) -> str:
    listing = "\n".join(f"{i}. {shorten(step, 200)}" for i, step in enumerate(steps, start=1))
    return (f"A user's request needs several steps. Split it into 2 to {max(2, len(steps))} messages the user "
            f"sends one after another, each after the assistant answered the previous one. Each message asks for "
            f"one part; together they ask for everything the request asks; a later message may refer to an "
            f"earlier answer. Give every detail each part needs and name no tool.\n\nRequest: {question}\n\n"
            f"The steps it needs, in order:\n{listing}\n\nAnswer in JSON.")
