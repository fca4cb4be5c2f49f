"""Prometheus metrics of one gateway, in a registry of its own (no process-global state)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from simgate.gateway.upstream.connection import UpstreamState
from simgate.gateway.upstream.pool import UpstreamPool

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("simgate_tool_calls", "tools/call requests by server, tool and outcome",
                             ["server", "tool", "outcome"], registry=self.registry)
        self.latency = Histogram("simgate_tool_call_seconds", "tools/call latency through the gateway",
                                 ["server"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.sessions_opened = Counter("simgate_downstream_sessions_opened", "client sessions seen",
                                       ["endpoint"], registry=self.registry)
        self.rate_limited = Counter("simgate_rate_limit_rejections", "calls refused by a rate limit or upstream "
                                    "quota, by server and reason (client_limit, quota_queue_full, quota_max_wait)",
                                    ["server", "reason"], registry=self.registry)
        self.quota_queue_depth = Gauge("simgate_quota_queue_depth", "calls waiting for the server's upstream quota",
                                       ["server"], registry=self.registry)
        self.quota_waited = Counter("simgate_quota_waited", "calls that waited for the upstream quota, by server",
                                    ["server"], registry=self.registry)
        self.faults_injected = Counter("simgate_faults_injected", "injected faults by server and kind "
                                       "(error, timeout, malformed, latency)", ["server", "kind"],
                                       registry=self.registry)

    def label_replica(self, index: int, count: int) -> None:
        """Which replica's registry this is (each replica of `serve --workers` has its own)."""
        Gauge("simgate_replica", "1 on the replica that answered this scrape (index of count)", ["replica", "of"],
              registry=self.registry).labels(str(index), str(count)).set(1)

    def watch_pool(self, pool: UpstreamPool, live_sessions: dict[str, int]) -> None:
        self.registry.register(_PoolCollector(pool, live_sessions))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """Reads upstream state at scrape time instead of mirroring it on every change."""

    def __init__(self, pool: UpstreamPool, live_sessions: dict[str, int]) -> None:
        self._pool = pool
        self._live_sessions = live_sessions

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("simgate_upstream_up", "1 when the upstream session is ready", labels=["server"])
        restarts = GaugeMetricFamily("simgate_upstream_restarts", "restarts of the upstream since the gateway "
                                     "started", labels=["server"])
        tools = GaugeMetricFamily("simgate_upstream_tools", "tools the upstream exposes", labels=["server"])
        egress = CounterMetricFamily("simgate_egress_decisions", "requests of sandboxed servers through the network-"
                                     "allowlist proxy, by server and decision", labels=["server", "decision"])
        for name, upstream in self._pool.upstreams.items():
            up.add_metric([name], 1.0 if upstream.state == UpstreamState.READY else 0.0)
            restarts.add_metric([name], float(upstream.restarts))
            tools.add_metric([name], float(len(upstream.tools)))
            for decision, count in sorted(upstream.egress_decisions.items()):
                egress.add_metric([name, decision], float(count))
        sessions = GaugeMetricFamily("simgate_downstream_sessions", "live client sessions", labels=["endpoint"])
        for endpoint, count in self._live_sessions.items():
            sessions.add_metric([endpoint], float(count))
        return [up, restarts, tools, sessions, egress]
