"""The LLM's part in onboarding (optional): realistic probe arguments and the server's category.

Any OpenAI-compatible endpoint (vLLM, llama.cpp, OpenAI). Answers are constrained by
`response_format` json_schema and validated again here; a bad answer is dropped and counted, never
fatal — onboarding works the same without a model, only with fewer argument sets.
"""

from __future__ import annotations

import json
from typing import Any

from openai import AsyncOpenAI, OpenAIError
from pydantic import BaseModel

from runner.onboard.arguments import ProbeArguments
from runner.onboard.categories import CATEGORY_SCHEMA, category_prompt, parse_category
from runner.onboard.observations import Category
from simulators.results import schema_error


class OnboardLLM(BaseModel):
    base_url: str
    model: str
    api_key: str = "not-needed"
    timeout: float = 120.0
    max_tokens: int = 512


class LLMHelper:
    def __init__(self, settings: OnboardLLM) -> None:
        self.settings = settings
        self.client = AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout,
                                  max_retries=1)
        self.rejected = 0  # answers that were not valid JSON for their schema

    async def _json(self, prompt: str, schema: dict[str, Any], name: str) -> Any:
        try:
            completion = await self.client.chat.completions.create(
                model=self.settings.model, messages=[{"role": "user", "content": prompt}], temperature=0, seed=0,
                max_tokens=self.settings.max_tokens,
                response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
        except OpenAIError:
            self.rejected += 1
            return None
        text = completion.choices[0].message.content or ""
        try:
            return json.loads(text)
        except ValueError:
            self.rejected += 1
            return None

    async def arguments(self, tool: str, description: str | None, schema: dict[str, Any]) -> list[ProbeArguments]:
        """One realistic argument set written from the tool's description and schema; none if invalid."""
        prompt = (f"Write realistic arguments for one call of the tool `{tool}`, as a user of it would.\n"
                  f"Description: {description or '(none)'}\nInput schema: {json.dumps(schema)[:4000]}\n"
                  "Answer with the arguments object only.")
        value = await self._json(prompt, schema or {"type": "object"}, "arguments")
        try:
            valid = isinstance(value, dict) and schema_error(schema or {"type": "object"}, value) is None
        except ValueError:
            valid = False
        if not valid:
            self.rejected += value is not None
            return []
        return [ProbeArguments(kind="llm", arguments=value, valid=True)]

    async def category(self, name: str, description: str | None, tools: list[dict[str, Any]]) -> Category | None:
        value = await self._json(category_prompt(name, description, tools), CATEGORY_SCHEMA, "server_labels")
        found = parse_category(json.dumps(value), self.settings.model) if value is not None else None
        if found is None and value is not None:
            self.rejected += 1
        return found
