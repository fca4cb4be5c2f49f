"""Secrets for a running gateway: resolve `vault:NAME` references when the upstreams are built, feed
the redactor, and restart an upstream whose secrets changed in the vault.

Only a config that refers to the vault opens it; the gateway never creates a vault or a key.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio

from simgate.gateway.config.models import GatewayConfig, ServerConfig
from simgate.gateway.errors import ConfigError
from simgate.gateway.pipeline.redact import Redactor
from simgate.gateway.vault import refs
from simgate.gateway.vault.store import Vault, VaultError

logger = logging.getLogger("simgate.vault")

RESTART_REASON = "its vault secrets changed"


class MissingSecret(ConfigError):
    """A server refers to a secret the vault does not hold (the message names server, field and secret)."""


class GatewaySecrets:
    def __init__(self, config: GatewayConfig, redactor: Redactor) -> None:
        self.redactor = redactor
        self.interval = config.gateway.vault_check_interval
        self.servers: dict[str, ServerConfig] = {
            name: server for name, server in config.active_servers.items() if any(refs.references(server))}
        self.vault = Vault(config.gateway.vault_file, config.gateway.vault_key_file)
        self._stamp: tuple[Any, ...] | None = None

    def resolve(self) -> dict[str, ServerConfig]:
        """The servers that refer to secrets, with the values in place; raises `ConfigError` when one is missing."""
        if not self.servers:
            return {}
        self._stamp = self.vault.stamp()
        values = self._load()
        return {name: resolve_server(name, server, values, self.vault.path) for name, server in self.servers.items()}

    def _load(self) -> dict[str, str]:
        wanted = sorted({name for server in self.servers.values() for _, _, name in refs.references(server)})
        if not self.vault.exists():
            first = next(iter(self.servers))
            raise MissingSecret(f"server {first!r} refers to vault secrets ({', '.join(wanted)}) but the vault "
                                f"{self.vault.path} does not exist (create it with `simgate vault set NAME`)")
        try:
            values = self.vault.read_all()
            key = self.vault.key()
        except VaultError as exc:
            raise ConfigError(f"servers {', '.join(sorted(self.servers))} refer to vault secrets, but the vault "
                              f"cannot be opened: {exc}") from None
        # Every value the vault holds is redacted, and the key too, should it ever be echoed.
        self.redactor.update({**values, "vault-key": key.encoded()})
        return values

    async def watch(self, upstreams: dict[str, Any]) -> None:
        """Every `interval` seconds: when the vault (or its key) was replaced, re-resolve, and restart
        the upstreams whose env or headers changed. A broken vault or a missing secret is logged and
        the running upstreams are kept as they are."""
        if not self.servers:
            return
        while True:
            await anyio.sleep(self.interval)
            stamp = self.vault.stamp()
            if stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                values = await anyio.to_thread.run_sync(self._load)
            except ConfigError as exc:
                logger.error("vault changed but cannot be used; upstreams keep their secrets: %s", exc)
                continue
            for name, server in self.servers.items():
                upstream = upstreams.get(name)
                if upstream is None:
                    continue
                try:
                    resolved = resolve_server(name, server, values, self.vault.path)
                except ConfigError as exc:
                    logger.error("vault changed; upstream %s keeps its secrets: %s", name, exc)
                    continue
                if resolved.env != upstream.config.env or resolved.headers != upstream.config.headers:
                    upstream.config = resolved
                    upstream.restart(RESTART_REASON)
                    logger.info("upstream %s: %s; restarting it", name, RESTART_REASON)


def resolve_server(name: str, server: ServerConfig, values: dict[str, str], vault_path: Path) -> ServerConfig:
    def resolved(field: str, mapping: dict[str, str]) -> dict[str, str]:
        out = {}
        for key, value in mapping.items():
            def lookup(secret: str, key: str = key) -> str:
                if secret not in values:
                    raise MissingSecret(f"server {name!r}: {field}.{key} refers to vault secret {secret!r}, which "
                                        f"is not in the vault {vault_path} (add it with `simgate vault set {secret}`)")
                return values[secret]
            out[key] = refs.substitute(value, lookup)
            if field == "headers" and out[key] != value and not _header_safe(out[key]):
                raise ConfigError(f"server {name!r}: headers.{key}: a vault secret it refers to cannot be sent in an "
                                  "HTTP header (only printable ASCII, no line breaks)")
        return out

    copy = server.model_copy(update={"env": resolved("env", server.env), "headers": resolved("headers", server.headers)})
    copy.secret_env = frozenset(key for key, value in server.env.items() if refs.names_in(value))
    return copy


def _header_safe(value: str) -> bool:
    return value.isascii() and all(char == "\t" or " " <= char <= "~" for char in value)


def default_redactor(vault_path: str | Path | None = None, key_file: str | Path | None = None) -> Redactor | None:
    """A redactor of the secrets in a vault (default `.simgate/vault.json`), for tools that write files
    outside a gateway (cassette export); None when there is no vault or no key to open it with."""
    vault = Vault(vault_path or ".simgate/vault.json", key_file)
    if not vault.exists():
        return None
    try:
        values = vault.read_all()
    except VaultError as exc:
        logger.warning("cannot open the vault to redact with (recordings are redacted when written): %s", exc)
        return None
    return Redactor(values) if values else None
