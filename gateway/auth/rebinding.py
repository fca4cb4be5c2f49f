"""DNS-rebinding protection: on loopback, a request must be addressed to loopback (`Host`) and, when it
comes from a page, from a loopback page (`Origin`).

One set of rules for every route: the MCP endpoints (checked again by the SDK's transport with the same
settings) and the admin API, where a web page could otherwise switch modes. The probes (`/healthz`,
`/readyz`, `/metrics`) are exempt for GET and HEAD only: scrapers send whatever `Host` they were
configured with, and those routes change nothing.
"""

from __future__ import annotations

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from simgate.gateway.net import is_loopback

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
_READ_ONLY = frozenset({"GET", "HEAD"})
_SHOWN = 100  # characters of a refused header quoted back


def rebinding_settings(host: str) -> TransportSecuritySettings:
    """The rules for a gateway listening on `host`: enforced whenever that is loopback only.

    Off a loopback address, clients reach the gateway by names it cannot know, and client keys (required
    there) are what keeps a web page out.
    """
    if is_loopback(host):
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class CheckHostAndOrigin:
    """ASGI middleware applying `rebinding_settings` (through the SDK's own check) to every route."""

    def __init__(self, app: ASGIApp, settings: TransportSecuritySettings) -> None:
        self.app = app
        self._enabled = settings.enable_dns_rebinding_protection
        self._check = TransportSecurityMiddleware(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self._enabled or scope["type"] != "http"
                or (scope["path"] in PROBES and scope["method"] in _READ_ONLY)):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = await self._check.validate_request(request, is_post=False)
        if refused is None:
            await self.app(scope, receive, send)
            return
        header = "origin" if refused.status_code == 403 else "host"
        value = (request.headers.get(header) or "")[:_SHOWN]
        message = (f"{header.capitalize()} {value!r} refused: this gateway listens on loopback and answers only "
                   "requests addressed to 127.0.0.1, localhost or [::1] (and pages served from them), against "
                   "DNS rebinding")
        await JSONResponse({"error": message}, status_code=refused.status_code)(scope, receive, send)
