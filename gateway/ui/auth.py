"""Who may use the page: an admin API key, presented once at login and then carried by a cookie.

A browser cannot put `Authorization` on a page load or an `EventSource`, and a key kept in page
storage is readable by any script. So the login form sends the key once (as a Bearer header, never in
a URL or a body that could be logged), and the gateway answers with a short-lived session cookie:
`HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends it), `Path=/ui`, signed with
a secret that lives only in this gateway process. It names the key it was made from, and is checked
against the key file on every request, so removing the key or its admin right ends the session.

Requests made with a cookie that change something must also carry `X-Simgate-UI: 1` (a header no
other origin can add without a CORS preflight, which is never granted), and an `Origin`, when sent,
must be the page's own. Without any keys configured the page is open, as the admin API is.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send

from simgate.gateway.auth.api_keys import ApiKey, KeyFileError, KeyStore
from simgate.gateway.auth.middleware import STATE_KEY, presented_key

COOKIE = "simgate_ui"
CSRF_HEADER = "x-simgate-ui"
SESSION_SECONDS = 3600
STATIC = Path(__file__).resolve().parent / "static"
# Reachable without a key: what the login form itself needs (paths inside the mount).
OPEN = frozenset({"/login", "/static/login.js", "/static/style.css"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class SessionCookies:
    """Signs and checks the page's session cookies; the secret is made per gateway process."""

    def __init__(self, keys: KeyStore, *, seconds: int = SESSION_SECONDS) -> None:
        self._keys = keys
        self._secret = secrets.token_bytes(32)
        self.seconds = seconds

    def _sign(self, key: ApiKey, expires: int) -> str:
        message = f"{key.id}.{expires}.{key.sha256}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, key: ApiKey) -> str:
        expires = int(time.time()) + self.seconds
        return f"{key.id}.{expires}.{self._sign(key, expires)}"

    def verify(self, token: str) -> ApiKey | None:
        key_id, _, rest = token.partition(".")
        expires_text, _, signature = rest.partition(".")
        # ASCII digits, few: `isdigit` passes '²' and `int` refuses more than 4300 digits (a 500, not a refusal).
        if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12) \
                or int(expires_text) < time.time():
            return None
        key = self._keys.keys().get(key_id)
        if key is None or not hmac.compare_digest(signature, self._sign(key, int(expires_text))):
            return None
        return key

    def set_cookie(self, response: Response, key: ApiKey, *, secure: bool) -> None:
        response.set_cookie(COOKIE, self.issue(key), max_age=self.seconds, path="/ui", httponly=True,
                            samesite="strict", secure=secure)


def cookie_token(scope: Scope) -> str | None:
    header = Headers(scope=scope).get("cookie")
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def same_origin(headers: Headers, scheme: str) -> bool:
    """An `Origin`, if sent, names this very host (the page's own origin)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc == headers.get("host", "")


def login_page(status_code: int = 200) -> HTMLResponse:
    return HTMLResponse((STATIC / "login.html").read_text(), status_code=status_code)


class UiAuth:
    """ASGI middleware of the `/ui` mount (after `RequireApiKey`, which has already checked a Bearer key)."""

    def __init__(self, app: ASGIApp, keys: KeyStore, cookies: SessionCookies) -> None:
        self.app = app
        self._keys = keys
        self._cookies = cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = get_route_path(scope) or "/"
        unsafe = scope["method"] not in _SAFE
        if unsafe and not same_origin(headers, scope.get("scheme", "http")):
            await JSONResponse({"error": "cross-origin request refused"}, status_code=403)(scope, receive, send)
            return
        if path in OPEN or not self._enabled():
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)  # a valid Bearer key, checked (admin) by `RequireApiKey`
        if key is None and "authorization" not in headers and (token := cookie_token(scope)) is not None:
            key = self._cookies.verify(token)
            if key is not None and unsafe and headers.get(CSRF_HEADER) != "1":
                await JSONResponse({"error": f"a change from the page must carry '{CSRF_HEADER}: 1'"},
                                   status_code=403)(scope, receive, send)
                return
        refusal = self._refusal(key, path, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})[STATE_KEY] = key
        await self.app(scope, receive, send)

    def _enabled(self) -> bool:
        try:
            return self._keys.enabled
        except KeyFileError:
            return True  # unreadable: `RequireApiKey` has answered 503 already; never open up

    @staticmethod
    def _refusal(key: ApiKey | None, path: str, headers: Headers) -> Response | None:
        if key is None:
            if path == "/" and "text/html" in headers.get("accept", ""):
                return login_page(401)
            return JSONResponse({"error": "the page needs an admin API key: log in at /ui/login"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer realm="simgate"'})
        if not key.admin:
            return JSONResponse({"error": f"API key {key.name!r} may not use the page (it is not an admin key)"},
                                status_code=403)
        return None
