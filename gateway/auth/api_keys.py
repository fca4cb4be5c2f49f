"""Client API keys: what each key may reach, stored hashed in one JSON file.

A key reads `sgk_<id>_<secret>`. Only `sha256(key)` is stored: the secret has 256 bits of entropy,
so a slow password hash would add nothing but latency on every request. The file is written whole
(temp file, fsync, rename, mode 0600) under an flock, so `simgate keys create` may run beside a
serving gateway, which re-reads the file when it changes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simgate.errors import SimgateError
from simgate.files import atomic_write, exclusive_lock
from simgate.gateway.config.limits import RateLimit

PREFIX = "sgk_"
# Where the CLI finds the client's API key: never on the command line, where `ps` would show it.
API_KEY_ENV = "SIMGATE_API_KEY"
_ID_BYTES = 4


class KeyFileError(SimgateError):
    """A key file that cannot be used, or a key operation that cannot be done; the message says why."""


class ApiKey(BaseModel):
    """One client's key: the servers and tools it may see and call, and its own rate limit."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    sha256: str = Field(description="hex sha256 of the whole key; the key itself is never stored")
    servers: list[str] = Field(default_factory=lambda: ["*"], description="server names or globs")
    tools: list[str] | None = Field(
        None, description="tool globs, `tool` or `server/tool`; none: every tool of its servers")
    rate_limit: RateLimit | None = Field(None, description="a bucket per (key, server, tool), replacing the configured one")
    admin: bool = Field(False, description="may use the admin API (/admin/*)")
    created_at: str

    @field_validator("servers")
    @classmethod
    def _some_server(cls, servers: list[str]) -> list[str]:
        if not servers:
            raise ValueError("a key must allow at least one server (use '*' for all)")
        return servers

    def allows_server(self, server: str) -> bool:
        return any(fnmatch.fnmatchcase(server, pattern) for pattern in self.servers)

    def allows_tool(self, server: str, tool: str) -> bool:
        if not self.allows_server(server):
            return False
        if self.tools is None:
            return True
        for pattern in self.tools:
            scoped_server, _, tool_pattern = pattern.rpartition("/")
            if scoped_server and not fnmatch.fnmatchcase(server, scoped_server):
                continue
            if fnmatch.fnmatchcase(tool, tool_pattern):
                return True
        return False


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    keys: list[ApiKey] = Field(default_factory=list)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """The key file. Reads are cached until the file changes (a stat per lookup, no parse)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[str, ApiKey] = {}

    # ------------------------------------------------------------------ reading

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _load(self) -> KeyFile:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return KeyFile()
        try:
            return KeyFile.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "(top level)"
            raise KeyFileError(f"key file {self.path} is not valid at {where}: {first['msg']}") from None

    def keys(self) -> dict[str, ApiKey]:
        """Keys by id, re-read when the file was replaced since the last look."""
        stamp = self._current_stamp()
        if stamp != self._stamp:
            self._keys = {key.id: key for key in self._load().keys} if stamp is not None else {}
            self._stamp = stamp
        return self._keys

    @property
    def enabled(self) -> bool:
        """Keys are enforced as soon as one exists."""
        return bool(self.keys())

    def verify(self, presented: str) -> ApiKey | None:
        if not presented.startswith(PREFIX):
            return None
        key_id, _, secret = presented[len(PREFIX):].partition("_")
        key = self.keys().get(key_id)
        if key is None or not secret:
            return None
        return key if hmac.compare_digest(key.sha256, digest(presented)) else None

    # ------------------------------------------------------------------ writing

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return exclusive_lock(self.path.with_name(self.path.name + ".lock"))

    def _write(self, document: KeyFile) -> None:
        atomic_write(self.path, document.model_dump_json(indent=2, exclude_none=True).encode() + b"\n", mode=0o600)

    def create(self, name: str, *, servers: list[str], tools: list[str] | None = None,
               rate_limit: RateLimit | None = None, admin: bool = False) -> tuple[ApiKey, str]:
        """A new key; returns it with the only copy of its secret."""
        with self._lock():
            document = self._load()
            taken = {key.id for key in document.keys}
            if any(key.name == name for key in document.keys):
                raise KeyFileError(f"a key named {name!r} exists already in {self.path}")
            key_id = secrets.token_hex(_ID_BYTES)
            while key_id in taken:
                key_id = secrets.token_hex(_ID_BYTES)
            presented = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            key = ApiKey(id=key_id, name=name, sha256=digest(presented), servers=servers, tools=tools,
                         rate_limit=rate_limit, admin=admin, created_at=datetime.now(UTC).isoformat(timespec="seconds"))
            document.keys.append(key)
            self._write(document)
        return key, presented

    def remove(self, id_or_name: str) -> ApiKey:
        with self._lock():
            document = self._load()
            for key in document.keys:
                if id_or_name in (key.id, key.name):
                    document.keys.remove(key)
                    self._write(document)
                    return key
        raise KeyFileError(f"no key with id or name {id_or_name!r} in {self.path}")


def auth_headers() -> dict[str, str]:
    """The `Authorization` header for the CLI's requests, from $SIMGATE_API_KEY."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}
