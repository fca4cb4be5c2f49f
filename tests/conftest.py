import pytest

# Session fixtures defined once here, so every module shares one of each (imported into each module,
# pytest would start one per module and keep them all to the end of the session).
from docker_engine import docker_engine  # noqa: F401  (a private dockerd)
from llm_server import llm_server  # noqa: F401  (the tiny LLM behind an OpenAI-compatible API)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
