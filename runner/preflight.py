"""Before a run: is the gateway there, and the LLM? A clear one-line error instead of a failed
trajectory per task."""

from __future__ import annotations

import openai

from simgate.runner.agents import build_agent
from simgate.runner.agents.base import api_key
from simgate.runner.errors import LLMUnreachable
from simgate.runner.mcp_tools import gateway_session
from simgate.runner.settings import RunSettings


async def check_gateway(settings: RunSettings) -> int:
    """The number of tools the gateway offers; GatewayUnreachable if it cannot be reached."""
    async with gateway_session(settings.gateway, mode=settings.mode, session=f"{settings.session_prefix}preflight",
                               timeout=30) as session:
        return len(session.tools)


async def check_llm(settings: RunSettings) -> None:
    client = openai.AsyncOpenAI(base_url=settings.llm_base_url, api_key=api_key(settings), timeout=30, max_retries=0)
    async with client:
        try:
            await client.models.list()
        except openai.APIConnectionError:
            raise LLMUnreachable(f"cannot reach the LLM at {settings.llm_base_url} (is the server running?)") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMUnreachable(f"the LLM at {settings.llm_base_url} refused the API key: {exc.message}") from None
        except openai.APIStatusError:
            pass  # some OpenAI-compatible servers have no /models; the first request will tell


async def preflight(settings: RunSettings) -> int:
    build_agent(settings)  # an agent whose framework is not installed fails here, once
    await check_llm(settings)
    return await check_gateway(settings)
