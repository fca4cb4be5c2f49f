"""ASGI middleware: with keys configured, every MCP and admin request needs `Authorization: Bearer`.

Health, readiness and metrics stay open (probes and scrapers carry no keys). The key that was
presented travels to the MCP handlers in `scope["state"]`, where the downstream server filters what
the client sees and the `Authorize` stage checks each call. Failures close the gateway rather than
open it: a key file that has become unreadable answers 503, and once this gateway has required keys
(it started with some, or one was created while it ran), removing the last one refuses every client
(403) instead of turning authentication off, unless it was started with `--insecure`.
"""

from __future__ import annotations

import logging

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from simgate.gateway.auth.api_keys import ApiKey, KeyFileError, KeyStore

logger = logging.getLogger("simgate.auth")

STATE_KEY = "simgate_api_key"
# Set in the ASGI scope by `ReplicaFront` (gateway.replicas) on a run-time change that a sibling replica has
# authenticated and applied, passed on with the parent's token, which no client has: admitted without a key.
TRUSTED_SIBLING = "simgate.trusted_sibling"
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
UI_PREFIX = "/ui"  # the page: it checks the admin key itself (header, or the cookie its login sets)


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def presented_key(scope: Scope) -> ApiKey | None:
    """The client's key for this request (None when the gateway has no keys)."""
    state = scope.get("state")
    return state.get(STATE_KEY) if isinstance(state, dict) else None


def key_principal(key: ApiKey) -> AuthenticatedUser:
    """The key as the principal of its requests, where the SDK's transports look for one (`scope["user"]`): a
    session (streamable HTTP or HTTP+SSE) is then held to the key that opened it, and a request of the session
    with another key is answered 404, as one naming an unknown session. A session id alone (it travels in
    headers and, over HTTP+SSE, in URLs that proxies log) must not be all a client needs. The key's id, never
    its secret."""
    return AuthenticatedUser(AccessToken(token="", client_id=f"simgate-key:{key.id}", scopes=[]))


NO_KEYS_LEFT = ("no API keys are configured: this gateway has required keys, so it refuses every client until "
                "one is created with `simgate keys create`")


class RequireApiKey:
    """`required`: keys were in force when the gateway started. `keyless_allowed` (`--insecure`): the
    gateway may serve without keys, so removing the last one turns authentication off again."""

    def __init__(self, app: ASGIApp, keys: KeyStore, *, required: bool = False, keyless_allowed: bool = False) -> None:
        self.app = app
        self.keys = keys
        self._required = required
        self._keyless_allowed = keyless_allowed
        self._locked = False  # refusing everyone for want of keys (logged once per time it happens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS or scope.get(TRUSTED_SIBLING):
            await self.app(scope, receive, send)
            return
        try:
            enabled = self.keys.enabled
            key = self._authenticate(scope) if enabled else None
        except KeyFileError as exc:
            logger.error("key file unreadable; refusing clients", extra={"error": str(exc)})
            await JSONResponse({"error": "the gateway's key file is unreadable"}, status_code=503)(scope, receive, send)
            return
        if not enabled:
            if self._required and not self._keyless_allowed:
                self._lock()
                await JSONResponse({"error": NO_KEYS_LEFT}, status_code=403)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        self._unlock()
        if key is None and is_ui_path(scope["path"]):
            await self.app(scope, receive, send)  # `gateway.ui.auth` requires an admin key (or its cookie)
            return
        refusal = self._refusal(scope, key)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = key
        if key is not None:  # always, past `_refusal`
            scope["user"] = key_principal(key)
        await self.app(scope, receive, send)

    def _lock(self) -> None:
        if not self._locked:
            self._locked = True
            logger.warning("the last client API key is gone: refusing every client until one is created",
                           extra={"keys_file": str(self.keys.path)})

    def _unlock(self) -> None:
        if not self._required:
            logger.info("client API keys are now required", extra={"keys_file": str(self.keys.path)})
        self._required, self._locked = True, False

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
        if (path.startswith("/admin/") or is_ui_path(path)) and not key.admin:
            what = "the page (/ui)" if is_ui_path(path) else "the admin API"
            return JSONResponse({"error": f"API key {key.name!r} may not use {what}"}, status_code=403)
        if path.startswith("/servers/"):
            server = path.removeprefix("/servers/").partition("/")[0]
            if not key.allows_server(server):
                return JSONResponse({"error": f"API key {key.name!r} may not use server {server!r}"}, status_code=403)
        return None
