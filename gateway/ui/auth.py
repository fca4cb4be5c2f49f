"""Who may use the page: an admin API key, presented once at login and then carried by a cookie.

A browser cannot put `Authorization` on a page load or an `EventSource`, and a key kept in page
storage is readable by any script. So the login form sends the key once (as a Bearer header, never in
a URL or a body that could be logged), and the gateway answers with a short-lived session cookie:
`HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends it), `Path=/ui`, signed with
a secret that lives only in this gateway process. It names the key it was made from, and is checked
against the key file on every request, so removing the key or its admin right ends the session. Each
cookie carries a random session id; logging out revokes that id in this process (where alone the
cookie is valid: with replicas, the id names the replica that made it and its requests go there), so
a copy of the cookie is refused from then on.

Requests made with a cookie that change something must also carry `X-Simgate-UI: 1` (a header no
other origin can add without a CORS preflight, which is never granted), and an `Origin`, when sent,
must be the page's own. Without any keys configured the page is open, as the admin API is.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import logging
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
# Logouts remembered at once (each until its cookie would have expired): a few hundred bytes each (tens of
# MB at most), and only admins can log in, so only a runaway script gets here; see `SessionCookies.revoke`.
MAX_REVOKED = 100_000
LOGOUT = "/logout"
STATIC = Path(__file__).resolve().parent / "static"
# Reachable without a key: what the login form itself needs (paths inside the mount).
OPEN = frozenset({"/login", "/static/login.js", "/static/style.css"})
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})

logger = logging.getLogger("simgate.ui")


class SessionCookies:
    """Signs and checks the page's session cookies; the secret is made per gateway process, and so is the
    set of session ids revoked by a logout (held here, pruned as their cookies expire).

    A token reads `<key id>.<expires>.<session id>.<signature>`; `tag` starts each session id (a replica's
    `r1-`, so any replica can tell where a cookie is valid, as with MCP session ids)."""

    def __init__(self, keys: KeyStore, *, seconds: int = SESSION_SECONDS, tag: str = "",
                 max_revoked: int = MAX_REVOKED) -> None:
        self._keys = keys
        self._secret = secrets.token_bytes(32)
        self.seconds = seconds
        self._tag = tag
        self._max_revoked = max_revoked
        self._revoked: dict[str, int] = {}  # session id -> when its cookie expires
        self._expiring: list[tuple[int, str]] = []  # the same, as a heap: the soonest to expire first

    def _sign(self, key: ApiKey, expires: int, session: str) -> str:
        message = f"{key.id}.{expires}.{session}.{key.sha256}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, key: ApiKey) -> str:
        expires = int(time.time()) + self.seconds
        session = f"{self._tag}{secrets.token_hex(16)}"
        return f"{key.id}.{expires}.{session}.{self._sign(key, expires, session)}"

    def _signed(self, token: str) -> tuple[ApiKey, int, str] | None:
        """The key, expiry and session id of a token this process signed and that has not expired."""
        parts = token.split(".")
        if len(parts) != 4:
            return None
        key_id, expires_text, session, signature = parts
        # ASCII digits, few: `isdigit` passes '²' and `int` refuses more than 4300 digits (a 500, not a refusal).
        if not (expires_text.isascii() and expires_text.isdigit() and len(expires_text) <= 12) \
                or int(expires_text) < time.time():
            return None
        key = self._keys.keys().get(key_id)
        if key is None or not hmac.compare_digest(signature, self._sign(key, int(expires_text), session)):
            return None
        return key, int(expires_text), session

    def verify(self, token: str) -> ApiKey | None:
        signed = self._signed(token)
        if signed is None or signed[2] in self._revoked:
            return None
        return signed[0]

    def revoke(self, token: str) -> ApiKey | None:
        """End the session of a valid `token`: its key (None: it was not one). Only a cookie this process signed
        gets here, so an entry lives at most `seconds`, and only admin keys can make cookies."""
        signed = self._signed(token)
        if signed is None or signed[2] in self._revoked:
            return None
        key, expires, session = signed
        self._prune()
        if len(self._revoked) >= self._max_revoked:
            # Forgetting the oldest revocation would bring its (maybe stolen) cookie back to life; refusing
            # would leave this one valid. A new secret ends every session instead: memory stays bounded and
            # the worst outcome is that everyone logs in again.
            logger.warning("more than %d page logouts within %ds: every page session ends", self._max_revoked,
                           self.seconds)
            self._secret = secrets.token_bytes(32)
            self._revoked.clear()
            self._expiring.clear()
            return key
        self._revoked[session] = expires
        heapq.heappush(self._expiring, (expires, session))
        return key

    def _prune(self) -> None:
        now = time.time()
        while self._expiring and self._expiring[0][0] < now:
            _, session = heapq.heappop(self._expiring)
            self._revoked.pop(session, None)

    @property
    def revoked(self) -> int:
        return len(self._revoked)

    def set_cookie(self, response: Response, key: ApiKey, *, secure: bool) -> None:
        response.set_cookie(COOKIE, self.issue(key), max_age=self.seconds, path="/ui", httponly=True,
                            samesite="strict", secure=secure)

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/ui")


def cookie_session(scope: Scope) -> str | None:
    """The session id in the request's page cookie, unchecked (where to route it; `verify` decides)."""
    token = cookie_token(scope)
    parts = token.split(".") if token is not None else []
    return parts[2] if len(parts) == 4 else None


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
        if path == LOGOUT:
            # Needs no valid session: one that is spent, forged or absent has nothing to end, and its cookie
            # is cleared all the same (the handler revokes a valid one).
            await self.app(scope, receive, send)
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
