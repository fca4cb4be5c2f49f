"""Conversations of several user turns in one trajectory: the same gateway session, tools and message
list from the first user message to the last.

After the agent answers the task's question, the next user message is either the task's next
`follow_ups` entry (a split question, asked in order) or — with a simulated user in the settings —
written by an LLM that reads a digest of the conversation (not the tool outputs whole) and says
whether its goal is done. A conversation ends when the agent gives no final answer, the follow-ups
run out, the user says it is done, or the turn limit is reached; why is written with the trajectory.
"""

from __future__ import annotations

import os
import zlib

from simgate.runner.agents.base import Agent, Draft
from simgate.runner.errors import AgentError, LLMUnreachable
from simgate.runner.mcp_tools import GatewaySession
from simgate.runner.pipeline.prompts import USER_VERSION, digest, user_prompt, user_schema
from simgate.runner.settings import RunSettings, UserSettings
from simgate.runner.structured import Endpoint, client_for, json_completion
from simgate.runner.tasks import Task
from simgate.runner.trajectory import Outcome, TurnSource, UserTurn

GOAL_DONE = "the simulated user's goal is done"
TURN_LIMIT = "turn limit reached"
FOLLOW_UPS_DONE = "every follow-up was asked"
SINGLE_TURN = "single turn"


def turn_seed(seed: int, task_id: str, turn: int) -> int:
    """Stable across runs and processes (a resumed run asks the same), different per task and turn."""
    return (seed * 1_000_003 + zlib.crc32(task_id.encode()) * 31 + turn) % 2**31


class SimulatedUser:
    """The user LLM: one structured completion per follow-up (structured.py), seeded per task and turn."""

    def __init__(self, user: UserSettings, settings: RunSettings) -> None:
        key_env = user.api_key_env or settings.api_key_env
        key = os.environ.get(key_env, "") if key_env else ""
        if key_env and not key:
            raise LLMUnreachable(f"the environment variable {key_env} (the simulated user's API key) is not set")
        self.settings = user
        self.endpoint = Endpoint(base_url=user.llm_base_url or settings.llm_base_url,
                                 model=user.model or settings.model, api_key=key or "not-needed",
                                 max_tokens=user.max_tokens, timeout=settings.llm_timeout)
        self.client = client_for(self.endpoint)
        self.seed = settings.seed or 0

    async def follow_up(self, task: Task, draft: Draft, turn: int) -> tuple[str | None, str]:
        """(the next user message, "") or (None, why the conversation ends). An unreachable endpoint
        raises LLMUnreachable: like the agent's, it leaves the trajectory unwritten, to be retried."""
        may_stop = turn >= self.settings.min_turns
        prompt = user_prompt(task.question, digest(draft.messages, self.settings.digest_budget), draft.tools,
                             self.settings.turns - turn, may_stop)
        value, why = await json_completion(self.client, self.endpoint, prompt, user_schema(may_stop), "user_turn",
                                           temperature=self.settings.temperature, seed=turn_seed(self.seed, task.id, turn))
        if value is None:
            if any(kind in (why or "") for kind in ("APIConnectionError", "APITimeoutError")):
                raise LLMUnreachable(f"the simulated user's LLM at {self.endpoint.base_url}: {why}")
            return None, f"the simulated user gave no usable turn ({why})"
        if value.get("goal_done"):
            return None, GOAL_DONE
        text = value["follow_up"].strip()
        if not text:
            return None, "the simulated user wrote an empty follow-up"
        return text, ""


async def converse(agent: Agent, task: Task, gateway: GatewaySession, draft: Draft, settings: RunSettings) -> None:
    """Work the task's question and every follow-up turn into `draft` (turns and why it ended included).
    A task's own follow-ups win over a simulated user."""
    user = SimulatedUser(settings.user, settings) if settings.user and not task.follow_ups else None
    if (task.follow_ups or user) and agent.kind == "agents-sdk":
        raise AgentError("multi-turn conversations need the native or prompted agent (the Agents SDK agent answers "
                         "one user message per run)")
    try:
        await _converse(agent, task, gateway, draft, user)
    finally:
        if user is not None:
            await user.client.close()


async def _converse(agent: Agent, task: Task, gateway: GatewaySession, draft: Draft,
                    user: SimulatedUser | None) -> None:
    limit = 1 + len(task.follow_ups) if task.follow_ups else (user.settings.turns if user else 1)
    source: TurnSource = "task"
    question, by = task.question, None
    while True:
        draft.turns.append(UserTurn(question=question, source=source, user_model=by,
                                    message=len(draft.messages) if draft.messages else 1))  # 0: the system prompt
        await agent.run(task if source == "task" else task.model_copy(update={"question": question}), gateway, draft)
        draft.turns[-1].outcome = draft.outcome
        turn = len(draft.turns)
        if draft.outcome != "final_answer":
            draft.conversation_end = f"the agent gave no final answer to turn {turn}"
            return
        if turn >= limit:
            draft.conversation_end = (FOLLOW_UPS_DONE if task.follow_ups else TURN_LIMIT) if limit > 1 else SINGLE_TURN
            return
        if task.follow_ups:
            question, source = task.follow_ups[turn - 1], "follow_up"
            continue
        assert user is not None
        outcome, answer = draft.outcome, draft.final_answer
        draft.outcome = None  # an unreachable user LLM leaves the trajectory unwritten (retried), as the agent's
        next_question, end = await user.follow_up(task, draft, turn)
        draft.outcome, draft.final_answer = outcome, answer
        if next_question is None:
            draft.conversation_end = end
            return
        question, source, by = next_question, "simulated_user", f"{user.endpoint.model}@{USER_VERSION}"


def close_turns(draft: Draft, outcome: Outcome) -> list[UserTurn]:
    """The turns as written: the last one, cut short by a timeout or an error, gets the trajectory's outcome."""
    if draft.turns and draft.turns[-1].outcome is None:
        draft.turns[-1].outcome = outcome
    return draft.turns
