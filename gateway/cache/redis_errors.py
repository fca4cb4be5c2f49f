"""Redis failures said in one line that names the store without its password, as typed gateway errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, urlsplit

from redis.exceptions import RedisError

from simgate.gateway.config.store import redacted_url
from simgate.gateway.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def unreachable(url: str, exc: BaseException) -> str:
    """Why Redis at `url` cannot be used at the start, in one line without the URL's password."""
    return f"gateway.store: cannot use {_described(url, exc)}"


def unavailable(url: str, exc: RedisError) -> StoreUnavailable:
    """The error a call (or a command) gets when Redis fails while serving."""
    return StoreUnavailable(f"the recording store is unavailable: {_described(url, exc)}")


def _described(url: str, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    for secret in _secrets_of(url):
        reason = reason.replace(secret, "***")
    return f"Redis at {redacted_url(url)}: {reason}"


def _secrets_of(url: str) -> list[str]:
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
        return found + [v for k, v in parse_qsl(parts.query) if k == "password" and v]
    except ValueError:
        return []


def unavailable_as_error(method: Callable[P, T]) -> Callable[P, T]:
    """A Redis failure while serving becomes a typed gateway error naming the store (no password)."""
    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except RedisError as exc:
            raise unavailable(args[0].url, exc) from None  # type: ignore[attr-defined]
    return guarded


def async_unavailable(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """As `unavailable_as_error`, for the asyncio client's callers (whose instances carry `url`)."""
    @functools.wraps(method)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RedisError as exc:
            raise unavailable(args[0].url, exc) from None  # type: ignore[attr-defined]
    return guarded
