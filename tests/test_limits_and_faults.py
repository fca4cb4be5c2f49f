"""Rate limits, the upstream quota's bounded queue, and seeded fault injection.

Unit tests drive the real stages with real `ToolCall`s, a small executor and a fake clock, so every
wait and refill is exact; one end-to-end test runs a real gateway in front of the fixture server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from harness import fixture_server, mcp_session, running_gateway
from jsonschema import Draft202012Validator
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from simgate.gateway.config.limits import FaultConfig, RateLimit, UpstreamQuota
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import RATE_LIMITED, UPSTREAM_TIMEOUT, RateLimited, UpstreamTimeout
from simgate.gateway.pipeline.call import CallResult, Pipeline, ToolCall
from simgate.gateway.pipeline.faults import InjectFaults, malform
from simgate.gateway.pipeline.provenance import PROVENANCE_KEY, AttachProvenance
from simgate.gateway.pipeline.ratelimit import RateLimits
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.sessions import Sessions

pytestmark = pytest.mark.anyio

SUM_SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "terms": {"type": "integer"}},
              "required": ["total", "terms"]}


# ---------------------------------------------------------------------- helpers


class FakeClock:
    """Time stands still until a test advances it; sleepers wake in deadline order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        event = anyio.Event()
        self._sleepers.append((self.time + seconds, event))
        await event.wait()

    async def advance(self, seconds: float) -> None:
        target = self.time + seconds
        while due := sorted((s for s in self._sleepers if s[0] <= target + 1e-9), key=lambda s: s[0]):
            deadline, event = due[0]
            self._sleepers.remove(due[0])
            self.time = max(self.time, deadline)
            event.set()
            await anyio.wait_all_tasks_blocked()
        self.time = target
        await anyio.wait_all_tasks_blocked()


class InstantClock:
    """Sleeping moves time forward at once; for stages whose sleeps need no concurrency."""

    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds


class Upstream:
    """The executor: notes when each call arrived, answers like the fixture's tools."""

    def __init__(self, clock: FakeClock | InstantClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, call: ToolCall) -> CallResult:
        self.calls.append((call.arguments.get("id", call.tool), self.clock.now()))
        call.provenance["source"] = "live"
        if call.tool == "add":
            return {"content": [{"type": "text", "text": '{"total": 6.5, "terms": 3}'}],
                    "structuredContent": {"total": 6.5, "terms": 3}, "isError": False}
        return {"content": [{"type": "text", "text": '{"echo": "hello world"}'}], "isError": False}


def config(servers: dict[str, dict[str, Any]] | None = None, **gateway: Any) -> GatewayConfig:
    servers = servers if servers is not None else {"srv": {}}
    return GatewayConfig.model_validate({
        "gateway": gateway,
        "mcpServers": {name: {"command": "unused", **settings} for name, settings in servers.items()}})


def tool_call(tool: str = "echo", *, server: str = "srv", client: str | None = None, session: str | None = "s1",
              mode: str = "live", call_id: str | None = None, schema: dict[str, Any] | None = None) -> ToolCall:
    definition: dict[str, Any] = {"name": tool, "inputSchema": {"type": "object"}}
    if schema is not None:
        definition["outputSchema"] = schema
    return ToolCall(server=server, tool=tool, exposed_name=tool, arguments={"id": call_id} if call_id else {},
                    tool_definition=definition, session_id=session, client=client, resolved_mode=mode)


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------- config


def test_limit_configs_validate() -> None:
    assert RateLimit(rate=2.5).burst == 3 and RateLimit(rate=0.1).burst == 1
    assert UpstreamQuota(rate=5).max_queue == 100
    assert not FaultConfig().active
    for bad in ({"rate": 0}, {"rate": 1, "burst": 0}, {"rate": 1, "extra": 1}):
        with pytest.raises(ValidationError):
            RateLimit.model_validate(bad)
    with pytest.raises(ValidationError, match="must not exceed 1"):
        FaultConfig(error_rate=0.6, timeout_rate=0.5)
    with pytest.raises(ValidationError):
        FaultConfig(error_rate=1.5)
    loaded = config({"srv": {"rate_limit": {"rate": 1}, "quota": {"rate": 2, "max_queue": 4, "max_wait": 1.5},
                             "faults": {"seed": 3, "error_rate": 0.5},
                             "tool_settings": {"echo": {"rate_limit": {"rate": 5, "burst": 1},
                                                        "faults": {"latency_ms": 10}}}}},
                    rate_limit={"rate": 100})
    server = loaded.servers["srv"]
    assert server.quota is not None and server.quota.max_queue == 4
    assert server.settings_for("echo").rate_limit == RateLimit(rate=5, burst=1)
    assert loaded.gateway.rate_limit == RateLimit(rate=100, burst=100)


# ---------------------------------------------------------------------- client rate limits


async def test_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = FakeClock()
    metrics = GatewayMetrics()
    stage = RateLimits(config({"srv": {"rate_limit": {"rate": 2, "burst": 2}}}), clock=clock, metrics=metrics)
    upstream = Upstream(clock)
    pipeline = Pipeline([stage], upstream)

    await pipeline(tool_call())
    await pipeline(tool_call())
    with pytest.raises(RateLimited) as refused:
        await pipeline(tool_call())
    assert refused.value.code == RATE_LIMITED == -32006
    assert refused.value.data == {"retry_after": 0.5, "scope": "client", "server": "srv", "tool": "echo",
                                  "rate": 2.0, "burst": 2}
    await clock.advance(0.25)
    with pytest.raises(RateLimited) as still:
        await pipeline(tool_call())
    assert still.value.data["retry_after"] == 0.25
    await clock.advance(0.25)
    await pipeline(tool_call())  # exactly one token came back
    with pytest.raises(RateLimited):
        await pipeline(tool_call())
    await clock.advance(60)  # a long pause refills to the burst, not beyond
    await pipeline(tool_call())
    await pipeline(tool_call())
    with pytest.raises(RateLimited):
        await pipeline(tool_call())
    assert len(upstream.calls) == 5
    assert sample(metrics, "simgate_rate_limit_rejections_total", server="srv", reason="client_limit") == 4


async def test_buckets_are_per_client_server_and_tool() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"rate_limit": {"rate": 1, "burst": 1}},
                               "other": {"rate_limit": {"rate": 1, "burst": 1}}}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))

    await pipeline(tool_call(client="alice"))
    with pytest.raises(RateLimited):
        await pipeline(tool_call(client="alice", session="another-session"))  # the client, not the session
    await pipeline(tool_call(client="bob"))  # another client: its own bucket
    await pipeline(tool_call("add", client="alice"))  # another tool
    await pipeline(tool_call(server="other", client="alice"))  # another server
    # Without a client identity, the session is the client; without either, all share "anonymous".
    await pipeline(tool_call(session="s1"))
    await pipeline(tool_call(session="s2"))
    with pytest.raises(RateLimited):
        await pipeline(tool_call(session="s1"))
    await pipeline(tool_call(session=None))
    with pytest.raises(RateLimited):
        await pipeline(tool_call(session=None))


async def test_tool_limit_replaces_server_limit_which_replaces_the_default() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"rate_limit": {"rate": 1, "burst": 2},
                                       "tool_settings": {"add": {"rate_limit": {"rate": 1, "burst": 3}}}},
                               "plain": {}}, rate_limit={"rate": 1, "burst": 1}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))

    async def allowed(call_factory: Any) -> int:
        count = 0
        while True:
            try:
                await pipeline(call_factory())
            except RateLimited:
                return count
            count += 1

    assert await allowed(lambda: tool_call("add")) == 3
    assert await allowed(lambda: tool_call("echo")) == 2
    assert await allowed(lambda: tool_call("echo", server="plain")) == 1
    unlimited = RateLimits(config(), clock=clock)
    for _ in range(100):
        await Pipeline([unlimited], Upstream(clock))(tool_call())  # no limit configured: none applied


async def test_idle_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"rate_limit": {"rate": 10, "burst": 1}}}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))
    for index in range(2100):
        await pipeline(tool_call(client=f"client-{index}"))
        clock.time += 0.2  # every earlier bucket has refilled by the next call
    assert len(stage._buckets) < 100


# ---------------------------------------------------------------------- upstream quota


async def _start_calls(pipeline: Pipeline, calls: list[ToolCall], outcomes: dict[str, Any], tg: Any) -> None:
    """Start the calls one after another (each blocks or finishes before the next one arrives)."""

    async def run(call: ToolCall) -> None:
        try:
            outcomes[call.arguments["id"]] = await pipeline(call)
        except RateLimited as exc:
            outcomes[call.arguments["id"]] = exc

    for call in calls:
        tg.start_soon(run, call)
        await anyio.wait_all_tasks_blocked()


async def test_quota_queues_up_to_max_queue_in_order_then_refuses() -> None:
    clock = FakeClock()
    metrics = GatewayMetrics()
    stage = RateLimits(config({"srv": {"quota": {"rate": 1, "burst": 1, "max_queue": 3, "max_wait": 10}}}),
                       clock=clock, metrics=metrics)
    upstream = Upstream(clock)
    pipeline = Pipeline([stage], upstream)
    start = clock.now()
    outcomes: dict[str, Any] = {}
    # Five clients share the server's quota: one goes at once, three wait, the fifth is refused.
    calls = [tool_call(client=f"client-{n}", call_id=f"c{n}") for n in range(1, 6)]
    async with anyio.create_task_group() as tg:
        await _start_calls(pipeline, calls, outcomes, tg)
        assert upstream.calls == [("c1", start)]
        assert stage.queue_depth("srv") == 3
        assert sample(metrics, "simgate_quota_queue_depth", server="srv") == 3
        refused = outcomes["c5"]
        assert isinstance(refused, RateLimited) and refused.code == -32006
        assert refused.data["reason"] == "quota_queue_full"
        assert refused.data["queue_depth"] == 3 and refused.data["max_queue"] == 3
        assert refused.data["retry_after"] == 4.0  # the three queued calls go first
        await clock.advance(10)
        tg.cancel_scope.cancel()  # a call still waiting now would be a failure: do not hang
    # First come, first served, one per second, none waiting past max_wait.
    assert upstream.calls == [("c1", start), ("c2", start + 1), ("c3", start + 2), ("c4", start + 3)]
    assert [calls[n].provenance.get("quota_wait_ms") for n in range(4)] == [None, 1000.0, 2000.0, 3000.0]
    assert max(clock.sleeps) <= 10
    assert stage.queue_depth("srv") == 0 and sample(metrics, "simgate_quota_queue_depth", server="srv") == 0
    assert sample(metrics, "simgate_rate_limit_rejections_total", server="srv", reason="quota_queue_full") == 1
    assert sample(metrics, "simgate_quota_waited_total", server="srv") == 3


async def test_quota_refuses_at_once_a_call_that_would_wait_past_max_wait() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"quota": {"rate": 2, "burst": 2, "max_queue": 50, "max_wait": 1.2}}}),
                       clock=clock)
    upstream = Upstream(clock)
    pipeline = Pipeline([stage], upstream)
    start = clock.now()
    outcomes: dict[str, Any] = {}
    calls = [tool_call(call_id=f"c{n}") for n in range(1, 8)]
    async with anyio.create_task_group() as tg:
        await _start_calls(pipeline, calls, outcomes, tg)
        # burst 2 at once; then waits of 0.5 and 1.0 s; a wait of 1.5 s > max_wait is refused at once
        assert [call for call, _ in upstream.calls] == ["c1", "c2"]
        for refused in ("c5", "c6", "c7"):
            assert isinstance(outcomes[refused], RateLimited)
            assert outcomes[refused].data["reason"] == "quota_max_wait"
            assert outcomes[refused].data["retry_after"] == 1.5 and outcomes[refused].data["queue_depth"] == 2
        await clock.advance(5)
        tg.cancel_scope.cancel()  # a call still waiting now would be a failure: do not hang
    assert upstream.calls == [("c1", start), ("c2", start), ("c3", start + 0.5), ("c4", start + 1.0)]
    assert clock.sleeps == [0.5, 1.0]
    # Once the queue has drained, the bucket refills at its rate.
    await pipeline(tool_call(call_id="later"))
    assert upstream.calls[-1] == ("later", start + 5)


async def test_quota_with_no_queue_refuses_instead_of_waiting() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"quota": {"rate": 4, "burst": 1, "max_queue": 0}}}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))
    await pipeline(tool_call())
    with pytest.raises(RateLimited) as refused:
        await pipeline(tool_call())
    assert refused.value.data["retry_after"] == 0.25 and refused.value.data["reason"] == "quota_queue_full"
    assert clock.sleeps == []


async def test_quota_applies_only_to_calls_that_reach_the_upstream() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"quota": {"rate": 1, "burst": 1, "max_queue": 0}}}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))
    await pipeline(tool_call(mode="live"))
    for mode in ("replay", "simulated", "replay"):
        await pipeline(tool_call(mode=mode))  # answered without the upstream: the quota does not apply
    for mode in ("live", "shadow", "hybrid"):
        with pytest.raises(RateLimited):
            await pipeline(tool_call(mode=mode))


async def test_a_cancelled_waiter_gives_its_turn_back() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"quota": {"rate": 1, "burst": 1, "max_queue": 5, "max_wait": 10}}}),
                       clock=clock)
    upstream = Upstream(clock)
    pipeline = Pipeline([stage], upstream)
    start = clock.now()
    await pipeline(tool_call(call_id="first"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(pipeline, tool_call(call_id="gave-up"))
        await anyio.wait_all_tasks_blocked()
        assert stage.queue_depth("srv") == 1
        tg.cancel_scope.cancel()  # the client went away while waiting
    assert stage.queue_depth("srv") == 0
    outcomes: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        await _start_calls(pipeline, [tool_call(call_id="next")], outcomes, tg)
        await clock.advance(1)
        tg.cancel_scope.cancel()  # a call still waiting now would be a failure: do not hang
    assert upstream.calls == [("first", start), ("next", start + 1)]  # waited 1 s, not 2


async def test_client_limit_is_checked_before_the_quota() -> None:
    clock = FakeClock()
    stage = RateLimits(config({"srv": {"rate_limit": {"rate": 1, "burst": 1},
                                       "quota": {"rate": 1, "burst": 1, "max_queue": 5}}}), clock=clock)
    pipeline = Pipeline([stage], Upstream(clock))
    await pipeline(tool_call(client="a"))
    with pytest.raises(RateLimited) as refused:
        await pipeline(tool_call(client="a"))
    assert refused.value.data["scope"] == "client"
    assert stage.queue_depth("srv") == 0  # a refused call never took a place in the queue


# ---------------------------------------------------------------------- faults


async def _fault_trace(faults: dict[str, Any], calls: int = 300, *, interleave: bool = False) -> list[Any]:
    clock = InstantClock()
    stage = InjectFaults(config({"srv": {"faults": faults}}), clock=clock)
    upstream = Upstream(clock)
    trace: list[Any] = []
    for _ in range(calls):
        if interleave:  # another tool's calls draw from their own sequence
            try:
                await stage(tool_call("other"), upstream)
            except MCPError:
                pass
        call = tool_call("add", schema=SUM_SCHEMA)
        before = len(clock.sleeps)
        try:
            result = await stage(call, upstream)
            outcome: Any = ("ok", json.dumps(result, sort_keys=True))
        except MCPError as exc:
            outcome = ("error", exc.code)
        trace.append((outcome, call.provenance.get("fault"), clock.sleeps[before:]))
    return trace


async def test_seeded_fault_sequences_reproduce() -> None:
    faults = {"seed": 42, "error_rate": 0.2, "timeout_rate": 0.1, "malformed_rate": 0.2,
              "latency_jitter_ms": 40, "timeout_after_s": 0.5}
    first = await _fault_trace(faults)
    assert first == await _fault_trace(faults)
    assert first == await _fault_trace(faults, interleave=True)
    assert first != await _fault_trace({**faults, "seed": 43})
    kinds = [fault["kind"] for _, fault, _ in first]
    assert [fault["index"] for _, fault, _ in first] == list(range(300))
    # The rates hold, roughly, over 300 calls (the exact figures are the seed's).
    assert 0.12 < kinds.count("error") / 300 < 0.28
    assert 0.04 < kinds.count("timeout") / 300 < 0.16
    assert 0.12 < kinds.count("malformed") / 300 < 0.28
    assert kinds.count("latency") == 300 - kinds.count("error") - kinds.count("timeout") - kinds.count("malformed")
    assert all(0 <= fault["added_latency_ms"] <= 40 for _, fault, _ in first)


async def test_error_fault_never_reaches_the_upstream_and_shows_in_provenance() -> None:
    clock = InstantClock()
    metrics = GatewayMetrics()
    faults = InjectFaults(config({"srv": {"tool_settings": {"echo": {"faults": {
        "error_rate": 1.0, "error_code": -32050, "error_message": "injected: it broke"}}}}}),
        clock=clock, metrics=metrics)
    upstream = Upstream(clock)
    pipeline = Pipeline([AttachProvenance(Sessions()), faults], upstream)
    with pytest.raises(MCPError) as failed:
        await pipeline(tool_call("echo"))
    assert failed.value.code == -32050 and failed.value.message == "injected: it broke"
    provenance = failed.value.data[PROVENANCE_KEY]
    assert provenance["source"] == "fault"
    assert provenance["fault"] == {"kind": "error", "seed": 0, "index": 0, "code": -32050, "error_as": "jsonrpc"}
    assert upstream.calls == []
    # Another tool of the same server is untouched.
    result = await pipeline(tool_call("add"))
    assert result["structuredContent"] == {"total": 6.5, "terms": 3}
    assert "fault" not in result["_meta"][PROVENANCE_KEY] and result["_meta"][PROVENANCE_KEY]["source"] == "live"
    assert sample(metrics, "simgate_faults_injected_total", server="srv", kind="error") == 1


async def test_error_fault_as_tool_result() -> None:
    stage = InjectFaults(config({"srv": {"faults": {"error_rate": 1.0, "error_as": "tool_result",
                                                    "error_message": "quota exceeded upstream"}}}),
                         clock=InstantClock())
    call = tool_call()
    result = await stage(call, Upstream(InstantClock()))
    assert result == {"content": [{"type": "text", "text": "quota exceeded upstream"}], "isError": True}
    assert call.provenance["fault"]["kind"] == "error" and call.provenance["source"] == "fault"


async def test_latency_fault_delays_a_successful_call() -> None:
    clock = InstantClock()
    metrics = GatewayMetrics()
    stage = InjectFaults(config({"srv": {"faults": {"latency_ms": 250}}}), clock=clock, metrics=metrics)
    upstream = Upstream(clock)
    pipeline = Pipeline([AttachProvenance(Sessions()), stage], upstream)
    result = await pipeline(tool_call())
    assert clock.sleeps == [0.25] and upstream.calls == [("echo", 0.25)]  # the upstream was called after the wait
    assert result["content"][0]["text"] == '{"echo": "hello world"}'
    provenance = result["_meta"][PROVENANCE_KEY]
    assert provenance["source"] == "live"
    assert provenance["fault"] == {"kind": "latency", "seed": 0, "index": 0, "added_latency_ms": 250.0}
    assert sample(metrics, "simgate_faults_injected_total", server="srv", kind="latency") == 1


async def test_timeout_fault_hangs_then_fails_like_an_upstream_timeout() -> None:
    clock = InstantClock()
    stage = InjectFaults(config({"srv": {"call_timeout": 7, "faults": {"timeout_rate": 1.0,
                                                                       "timeout_after_s": 0.5}}}), clock=clock)
    upstream = Upstream(clock)
    pipeline = Pipeline([AttachProvenance(Sessions()), stage], upstream)
    with pytest.raises(UpstreamTimeout) as timed_out:
        await pipeline(tool_call())
    assert timed_out.value.code == UPSTREAM_TIMEOUT == -32002
    assert timed_out.value.message == "upstream server 'srv' did not answer tools/call within 7s"
    assert clock.sleeps == [0.5] and upstream.calls == []
    assert timed_out.value.data[PROVENANCE_KEY]["fault"] == {"kind": "timeout", "seed": 0, "index": 0, "hung_s": 0.5}
    # Without timeout_after_s the call hangs for the server's whole call_timeout.
    default = InjectFaults(config({"srv": {"call_timeout": 7, "faults": {"timeout_rate": 1.0}}}), clock=clock)
    with pytest.raises(UpstreamTimeout):
        await default(tool_call(), upstream)
    assert clock.sleeps == [0.5, 7.0]


async def test_malformed_fault_breaks_the_output_schema() -> None:
    clock = InstantClock()
    stage = InjectFaults(config({"srv": {"faults": {"malformed_rate": 1.0}}}), clock=clock)
    pipeline = Pipeline([AttachProvenance(Sessions()), stage], Upstream(clock))
    result = await pipeline(tool_call("add", schema=SUM_SCHEMA))
    broken = result["structuredContent"]
    assert broken == {"total": "simgate-malformed", "terms": 3}
    assert not Draft202012Validator(SUM_SCHEMA).is_valid(broken)
    assert json.loads(result["content"][0]["text"]) == broken
    types.CallToolResult.model_validate(result)  # still a well-formed CallToolResult: it reaches the client
    assert result["_meta"][PROVENANCE_KEY]["fault"] == {"kind": "malformed", "seed": 0, "index": 0,
                                                        "variant": "schema_violation"}
    # Without an output schema the text is cut off half-way.
    text_result = await pipeline(tool_call("echo"))
    assert text_result["content"] == [{"type": "text", "text": '{"echo": "h'}]
    assert text_result["_meta"][PROVENANCE_KEY]["fault"]["variant"] == "truncated"


def test_malformed_variants() -> None:
    result = {"content": [{"type": "text", "text": "{}"}], "structuredContent": {"a": 1}, "isError": False}
    assert malform(result, {"type": "object"})[1] == "missing_structured_content"
    assert "structuredContent" not in malform(result, {"type": "object"})[0]
    closed = {"type": "object", "properties": {"a": {}}, "additionalProperties": False}
    assert malform(result, closed) == ({"content": [{"type": "text", "text": '{"a": 1, "simgate_malformed": true}'}],
                                        "structuredContent": {"a": 1, "simgate_malformed": True}, "isError": False},
                                       "schema_violation")
    required = {"type": "object", "properties": {"a": {}}, "required": ["a"]}
    assert malform(result, required)[0]["structuredContent"] == {}


async def test_faults_are_off_unless_configured_and_a_tool_setting_replaces_the_servers() -> None:
    clock = InstantClock()
    stage = InjectFaults(config({"srv": {"faults": {"error_rate": 1.0},
                                         "tool_settings": {"echo": {"faults": {}}}}, "calm": {}}), clock=clock)
    upstream = Upstream(clock)
    for call in (tool_call("echo"), tool_call("echo", server="calm")):
        assert (await stage(call, upstream))["isError"] is False
        assert "fault" not in call.provenance
    with pytest.raises(MCPError):
        await stage(tool_call("add"), upstream)
    assert clock.sleeps == []


# ---------------------------------------------------------------------- end to end


async def test_rate_limit_and_faults_through_a_real_gateway(tmp_path: Path) -> None:
    gateway_config = {"mcpServers": {"bad": {**fixture_server("misbehaving_server.py"), "tool_settings": {
        "echo": {"rate_limit": {"rate": 0.05, "burst": 2}},
        "fail": {"faults": {"error_rate": 1.0, "error_code": -32050, "error_message": "injected: upstream exploded"}},
        "add": {"faults": {"malformed_rate": 1.0, "seed": 7}},
    }}, "metered": {**fixture_server("misbehaving_server.py"),
                    "quota": {"rate": 1, "burst": 1, "max_queue": 1, "max_wait": 5}}}}
    with running_gateway(gateway_config, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("bad")) as session:
            assert (await session.call_tool("echo", {"text": "one"})).is_error is False
            assert (await session.call_tool("echo", {"text": "two"})).is_error is False
            with pytest.raises(MCPError) as limited:
                await session.call_tool("echo", {"text": "three"})
            assert limited.value.code == -32006
            assert 19 < limited.value.data["retry_after"] <= 20  # one token per 20 s
            assert limited.value.data["scope"] == "client" and limited.value.data["tool"] == "echo"

            with pytest.raises(MCPError) as injected:
                await session.call_tool("fail", {"reason": "never reached"})
            assert injected.value.code == -32050 and injected.value.message == "injected: upstream exploded"
            assert injected.value.data[PROVENANCE_KEY]["fault"]["kind"] == "error"
            counted = await session.call_tool("counter", {})  # another tool of the same server works
            assert counted.is_error is False and counted.content[0].text == "1"  # the faulted call never arrived

            with pytest.raises(RuntimeError, match="Invalid structured content returned by tool add"):
                await session.call_tool("add", {"numbers": [1, 2]})  # the SDK client notices the malformed result
        async with mcp_session(gateway.mcp_url("bad")) as other_client:
            assert (await other_client.call_tool("echo", {"text": "mine"})).is_error is False  # its own bucket
        async with mcp_session(gateway.mcp_url("metered")) as session:
            # The upstream quota (1/s, burst 1, one waiting place): of three calls at once, one goes,
            # one waits its turn (~1 s) and one is refused at once with the queue depth.
            outcomes: list[Any] = []

            async def timed_echo(text: str) -> None:
                started = anyio.current_time()
                try:
                    await session.call_tool("echo", {"text": text})
                    outcomes.append(("ok", anyio.current_time() - started))
                except MCPError as exc:
                    outcomes.append(("refused", exc))

            async with anyio.create_task_group() as tg:
                for text in ("a", "b", "c"):
                    tg.start_soon(timed_echo, text)
            oks = sorted(elapsed for kind, elapsed in outcomes if kind == "ok")
            refused = [exc for kind, exc in outcomes if kind == "refused"]
            assert len(oks) == 2 and len(refused) == 1 and oks[1] >= 0.8
            assert refused[0].code == -32006 and refused[0].data["reason"] == "quota_queue_full"
            assert refused[0].data["queue_depth"] == 1 and 1.0 < refused[0].data["retry_after"] <= 2.0
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(gateway.url + "/metrics")).text
    assert re.search(r'simgate_rate_limit_rejections_total\{reason="client_limit",server="bad"\} 1\.0', metrics)
    assert re.search(r'simgate_faults_injected_total\{kind="error",server="bad"\} 1\.0', metrics)
    assert re.search(r'simgate_faults_injected_total\{kind="malformed",server="bad"\} 1\.0', metrics)
    assert re.search(r'simgate_rate_limit_rejections_total\{reason="quota_queue_full",server="metered"\} 1\.0', metrics)
    assert re.search(r'simgate_quota_queue_depth\{server="metered"\} 0\.0', metrics)
    assert re.search(r'simgate_quota_waited_total\{server="metered"\} 1\.0', metrics)
    assert "simgate_tool_calls_total" in metrics and 'outcome="rpc_error_32006"' in metrics
