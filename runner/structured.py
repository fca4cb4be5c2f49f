"""One JSON-schema-constrained chat completion, the way every LLM role outside the agent asks
(onboarding's arguments and labels, task generators, judges, simulated users).

`response_format` json_schema is what vLLM, llama.cpp and OpenAI all honour; the answer is still
parsed and validated here, never trusted. A failure is returned as a reason, not raised: a bad
generation is counted and dropped by the caller, and never ends a run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from openai import AsyncOpenAI, OpenAIError
from pydantic import BaseModel, Field

from simgate.results import schema_error


class Endpoint(BaseModel):
    """An OpenAI-compatible model: where it is, which model, how much each use weighs in a pool."""

    base_url: str
    model: str
    api_key: str = "not-needed"
    weight: float = Field(1.0, gt=0)
    timeout: float = 300.0
    max_tokens: int = 1024


def client_for(endpoint: Endpoint) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                       timeout=endpoint.timeout, max_retries=1)


async def json_completion(client: AsyncOpenAI, endpoint: Endpoint, prompt: str, schema: dict[str, Any], name: str,
                          *, temperature: float = 0.0, seed: int = 0,
                          system: str | None = None) -> tuple[Any, str | None]:
    """(value, None), or (None, why it was dropped)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    try:
        completion = await client.chat.completions.create(  # type: ignore[call-overload]  # plain-dict messages
            model=endpoint.model, messages=messages, temperature=temperature, seed=seed,
            max_tokens=endpoint.max_tokens,
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
    except OpenAIError as exc:
        return None, f"request failed: {type(exc).__name__}: {str(exc)[:200]}"
    if not completion.choices:
        return None, "no choices in the answer"
    text = completion.choices[0].message.content or ""
    try:
        value = json.loads(text)
    except ValueError:
        return None, f"not JSON ({len(text)} characters)"
    try:
        error = schema_error(schema, value)
    except ValueError as exc:
        return None, str(exc)
    if error is not None:
        return None, f"does not match the schema: {error}"
    return value, None


# How a stage asks for one completion: `json_completion` here, or the same on a Ray worker
# (runner/distributed.py RayCompletions), with the same arguments and the same (value, why) answer.
Completer = Callable[..., Awaitable[tuple[Any, str | None]]]


class EndpointPool:
    """Several models for one role: each use picks one, round-robin or by weight (seeded)."""

    def __init__(self, endpoints: list[Endpoint], *, weighted: bool = False, seed: int = 0) -> None:
        if not endpoints:
            raise ValueError("at least one model")
        self.endpoints = endpoints
        self.clients = [client_for(endpoint) for endpoint in endpoints]
        self.weighted = weighted
        self._rng = random.Random(seed)
        self._next = 0

    async def __aenter__(self) -> EndpointPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client's connection pool (a long pipeline builds one pool per stage)."""
        for client in self.clients:
            await client.close()

    def pick(self, index: int | None = None) -> tuple[Endpoint, AsyncOpenAI]:
        """The model for use number `index` (stable for a given index, so a resumed run asks the same one)."""
        if self.weighted:
            rng = random.Random(f"{index}") if index is not None else self._rng
            chosen = rng.choices(range(len(self.endpoints)), weights=[e.weight for e in self.endpoints])[0]
        else:
            chosen = (index if index is not None else self._next) % len(self.endpoints)
            self._next += 1
        return self.endpoints[chosen], self.clients[chosen]
