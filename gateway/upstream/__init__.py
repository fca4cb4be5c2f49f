"""Upstream MCP servers: long-lived, supervised, shared sessions (stdio or streamable HTTP)."""

from gateway.upstream.connection import Upstream, UpstreamState
from gateway.upstream.origin_protocol import Origin
from gateway.upstream.pool import UpstreamPool

__all__ = ["Origin", "Upstream", "UpstreamPool", "UpstreamState"]
