"""docker/compose.yaml: a gateway with a vLLM simulator. Compose cannot run here (no image registry),
so its structure is checked: the file parses, the vLLM flags that matter are there, and the inline
gateway config is a valid simgate config whose simulator points at the vLLM service."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from harness import REPO_ROOT

from simgate.gateway.config.loader import parse_config

COMPOSE = REPO_ROOT / "docker" / "compose.yaml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _flags(command: list[str]) -> dict[str, str | None]:
    flags: dict[str, str | None] = {}
    for item in command:
        if item.startswith("--"):
            name, _, value = item.partition("=")
            flags[name] = value or None
    return flags


def test_simulator_service_runs_vllm_serve_with_the_flags_that_matter() -> None:
    simulator = _compose()["services"]["simulator"]
    assert simulator["image"].startswith("vllm/vllm-openai:")
    assert simulator["entrypoint"] == ["vllm", "serve"]
    command = simulator["command"]
    assert not command[0].startswith("--")  # the model, first
    flags = _flags(command)
    assert "--enable-prefix-caching" in flags
    assert flags["--max-model-len"] and flags["--served-model-name"] == "simulator"
    assert flags["--structured-outputs-config"] == '{"backend": "xgrammar"}'
    assert flags["--port"] == "8000" and flags["--host"] == "0.0.0.0"
    assert "/health" in " ".join(simulator["healthcheck"]["test"])


def test_gateway_service_uses_the_simulator() -> None:
    compose = _compose()
    gateway = compose["services"]["gateway"]
    assert gateway["depends_on"]["simulator"]["condition"] == "service_healthy"
    dockerfile = (COMPOSE.parent / gateway["build"]["context"] / gateway["build"]["dockerfile"]).resolve()
    assert dockerfile == REPO_ROOT / "docker" / "gateway.Dockerfile" and dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():  # everything the image copies exists
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO_ROOT / source).exists(), source
    mount = gateway["configs"][0]
    config = parse_config(compose["configs"][mount["source"]]["content"], source="compose inline config")
    simulator = config.gateway.simulator
    assert simulator is not None and simulator.backend == "openai" and simulator.openai is not None
    url = urlparse(simulator.openai.base_url)
    served = _flags(compose["services"]["simulator"]["command"])
    assert url.hostname == "simulator" and str(url.port) == served["--port"] and url.path == "/v1"
    assert simulator.openai.model == served["--served-model-name"]
    assert simulator.openai.temperature == 0
    entry = Path(mount["target"])
    cmd = yaml.safe_load((REPO_ROOT / "docker" / "gateway.Dockerfile").read_text().split("CMD ", 1)[1].splitlines()[0])
    assert cmd[0] == str(entry) and "--insecure" in cmd  # a non-loopback bind in a container


def test_gateway_service_runs_replicas_on_the_redis_service() -> None:
    """The scaled gateway: `--workers` replicas behind its one port, every one on the Redis store."""
    from simgate.gateway.replicas.supervisor import STOP_GRACE

    compose = _compose()
    redis, gateway = compose["services"]["redis"], compose["services"]["gateway"]
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    command = gateway["command"]
    workers = command[command.index("--workers") + 1]
    assert workers.startswith("${SIMGATE_GATEWAY_WORKERS:-") and int(workers.split(":-")[1].rstrip("}")) >= 2
    assert command[command.index("--port") + 1] == "8808" and "--insecure" in command
    assert int(gateway["stop_grace_period"].rstrip("s")) > STOP_GRACE  # replicas stop cleanly before SIGKILL
    mount = gateway["configs"][0]
    config = parse_config(compose["configs"][mount["source"]]["content"], source="compose inline config")
    store = config.gateway.store
    assert store.backend == "redis" and store.url is not None and urlparse(store.url).hostname == "redis"
    assert '".[redis]"' in (REPO_ROOT / "docker" / "gateway.Dockerfile").read_text()
