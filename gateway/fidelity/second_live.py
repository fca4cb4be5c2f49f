"""A second live call L′ of each recorded call, through the config's own upstreams, for the noise floor.

The calls are replayed in recorded order, so a stateful server that starts from the state it was
recorded from sees the same sequence (start it from a fresh working directory for a faithful floor).
Vault secrets are resolved into the upstreams as the gateway does, and redacted out of the answers.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.records import Recording
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import ConfigError
from simgate.gateway.fidelity.source import FidelityInputError

logger = logging.getLogger("simgate.fidelity")
READY_TIMEOUT_S = 60.0


async def second_live_answers(config: GatewayConfig, recordings: list[Recording]) -> dict[int, dict[str, Any]]:
    """{index in `recordings`: L′}; recordings of servers the config does not run get none."""
    from pathlib import Path

    from simgate.gateway.errors import GatewayError
    from simgate.gateway.pipeline.redact import Redactor
    from simgate.gateway.upstream.pool import UpstreamPool
    from simgate.gateway.vault.gateway_secrets import GatewaySecrets
    from simgate.gateway.vault.store import VaultError

    redactor = Redactor()
    try:
        resolved = GatewaySecrets(config, redactor).resolve()
    except (ConfigError, VaultError) as exc:  # a missing vault secret: say which, do not start anything
        raise FidelityInputError(f"cannot start the upstreams for the second live call: {exc}") from None
    upstream_config = config.model_copy(update={"servers": {**config.servers, **resolved}}) if resolved else config
    wanted = {r.server for r in recordings}
    active = set(upstream_config.active_servers)
    missing = sorted(wanted - active)
    if missing:
        logger.warning("no second live call for %s: not a server of the config", ", ".join(missing))
    subset = upstream_config.model_copy(update={"servers": {
        name: server for name, server in upstream_config.servers.items() if name in wanted}})
    pool = UpstreamPool(subset, Path(config.gateway.state_dir))
    answers: dict[int, dict[str, Any]] = {}
    async with pool.running():
        await pool.wait_ready(READY_TIMEOUT_S)
        for index, recording in enumerate(recordings):
            if recording.server not in pool.upstreams:
                continue
            try:
                result = await pool.get(recording.server).request(
                    "tools/call", {"name": recording.tool, "arguments": recording.arguments})
                answers[index] = redactor.redact(dict(result))
            except MCPError as exc:  # a JSON-RPC error is an answer too (an error outcome)
                message = exc.message if not isinstance(exc, GatewayError) else str(exc.message)
                answers[index] = {"error": {"code": exc.code, "message": redactor.redact_text(message),
                                            "data": redactor.redact(exc.data)}}
    return answers
