"""Agents that work a task through the gateway: native tool calls, prompted (JSON-schema-constrained)
tool calls, and the OpenAI Agents SDK. Each fills a `Draft` as it goes, so a timeout keeps what was done."""

from __future__ import annotations

from simgate.runner.agents.base import Agent, Draft
from simgate.runner.settings import RunSettings


def build_agent(settings: RunSettings) -> Agent:
    if settings.agent == "native":
        from simgate.runner.agents.native import NativeAgent

        return NativeAgent(settings)
    if settings.agent == "agents-sdk":
        from simgate.runner.agents.agents_sdk import AgentsSDKAgent

        return AgentsSDKAgent(settings)
    from simgate.runner.agents.prompted import PromptedAgent

    return PromptedAgent(settings)


__all__ = ["Agent", "Draft", "build_agent"]
