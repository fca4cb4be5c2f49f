"""Upstream MCP servers: long-lived, supervised, shared sessions (stdio or streamable HTTP)."""

from simgate.gateway.upstream.connection import Upstream, UpstreamState
from simgate.gateway.upstream.origin_protocol import Origin
from simgate.gateway.upstream.pool import UpstreamPool

__all__ = ["Origin", "Upstream", "UpstreamPool", "UpstreamState"]
