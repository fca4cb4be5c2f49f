"""The host:port pairs a sandboxed server may reach through the egress proxy."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


class HostPort(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: str = Field(description="a lower-case name (`*.example.com` matches its subdomains) or an IP address")
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def matches(self, host: str, port: int) -> bool:
        if port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


def parse_host_port(text: str) -> HostPort:
    """`host:port`, `[v6]:port`; names are compared lower-case, IP addresses in their normal form."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"{text!r} must be 'host:port' (for example 'api.example.com:443' or '127.0.0.1:8080')")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return HostPort(host=normalize_host(host, text), port=int(port))


def normalize_host(host: str, context: str | None = None) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    lowered = host.lower().rstrip(".")
    if not _HOSTNAME.match(lowered) or len(lowered) > 253:
        raise ValueError(f"{context or host!r}: {host!r} is not a host name or an IP address")
    return lowered


class NetworkAllow(BaseModel):
    """`network: {allow: ["host:port", …]}`: no network but a proxy the gateway runs, which lets only these through."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(description="host:port pairs the server may connect to; empty: none, but every "
                             "attempt is logged (how `simgate onboard` finds out which hosts a tool needs)")

    @field_validator("allow")
    @classmethod
    def _check(cls, entries: list[str]) -> list[str]:
        return [str(parse_host_port(entry)) for entry in entries]

    def targets(self) -> list[HostPort]:
        return [parse_host_port(entry) for entry in self.allow]

    def permits(self, host: str, port: int) -> bool:
        try:
            host = normalize_host(host)
        except ValueError:
            return False
        return any(target.matches(host, port) for target in self.targets())


def network_setting(value: object) -> object:
    """The policy's `network` before validation: one precise message instead of pydantic's per-member union errors."""
    if isinstance(value, dict):
        try:
            return NetworkAllow.model_validate(value)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ValueError(f"{where}: {str(error['msg']).removeprefix('Value error, ')}") from None
    if value not in ("none", "host") and not isinstance(value, NetworkAllow):
        raise ValueError(f"network must be 'none', 'host' or {{allow: ['host:port', ...]}}, got {value!r}")
    return value
