"""A `Model` for the OpenAI Agents SDK that calls tools the prompted way (one JSON-schema-constrained
answer per turn: a tool call or a final answer), for models whose endpoint has no reliable native
tool-call parsing. The SDK's loop, its MCP client and its tool execution are used unchanged; only
how the model is asked differs."""

from __future__ import annotations

import itertools
import json
from typing import Any

import openai
from agents import FunctionTool, ModelResponse, ModelSettings, Usage
from agents.models.chatcmpl_converter import Converter
from agents.models.interface import Model
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from simgate.runner.agents.base import Draft, complete
from simgate.runner.agents.prompted import answer_schema, parse_answer, prompted_view, response_format, system_prompt
from simgate.runner.settings import RunSettings


class PromptedChatModel(Model):
    def __init__(self, client: openai.AsyncOpenAI, settings: RunSettings) -> None:
        self._client = client
        self._settings = settings
        self._ids = itertools.count()

    async def get_response(self, system_instructions: str | None, input: Any, model_settings: ModelSettings,
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any,
                           **_: Any) -> ModelResponse:
        specs: list[dict[str, Any]] = [{"type": "function", "function": {"name": tool.name, "description": tool.description or "",
                                                   "parameters": tool.params_json_schema}}
                 for tool in tools if isinstance(tool, FunctionTool)]
        messages = [dict(m) for m in Converter.items_to_messages(input)] if not isinstance(input, str) else [
            {"role": "user", "content": input}]
        view = [{"role": "system", "content": system_prompt(specs)}, *prompted_view(messages)]
        schema = answer_schema(specs, per_tool_arguments=True, max_string=self._settings.max_string_length,
                               max_items=self._settings.max_array_items)
        scratch = Draft()  # the SDK keeps the usage; this only counts the one request
        choice = await complete(self._client, self._settings, scratch, messages=view,
                                response_format=response_format(schema))
        kind, value = parse_answer(choice.message.content, {spec["function"]["name"] for spec in specs})
        number = next(self._ids)
        if kind == "tool_call":
            name, arguments = value
            output: list[Any] = [ResponseFunctionToolCall(
                type="function_call", call_id=f"call_{number}", name=name, status="completed",
                arguments=json.dumps(arguments, ensure_ascii=False))]
        else:
            output = [ResponseOutputMessage(
                id=f"msg_{number}", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", text=value, annotations=[])])]
        usage = Usage(requests=1, input_tokens=scratch.usage.prompt_tokens, output_tokens=scratch.usage.completion_tokens,
                      total_tokens=scratch.usage.total_tokens)
        return ModelResponse(output=output, usage=usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the prompted model answers whole turns; run the agent without streaming")
