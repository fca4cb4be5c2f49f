"""Config models: a superset of the common `{"mcpServers": {...}}` client config.

A client config is accepted unchanged (`command/args/env/cwd` or `url/headers/type` per server);
simgate adds per-server timeouts, `enabled`, tool allow/deny lists and a `gateway` section.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, PrivateAttr, model_validator

from simgate.gateway.config.execution import Mode, RecordMode, Source
from simgate.gateway.config.exposure import check_sandboxed
from simgate.gateway.config.limits import FaultConfig, RateLimit, UpstreamQuota
from simgate.gateway.config.store import StoreConfig
from simgate.gateway.vault import refs as vault_refs
from simgate.sandboxes.install import SpecError, install_request
from simgate.sandboxes.policy import SandboxPolicy
from simgate.simulators.config import SimulatorConfig

Transport = Literal["stdio", "http"]
# Results with images run to megabytes; one of hundreds of MB is a mistake that must not take the gateway's memory.
DEFAULT_MAX_RESULT_BYTES = 32 * 1024 * 1024

# Spellings of `type` found in client configs (Claude Desktop, Cursor, VS Code, Cline...).
_HTTP_TYPES = {"http", "streamable-http", "streamablehttp", "streamable_http"}
_STDIO_TYPES = {"stdio"}


class ToolFilter(BaseModel):
    """Which upstream tools are exposed. Glob patterns; deny wins over allow."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)

    def permits(self, tool: str) -> bool:
        if any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.deny):
            return False
        return self.allow is None or any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.allow)


class ToolSettings(BaseModel):
    """Per-tool execution settings; anything unset falls back to the server's."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = None
    record: RecordMode | None = None
    cacheable: bool | None = Field(None, description="replay by key (default: readOnlyHint or idempotentHint)")
    ignore_args: list[str] = Field(default_factory=list, description="arguments left out of the cache key")
    deterministic: bool = Field(False, description="the same arguments always get the same answer: a sequentially "
                                "replayed call past the end of its recorded sequence repeats its last recording")
    ttl: PositiveFloat | None = Field(None, description="seconds a recording stays fresh")
    rate_limit: RateLimit | None = Field(None, description="per (client, tool) bucket; replaces the server's")
    faults: FaultConfig | None = Field(None, description="fault injection for this tool; replaces the server's")


class ServerConfig(BaseModel):
    """One upstream MCP server."""

    # Client configs carry keys simgate has no use for (`disabled`, `autoApprove`, `alwaysAllow`...);
    # they are kept, not rejected, so such a config is accepted as it is.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    transport: Transport | None = None
    type: str | None = None
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    package: str | None = Field(None, description="install this instead of running a command: 'pypi:NAME==VER' "
                                "or 'npm:NAME@VER'")
    constraints: list[str] = Field(default_factory=list, description="extra requirements installed with a pypi "
                                   "package, e.g. 'mcp<2'")
    entry: str | None = Field(None, description="the package's console script (pypi) or bin (npm) to run")
    install: Literal["auto", "never"] = Field("auto", description="auto: `package` and uvx/npx commands are "
                                              "installed once and run offline; never: run the command as it is")

    description: str | None = None
    enabled: bool = True
    disabled: bool = False
    call_timeout: PositiveFloat = Field(60.0, description="seconds a tools/call may take upstream")
    startup_timeout: PositiveFloat = Field(60.0, description="seconds to start and initialize the upstream")
    http_grace: PositiveFloat = Field(15.0, description="seconds a stdio server whose stderr announced an HTTP "
                                      "listener gets to answer the handshake anyway; then its start fails")
    health_interval: PositiveFloat = Field(30.0, description="seconds between liveness pings")
    ping_timeout: PositiveFloat = Field(10.0, description="seconds a liveness ping may take")
    max_restart_backoff: PositiveFloat = Field(30.0, description="cap of the restart backoff, seconds")
    tools: ToolFilter = Field(default_factory=ToolFilter)
    mode: Mode | None = None
    record: RecordMode | None = None
    ttl: PositiveFloat | None = Field(None, description="seconds a recording of this server stays fresh")
    tool_settings: dict[str, ToolSettings] = Field(default_factory=dict)
    sandbox: SandboxPolicy | None = Field(None, description="where and how a stdio server runs (default: as is)")
    rate_limit: RateLimit | None = Field(None, description="per (client, tool) bucket for this server's tools")
    quota: UpstreamQuota | None = Field(None, description="calls/s this upstream may receive from all clients")
    faults: FaultConfig | None = Field(None, description="fault injection for this server's tools; off by default")
    max_result_bytes: PositiveInt | None = Field(
        None, description="bytes one message from this server may have (default: the gateway's max_result_bytes)")
    validate_arguments: bool = Field(
        True, description="check a call's arguments against the tool's inputSchema before it goes upstream; false: "
        "the server judges them (onboarding probes that way, to see how a server refuses invalid input)")

    # Names of `env` entries whose values came from the vault (set when secrets are resolved): the
    # server gets them, its package's install never does.
    _secret_env: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @property
    def secret_env(self) -> frozenset[str]:
        return self._secret_env

    @secret_env.setter
    def secret_env(self, names: frozenset[str]) -> None:
        self._secret_env = names

    def settings_for(self, tool: str) -> ToolSettings:
        return self.tool_settings.get(tool) or ToolSettings()

    @model_validator(mode="after")
    def _resolve_transport(self) -> ServerConfig:
        if self.transport is None:
            kind = (self.type or "").lower()
            if kind in _HTTP_TYPES:
                self.transport = "http"
            elif kind in _STDIO_TYPES:
                self.transport = "stdio"
            elif kind == "sse":
                raise ValueError("the legacy SSE transport is not supported; use streamable HTTP ('type': 'http')")
            elif kind:
                raise ValueError(f"unknown type {self.type!r}; expected 'stdio' or 'http'")
            elif self.command and self.url:
                raise ValueError("give either 'command' (stdio) or 'url' (http), not both")
            elif self.command or self.package:
                self.transport = "stdio"
            elif self.url:
                self.transport = "http"
            else:
                raise ValueError("needs 'command' (a stdio server) or 'url' (a streamable-HTTP server)")
        if self.transport == "stdio" and not (self.command or self.package):
            raise ValueError("a stdio server needs 'command' or 'package'")
        if self.package is not None and (self.command or self.url or self.transport != "stdio"):
            raise ValueError("give either 'package' (installed, then run) or 'command'/'url', not both")
        if self.install == "auto":
            try:
                install_request(command=self.command, args=self.args, package=self.package,
                                constraints=self.constraints, entry=self.entry)
            except SpecError as exc:
                hint = "" if self.package else " (or set install: never to run the command as it is)"
                raise ValueError(f"{exc}{hint}") from None
        elif self.package is not None:
            raise ValueError("'package' needs install: auto")
        for field in vault_refs.FIELDS:  # `vault:NAME` values; resolved when the gateway starts
            vault_refs.check(getattr(self, field), field)
        if self.transport == "http":
            if not self.url:
                raise ValueError("an http server needs 'url'")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self

    @property
    def active(self) -> bool:
        return self.enabled and not self.disabled


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8808
    state_dir: str = Field(".simgate", description="where per-server HOME/TMPDIR/work dirs and logs live")
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_result_bytes: PositiveInt = Field(
        DEFAULT_MAX_RESULT_BYTES, description="bytes one message from an upstream may have (a stdio line, an HTTP "
        "body or SSE event); a larger one is dropped as it is read and its call fails with -32008")
    stderr_log_bytes: PositiveInt = Field(
        10 * 1024 * 1024, description="size at which a server's stderr.log is rotated to stderr.log.1")
    stderr_log_backups: Annotated[int, Field(ge=1, le=20)] = Field(
        1, description="rotated stderr logs kept per server (stderr.log.1, .2 ...)")
    header_timeout: PositiveFloat = Field(
        10.0, description="seconds a client has to send a request's headers (from connecting, or from the request's "
        "first byte on a kept-alive connection); else its connection is closed")
    body_timeout: PositiveFloat = Field(
        30.0, description="seconds a client has to send a request's whole body, once its headers are in (else 408)")
    max_pending_body_bytes: PositiveInt = Field(
        64 * 1024 * 1024, description="bytes that request bodies still arriving may hold together; a request that "
        "would go over is answered 503 (one-piece bodies, as ordinary MCP requests, never count)")
    workers: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="gateway processes (replicas) behind the one address; each runs its own upstream servers, "
        "and a handshake-era session is always answered by the replica that holds it (`serve --workers`)")
    max_connections: PositiveInt = Field(
        256, description="client connections (and requests) served at once; more are answered 503 at once")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    name: str = "simgate"
    mode: Mode = Field(Mode.LIVE, description="the default execution mode")
    record: RecordMode = Field(RecordMode.NONE, description="which live answers are written to the cache")
    hybrid_order: list[Source] = Field(default_factory=lambda: [Source.CACHE, Source.LIVE, Source.SIMULATOR])
    cache_dir: str | None = Field(None, description="the recording store (default: STATE_DIR/cache)")
    store: StoreConfig = Field(default_factory=StoreConfig, description="where recordings live: diskcache under "
                               "cache_dir (default), or a Redis shared by several gateways")
    simulator: SimulatorConfig | None = Field(None, description="answers `simulated` calls; none by default")
    rate_limit: RateLimit | None = Field(None, description="default bucket per (client, server, tool); none by default")
    vault_path: str | None = Field(None, description="the encrypted secrets file (default: STATE_DIR/vault.json)")
    vault_key_file: str | None = Field(None, description="the vault's key file (default: vault.key beside the vault)")
    vault_check_interval: PositiveFloat = Field(2.0, description="seconds between checks for changed vault secrets")
    ready_when: Literal["all", "any"] | list[str] = Field(
        "all", description="what /readyz waits for: all servers, any one, or the servers named")
    keys_path: str | None = Field(None, description="client API keys (default: STATE_DIR/keys.json); "
                                  "with any key in it, every client must present one")
    data_dirs: list[str] = Field(default_factory=list, description="directories whose fidelity reports and "
                                 "trajectory files the page (/ui) may open, besides STATE_DIR/runs and "
                                 "STATE_DIR/reports; nothing outside them")
    fast_paths: bool = Field(True, description="answer plain tool calls without the SDK's per-request machinery, "
                             "downstream (one JSON body) and upstream (raw requests); false: the SDK all the way "
                             "(the answers are the same either way)")

    @model_validator(mode="after")
    def _check_order(self) -> GatewaySettings:
        if not self.hybrid_order or len(set(self.hybrid_order)) != len(self.hybrid_order):
            raise ValueError(f"hybrid_order must list distinct sources among {', '.join(Source)}")
        return self

    @property
    def cache_path(self) -> str:
        return self.cache_dir or f"{self.state_dir}/cache"

    @property
    def vault_file(self) -> str:
        return self.vault_path or f"{self.state_dir}/vault.json"

    @property
    def keys_file(self) -> str:
        return self.keys_path or f"{self.state_dir}/keys.json"


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    servers: dict[str, ServerConfig] = Field(default_factory=dict, alias="mcpServers")

    @model_validator(mode="after")
    def _check_names(self) -> GatewayConfig:
        for name in self.servers:
            if not name or name != name.strip() or "/" in name:
                raise ValueError(f"server name {name!r} must be non-empty, without '/' or surrounding spaces")
        if isinstance(self.gateway.ready_when, list):
            unknown = [name for name in self.gateway.ready_when if name not in self.servers]
            if unknown:
                raise ValueError(f"gateway.ready_when names no server {unknown[0]!r} (servers: "
                                 f"{', '.join(self.servers)})")
        # A sandbox that would show the gateway's own files (vault, keys, store, state) is refused now.
        check_sandboxed(self.gateway, self.servers)
        return self

    def record_mode(self, server: str, tool: str) -> RecordMode:
        """Which live answers of this tool are recorded: the tool's setting, else the server's, else the gateway's."""
        config = self.servers.get(server)
        if config is not None:
            if (tool_record := config.settings_for(tool).record) is not None:
                return tool_record
            if config.record is not None:
                return config.record
        return self.gateway.record

    @property
    def active_servers(self) -> dict[str, ServerConfig]:
        return {name: server for name, server in self.servers.items() if server.active}
