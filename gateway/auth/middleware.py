"""ASGI middleware: with keys configured, every MCP and admin request needs `Authorization: Bearer`.

Health, readiness and metrics stay open (probes and scrapers carry no keys). The key that was
presented travels to the MCP handlers in `scope["state"]`, where the downstream server filters what
the client sees and the `Authorize` stage checks each call. A key file that has become unreadable
closes the gateway (503) rather than opening it.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth.keys import ApiKey, KeyFileError, KeyStore

logger = logging.getLogger("simgate.auth")

STATE_KEY = "simgate_api_key"
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def presented_key(scope: Scope) -> ApiKey | None:
    """The client's key for this request (None when the gateway has no keys)."""
    state = scope.get("state")
    return state.get(STATE_KEY) if isinstance(state, dict) else None


class RequireApiKey:
    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            enabled = self.keys.enabled
            key = self._authenticate(scope) if enabled else None
        except KeyFileError as exc:
            logger.error("key file unreadable; refusing clients", extra={"error": str(exc)})
            await JSONResponse({"error": "the gateway's key file is unreadable"}, status_code=503)(scope, receive, send)
            return
        if enabled:
            refusal = self._refusal(scope, key)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            scope.setdefault("state", {})[STATE_KEY] = key
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> ApiKey | None:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.keys.verify(token.strip())

    def _refusal(self, scope: Scope, key: ApiKey | None) -> JSONResponse | None:
        path: str = scope["path"]
        if key is None:
            has_header = "authorization" in Headers(scope=scope)
            message = ("invalid API key" if has_header
                       else "this gateway requires an API key: send 'Authorization: Bearer <key>'")
            return JSONResponse({"error": message}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="simgate"'})
        if path.startswith("/admin/") and not key.admin:
            return JSONResponse({"error": f"API key {key.name!r} may not use the admin API"}, status_code=403)
        if path.startswith("/servers/"):
            server = path.removeprefix("/servers/").partition("/")[0]
            if not key.allows_server(server):
                return JSONResponse({"error": f"API key {key.name!r} may not use server {server!r}"}, status_code=403)
        return None
