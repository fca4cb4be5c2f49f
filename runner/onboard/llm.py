"""The LLM's part in onboarding (optional): realistic probe arguments and the server's category.

Any OpenAI-compatible endpoint (vLLM, llama.cpp, OpenAI). Answers are constrained by
`response_format` json_schema and validated again (runner/structured.py); a bad answer is dropped
and counted, never fatal — onboarding works the same without a model, only with fewer argument sets.
"""

from __future__ import annotations

import json
from typing import Any

from simgate.runner.onboard.arguments import ProbeArguments
from simgate.runner.onboard.categories import CATEGORY_SCHEMA, category_prompt, parse_category
from simgate.runner.onboard.observations import Category
from simgate.runner.structured import Endpoint, client_for, json_completion


class LLMHelper:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.client = client_for(endpoint)
        self.rejected: list[str] = []  # why answers were dropped

    async def _json(self, prompt: str, schema: dict[str, Any], name: str) -> Any:
        value, why = await json_completion(self.client, self.endpoint, prompt, schema, name)
        if why is not None:
            self.rejected.append(f"{name}: {why}")
        return value

    async def arguments(self, tool: str, description: str | None, schema: dict[str, Any]) -> list[ProbeArguments]:
        """One realistic argument set written from the tool's description and schema; none if invalid."""
        prompt = (f"Write realistic arguments for one call of the tool `{tool}`, as a user of it would.\n"
                  f"Description: {description or '(none)'}\nInput schema: {json.dumps(schema)[:4000]}\n"
                  "Answer with the arguments object only.")
        value = await self._json(prompt, schema or {"type": "object"}, "arguments")
        return [ProbeArguments(kind="llm", arguments=value, valid=True)] if isinstance(value, dict) else []

    async def category(self, name: str, description: str | None, tools: list[dict[str, Any]]) -> Category | None:
        value = await self._json(category_prompt(name, description, tools), CATEGORY_SCHEMA, "server_labels")
        return parse_category(json.dumps(value), self.endpoint.model) if value is not None else None
