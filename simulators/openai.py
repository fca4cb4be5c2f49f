"""`openai` backend: an LLM imitates the tool, through any OpenAI-compatible chat completions endpoint.

`vllm serve` in production, llama.cpp's server, OpenAI itself. The answer is constrained with the
standard `response_format` json_schema (strict), then checked here anyway -- JSON, the answer's
shape, `structuredContent` against the tool's `outputSchema` -- and an invalid answer is sent back
to the model with the reason, a bounded number of times. Deterministic by default (temperature 0,
a fixed seed) and memoized: the same request gets the same answer from an in-memory LRU.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from simgate.canonical import digest
from simgate.results import bounded, schema_error, strip_meta
from simgate.simulators.base import SimulationError, SimulationRequest, SimulationResult
from simgate.simulators.prompts import load as load_prompt

if TYPE_CHECKING:
    from simgate.simulators.config import OpenAIConfig

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
NO_KEY = "simgate-no-key"  # local servers want no key, but the client insists on one


class InvalidAnswer(Exception):
    """The model's answer is not usable; the message says why (it is shown to the model on a retry)."""


def parse_answer(raw: str | None, output_schema: dict[str, Any] | None, prompt: Any) -> dict[str, Any]:
    """The model's answer as a dict, checked: JSON, the answer schema, then `structuredContent`
    against the tool's `outputSchema` (unless `isError`). Raises `InvalidAnswer`."""
    if raw is None or not raw.strip():
        raise InvalidAnswer("the answer is empty")
    fenced = _FENCE.match(raw)
    text = fenced.group(1) if fenced else raw
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise InvalidAnswer(f"the answer is not valid JSON ({exc})") from None
    if not isinstance(answer, dict):
        raise InvalidAnswer(f"the answer must be a JSON object, not {type(answer).__name__}")
    if not isinstance(answer.get("isError"), bool):
        raise InvalidAnswer('"isError" must be true or false')
    if not isinstance(answer.get("content_text", ""), str):
        raise InvalidAnswer('"content_text" must be a string')
    if output_schema is not None and not answer["isError"]:
        if "structuredContent" not in answer:
            raise InvalidAnswer('"structuredContent" is missing')
        try:
            problem = schema_error(output_schema, answer["structuredContent"])
        except ValueError as exc:  # the tool's own schema is broken: no answer can be checked
            raise SimulationError(f"the tool's outputSchema is unusable: {exc}") from None
        if problem is not None:
            raise InvalidAnswer(f'"structuredContent" does not match the outputSchema: {problem}')
    else:
        try:
            problem = schema_error(prompt.answer_schema(None), {k: v for k, v in answer.items()
                                                                if k != "structuredContent"})
        except ValueError:  # pragma: no cover - the answer schema is ours
            problem = None
        if problem is not None:
            raise InvalidAnswer(f"the answer does not match the required format: {problem}")
    return answer


class OpenAISimulator:
    backend = "openai"

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.prompt = load_prompt(config.prompt)
        self._cache: OrderedDict[str, SimulationResult] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[SimulationResult]] = {}
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.calls = 0  # requests sent to the endpoint (memo hits send none)

    @property
    def model_label(self) -> str:
        return f"{self.config.model}@prompt-{self.prompt.VERSION}"

    # -- prompt
    def render(self, request: SimulationRequest) -> list[dict[str, str]]:
        """The chat messages sent for this request (before any repair turns)."""
        return self.prompt.build_messages(request, max_chars=self.config.max_example_chars)

    def response_format(self, request: SimulationRequest) -> dict[str, Any]:
        """The standard structured-output constraint: the answer schema (optionally bounded)."""
        schema = bounded(self.prompt.answer_schema(request.tool.output_schema),
                         max_string=self.config.max_string_length, max_items=self.config.max_array_items)
        return {"type": "json_schema", "json_schema": {"name": "simulated_tool_result", "strict": self.config.strict,
                                                       "schema": schema}}

    def key(self, request: SimulationRequest) -> str:
        """The memo key: what the answer depends on (provenance and timings in earlier results excluded)."""
        def plain(examples: list[Any]) -> list[dict[str, Any]]:
            return [{"tool": e.tool, "arguments": e.arguments, "result": strip_meta(e.result), "error": e.error}
                    for e in examples]
        return digest({"prompt": self.prompt.VERSION, "server": request.server,
                       "server_description": request.server_description,
                       "tool": request.tool.model_dump(mode="json"), "arguments": request.arguments,
                       "examples": plain(request.examples), "history": plain(request.history),
                       "seed": self.seed_for(request)})

    def seed_for(self, request: SimulationRequest) -> int:
        """The configured seed; at a temperature above 0, shifted by the request's sample (its session),
        so that repeated runs of a task draw different samples instead of one memoized answer."""
        if self.config.temperature == 0 or not request.sample:
            return self.config.seed
        return (self.config.seed + int(digest(request.sample)[:8], 16)) % 2**31

    # -- client
    def _api_key(self) -> str:
        name = self.config.api_key_env
        if name is None:
            return NO_KEY
        value = os.environ.get(name)
        if not value:
            raise SimulationError(f"the environment variable {name} (gateway.simulator.openai.api_key_env) is not set")
        return value

    def client(self) -> Any:
        """An `AsyncOpenAI` client for the running event loop (its connection pool belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            # Our own HTTP client: the SDK's default one, when garbage-collected unclosed, schedules its
            # close on whatever loop then runs, which fails for connections of a loop that is gone.
            self._client = AsyncOpenAI(base_url=self.config.base_url, api_key=self._api_key(),
                                       timeout=self.config.timeout_s, max_retries=self.config.http_retries,
                                       http_client=DefaultAsyncHttpxClient(timeout=self.config.timeout_s))
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections (on the event loop that opened them)."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = self._client_loop = None

    # -- simulation
    async def simulate(self, request: SimulationRequest) -> SimulationResult:
        key = self.key(request)
        while True:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached.model_copy(deep=True)
            pending = self._inflight.get(key)
            if pending is None:
                break
            try:  # the same call is being simulated: share its answer (or its error)
                return (await asyncio.shield(pending)).model_copy(deep=True)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this caller was cancelled
                # the caller that was simulating it was cancelled: try again
        future: asyncio.Future[SimulationResult] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._generate(request)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(result)
        self._cache[key] = result
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
        return result.model_copy(deep=True)

    async def _generate(self, request: SimulationRequest) -> SimulationResult:
        from openai import APIError

        config = self.config
        output_schema = request.tool.output_schema
        messages: list[dict[str, str]] = self.render(request)
        response_format = self.response_format(request)
        problems: list[str] = []
        for _attempt in range(config.retries + 1):
            self.calls += 1
            try:
                completion = await self.client().chat.completions.create(
                    model=config.model, messages=messages, response_format=response_format,
                    temperature=config.temperature, seed=self.seed_for(request), max_tokens=config.max_tokens,
                    extra_body=config.extra_body or None)
            except APIError as exc:
                raise SimulationError(f"the simulator endpoint failed: {type(exc).__name__}: {exc}") from None
            if not completion.choices:
                raise SimulationError("the simulator endpoint returned no choice")
            choice = completion.choices[0]
            raw = choice.message.content
            try:
                if choice.finish_reason == "length":
                    raise InvalidAnswer(f"the answer was cut off at {config.max_tokens} tokens: answer more briefly")
                answer = parse_answer(raw, output_schema, self.prompt)
            except InvalidAnswer as exc:
                problems.append(str(exc))
                messages = [*messages, *self.prompt.repair_messages(raw or "", str(exc))]
                continue
            return SimulationResult(result=self.prompt.to_result(answer, output_schema), backend=self.backend,
                                    model=self.model_label, prompt_version=self.prompt.VERSION)
        raise SimulationError(f"no valid answer after {config.retries + 1} attempts: " + "; ".join(problems))
