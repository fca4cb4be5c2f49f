"""Config model of the recording store: the embedded diskcache (default) or a shared Redis/Valkey.

Checked without importing a Redis client, so a gateway on diskcache never loads one.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

StoreBackend = Literal["diskcache", "redis"]
_REDIS_SCHEMES = ("redis", "rediss", "unix")


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: StoreBackend = Field("diskcache", description="diskcache (one machine, under gateway.cache_dir) or "
                                  "redis (shared by several gateways: recordings, sequences, rate-limit counters)")
    url: str | None = Field(None, description="redis://[user:password@]host:port/db, rediss://… or "
                            "unix:///path/redis.sock?db=N (backend redis only; ${VAR} is expanded)")
    prefix: str = Field("simgate:", min_length=1, description="prefix of every Redis key: several worlds may share "
                        "one Redis under different prefixes")

    @model_validator(mode="after")
    def _check_url(self) -> StoreConfig:
        if self.backend == "diskcache":
            if self.url is not None:
                raise ValueError("url is for backend redis; the diskcache store lives in gateway.cache_dir")
            return self
        if not self.url:
            raise ValueError("backend redis needs a url (redis://host:6379/0, rediss://… or unix:///path.sock)")
        check_redis_url(self.url)
        return self


def check_redis_url(url: str) -> None:
    """Raise ValueError naming what is wrong with a Redis URL (never repeating its password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"url {redacted_url(url)!r} is not a valid URL (bad port?)") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise ValueError(f"url must start with redis://, rediss:// or unix://, got {parts.scheme or 'no'} scheme")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// url needs the socket's path (unix:///path/to/redis.sock)")
        return
    if not parts.hostname:
        raise ValueError(f"url {redacted_url(url)!r} names no host")
    if port == 0:
        raise ValueError(f"url {redacted_url(url)!r}: port 0")
    database = parts.path.strip("/")
    if database and not database.isdigit():
        raise ValueError(f"url {redacted_url(url)!r}: the path must be a database number, got {database!r}")


def redacted_url(url: str) -> str:
    """The URL fit to show: any password replaced by ***."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    if password is not None:
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rsplit('@', 1)[1]}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "password" for name, _ in query):
        parts = parts._replace(query=urlencode([(n, "***" if n == "password" else v) for n, v in query], safe="*"))
    if not parts.netloc:  # unix:///path: urlunsplit would drop the empty authority
        return f"{parts.scheme}://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return urlunsplit(parts)
