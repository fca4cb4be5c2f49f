"""`/ui`: the page, its static files and its API, mounted into the gateway's app.

The API under `/ui/api` is the admin API's own handlers (the same functions behind `/admin/...`),
so the CLI and the page always agree; views may add routes of their own (`gateway.ui.views`).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simgate.gateway.auth.middleware import presented_key
from simgate.gateway.config.execution import Mode
from simgate.gateway.ui.auth import LOGOUT, STATIC, SessionCookies, UiAuth, cookie_token, login_page
from simgate.gateway.ui.views import VIEWS

logger = logging.getLogger("simgate.ui")

# Everything the page loads comes from the gateway itself; nothing may frame it.
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                 b"img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def ui_routes(gateway: Any) -> list[BaseRoute]:
    # With replicas, each has its own secret: a cookie's session id names the replica where it is valid
    # (`replicas.forward` sends its requests there), so that replica alone need know of its logout.
    tag = gateway.links.plan.session_prefix() if gateway.links is not None else ""
    cookies = SessionCookies(gateway.keys, tag=tag)
    api: list[BaseRoute] = [
        Route("/views", _views),
        Route("/session", _session),
        Route("/servers", gateway._servers),
        Route("/servers/{name}", gateway._server),
        Route("/servers/{name}/restart", gateway._restart, methods=["POST"]),
        Route("/servers/{name}/start", gateway._start, methods=["POST"]),
        Route("/servers/{name}/stop", gateway._stop, methods=["POST"]),
        Route("/modes", gateway._modes, methods=["GET", "PUT", "DELETE"]),
    ]
    for view in VIEWS:
        if view.routes is not None:
            api.extend(view.routes(gateway))
    return [
        Route("/ui", lambda request: RedirectResponse("/ui/", status_code=307)),
        Mount("/ui", routes=[
            Route("/", _index),
            Route("/login", _Login(gateway.keys, cookies).handle, methods=["GET", "POST"]),
            Route(LOGOUT, _Logout(cookies).handle, methods=["POST"]),
            Mount("/api", routes=api),
            Mount("/static", app=StaticFiles(directory=STATIC)),
        ], middleware=[Middleware(_SecurityHeaders), Middleware(UiAuth, keys=gateway.keys, cookies=cookies)]),
    ]


async def _index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def _views(request: Request) -> Response:
    return JSONResponse({"views": [{"name": view.name, "title": view.title} for view in VIEWS]})


async def _session(request: Request) -> Response:
    key = presented_key(request.scope)
    return JSONResponse({"key": key.name if key is not None else None, "modes": [mode.value for mode in Mode]})


class _Login:
    """GET: the form. POST with `Authorization: Bearer <admin key>` (checked by `RequireApiKey`): the
    session cookie."""

    def __init__(self, keys: Any, cookies: SessionCookies) -> None:
        self._keys = keys
        self._cookies = cookies

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            return login_page()
        if not self._keys.enabled:
            return JSONResponse({"key": None})  # no keys: the page is open, nothing to log in with
        key = presented_key(request.scope)
        if key is None:
            message = ("invalid API key" if "authorization" in request.headers
                       else "send the admin key as 'Authorization: Bearer <key>'")
            return JSONResponse({"error": message}, status_code=401)
        response = JSONResponse({"key": key.name})
        self._cookies.set_cookie(response, key, secure=request.url.scheme == "https")
        logger.info("page login", extra={"key": key.name})  # its name only: the key itself is never logged
        return response


class _Logout:
    """Ends the session of the cookie sent, if it is a valid one (so a copy of it is refused from now on),
    and clears the cookie; 204 either way. By cookie, `UiAuth` has required `X-Simgate-UI` already."""

    def __init__(self, cookies: SessionCookies) -> None:
        self._cookies = cookies

    async def handle(self, request: Request) -> Response:
        token = cookie_token(request.scope)
        if token is not None and (key := self._cookies.revoke(token)) is not None:
            logger.info("page logout", extra={"key": key.name})
        response = Response(status_code=204)
        self._cookies.clear_cookie(response)
        return response


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in _SECURITY_HEADERS if name not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
