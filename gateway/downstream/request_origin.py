"""`Origin` for a downstream request: the way back to the client that made it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from pydantic import BaseModel, ConfigDict

from simgate.gateway.downstream.direct_calls import answered_directly


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow")


class _ServerToClient(types.Request[dict[str, Any] | None, str]):
    params: dict[str, Any] | None = None


_CAPABILITY = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"}


class RequestOrigin:
    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self._ctx = ctx

    def supports(self, method: str) -> bool:
        caps = self._ctx.session.client_capabilities
        name = _CAPABILITY.get(method)
        return bool(caps is not None and name is not None and getattr(caps, name, None) is not None
                    and self._ctx.session.can_send_request)

    def wants_progress(self) -> bool:
        return progress_token_from_params(self._ctx.params) is not None

    async def request(self, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
        result = await self._ctx.session.send_request(
            _ServerToClient(method=method, params=dict(params) if params is not None else None),  # type: ignore[arg-type]
            _Passthrough,
            metadata=ServerMessageMetadata(related_request_id=self._ctx.request_id),
        )
        return result.model_dump(by_alias=True, exclude_none=True)

    async def notify(self, notification: types.ServerNotification) -> None:
        # A request answered with one JSON body has no stream for it: the session's own stream takes it.
        json_body = answered_directly(getattr(self._ctx.request, "scope", None))
        await self._ctx.session.send_notification(
            notification, related_request_id=None if json_body else self._ctx.request_id)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._ctx.session.report_progress(progress, total, message)
