"""A server's sandbox policy: where it runs, what it sees, what it may use."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from simgate.sandboxes.egress.allowlist import NetworkAllow, network_setting

# Passed on from the gateway's environment: locale, and what a server needs to reach a registry or
# an API through this machine's proxy and certificate authorities (uvx/npx fetch packages at start).
DEFAULT_ENV_ALLOW = (
    "PATH", "LANG", "LC_ALL", "TERM", "TZ",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "PIP_CERT",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL",
    "npm_config_registry", "NPM_CONFIG_REGISTRY",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    memory_mb: PositiveInt | None = Field(None, description="address space (RLIMIT_AS) and, where the kernel "
                                          "allows, the memory cgroup")
    cpu_seconds: PositiveInt | None = Field(None, description="CPU time (RLIMIT_CPU)")
    open_files: PositiveInt | None = Field(None, description="open file descriptors (RLIMIT_NOFILE)")
    processes: PositiveInt | None = Field(None, description="processes and threads (the pids cgroup)")
    cpus: PositiveFloat | None = Field(None, description="CPU share in cores (docker: nano_cpus; default 1)")
    disk_mb: PositiveInt | None = Field(None, description="size cap of each directory it writes to: /tmp, "
                                        "TMPDIR and HOME become private tmpfs of this size, emptied at each start "
                                        "(docker: /tmp is 256 MB when unset); its work dir an ext4 image of this "
                                        "size where the gateway runs as root (else watched, like read_write paths: "
                                        "past the cap the server is stopped, see sandboxes/diskcap.py)")


class SandboxPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["none", "bwrap", "docker"] = "none"
    network: Annotated[Literal["none", "host"] | NetworkAllow, BeforeValidator(network_setting)] = Field(
        "none", description="none: loopback of its own only; host: the host's network; {allow: [host:port, ...]}: "
        "only those, through a proxy the gateway runs")
    read_only: list[str] = Field(default_factory=list, description="extra paths mounted read-only")
    read_write: list[str] = Field(default_factory=list, description="extra paths mounted read-write")
    env_allow: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOW),
                                 description="variables passed on from the gateway's environment")
    limits: Limits = Field(default_factory=Limits)
    wall_clock: PositiveFloat | None = Field(None, description="seconds the server may live before a restart")
    docker_host: str | None = Field(None, description="docker: the engine (default: DOCKER_HOST, else the "
                                    "local socket)")
    image: str | None = Field(None, description="docker: an image to run the server in instead of the one built "
                              "for its Python or Node runtime")

    @model_validator(mode="after")
    def _allow_needs_isolation(self) -> SandboxPolicy:
        if isinstance(self.network, NetworkAllow) and self.backend == "none":
            raise ValueError("network.allow needs a sandbox backend that cuts the network off (backend: bwrap or "
                             "docker); with backend none the server could bypass the proxy")
        return self
