"""Several gateways on one Redis: one recorded world, shared sequences, atomic writes, `once` decided
once for the cluster, rate limits that hold for the cluster, and cassettes that move between the
diskcache and Redis stores unchanged. A real private redis-server (tests/redis_server.py), real
gateway processes and real fixture servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from harness import REPO_ROOT, GatewayProcess, fixture_server, free_port, mcp_session, provenance, running_gateway
from mcp import Client
from mcp.shared.exceptions import MCPError
from redis_server import RedisServer, private_redis

from simgate.gateway.cache.cassette import CassetteError, apply_cassette, check_cassette, write_cassette
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.redis_store import RedisStore

pytestmark = pytest.mark.anyio

PREFIX = "cluster:"
MODERN = "2026-07-28"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def _store(server: RedisServer, prefix: str = PREFIX) -> RedisStore:
    return RedisStore.connect(server.url, prefix)


def _cluster_config(server: RedisServer) -> dict[str, Any]:
    fx = fixture_server("misbehaving_server.py")
    return {
        "gateway": {"record": "all", "store": {"backend": "redis", "url": server.url, "prefix": PREFIX}},
        "mcpServers": {
            "fx": fx,                                                   # recorded, then replayed
            "w": fx,                                                    # the concurrent writers
            "once": {**fx, "record": "once"},                           # nothing of it recorded before
            "old": {**fx, "record": "once"},                            # recorded before this run
            "limited": {**fx, "record": "none", "rate_limit": {"rate": 20, "burst": 4}},
            "quota": {**fx, "record": "none", "quota": {"rate": 10, "burst": 1, "max_queue": 100, "max_wait": 30}},
        },
    }


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, ...]]:
    """Two gateway processes (own config file, port and state dir) on one Redis."""
    work = tmp_path_factory.mktemp("cluster")
    store = _store(redis_server)
    try:  # `old` was recorded by an earlier run
        store.put(Recording(key="0" * 64, server="old", tool="echo", tool_fingerprint="f", arguments={"text": "x"},
                            result={"content": [{"type": "text", "text": "x"}], "isError": False}, latency_ms=1.0,
                            recorded_at="2026-01-01T00:00:00.000+00:00"), replace=False)
    finally:
        store.close()
    with ExitStack() as stack:
        a = stack.enter_context(running_gateway(_cluster_config(redis_server), work / "a"))
        b = stack.enter_context(running_gateway(_cluster_config(redis_server), work / "b"))
        yield a, b


def _text(result: Any) -> str:
    return str(result.content[0].text)


def _recordings(server: RedisServer, gateway_server: str, tool: str, prefix: str = PREFIX) -> list[Recording]:
    store = _store(server, prefix)
    try:
        return [r for key in store.tool_keys(gateway_server, tool) for r in store.get(key)]
    finally:
        store.close()


async def _sessionless_calls(urls: list[str], session: str, tool: str, arguments: dict[str, Any],
                             count: int) -> list[Any]:
    """One sessionless (2026-07-28) run named `session`, its calls sent to each URL in turn."""
    clients = [Client(url, mode=MODERN) for url in urls]
    results = []
    async with clients[0], clients[1]:
        assert all(client.protocol_version == MODERN for client in clients)
        for index in range(count):
            results.append(await clients[index % 2].call_tool(tool, arguments, meta={"simgate/session": session}))
    return results


async def test_a_session_recorded_through_one_gateway_replays_through_the_other(
        cluster: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    a, b = cluster
    # Recorded through A: a handshake-era session (its connection pinned to A), sequential `counter`.
    async with mcp_session(a.mcp_url("fx"), headers={"X-Simgate-Session": "S"}) as session:
        recorded_s = [_text(await session.call_tool("counter", {})) for _ in range(3)]
        assert _text(await session.call_tool("echo", {"text": "through A"})) == "through A"
    # A sessionless run whose calls alternate between A and B: its positions are the cluster's.
    recorded_u = await _sessionless_calls([a.mcp_url(), b.mcp_url()], "U", "fx__counter", {}, 4)
    assert all(provenance(r)["recorded"] for r in recorded_u)
    assert [provenance(r)["cache_key"] for r in recorded_u] == [provenance(recorded_u[0])["cache_key"]] * 4
    u = [r for r in _recordings(redis_server, "fx", "counter") if r.episode == "U"]
    assert sorted(r.position for r in u) == [0, 1, 2, 3]

    for gateway in (a, b):
        assert httpx.put(gateway.url + "/admin/modes", json={"mode": "replay", "server": "fx"}).status_code == 200
    # Replayed through B, from a fresh connection naming S: the same answers, in order, from the store.
    async with mcp_session(b.mcp_url("fx"), headers={"X-Simgate-Session": "S"}) as session:
        replayed = [await session.call_tool("counter", {}) for _ in range(3)]
        assert [_text(r) for r in replayed] == recorded_s
        assert all(provenance(r)["source"] == "cache" for r in replayed)
        assert _text(await session.call_tool("echo", {"text": "through A"})) == "through A"
        with pytest.raises(MCPError) as missed:  # past the recorded sequence: a miss, not a live call
            await session.call_tool("counter", {})
        assert missed.value.code == -32003
    # The run recorded across both gateways replays as one sequence (here through a connection to A).
    async with mcp_session(a.mcp_url("fx"), headers={"X-Simgate-Session": "U"}) as session:
        assert [_text(await session.call_tool("counter", {})) for _ in range(4)] == [_text(r) for r in recorded_u]
    # A sessionless replay of S, its calls alternating between B and A: each gateway continues where
    # the other left off.
    replayed_s = await _sessionless_calls([b.mcp_url(), a.mcp_url()], "S", "fx__counter", {}, 3)
    assert [_text(r) for r in replayed_s] == recorded_s
    assert all(provenance(r)["source"] == "cache" for r in replayed_s)


async def test_once_is_decided_once_for_the_whole_cluster(cluster: tuple[GatewayProcess, GatewayProcess],
                                                          redis_server: RedisServer) -> None:
    a, b = cluster
    # `once`: nothing recorded before this run, so both gateways record (the one that asks second
    # sees the first one's recordings, and still follows the cluster's decision).
    async with mcp_session(a.mcp_url("once")) as session:
        assert provenance(await session.call_tool("echo", {"text": "via A"}))["recorded"] is True
    async with mcp_session(b.mcp_url("once")) as session:
        assert provenance(await session.call_tool("echo", {"text": "via B"}))["recorded"] is True
    assert sorted(r.arguments["text"] for r in _recordings(redis_server, "once", "echo")) == ["via A", "via B"]
    # `old` was recorded before this run: neither gateway records it.
    for gateway in (b, a):
        async with mcp_session(gateway.mcp_url("old")) as session:
            assert not provenance(await session.call_tool("echo", {"text": "again"})).get("recorded")
    assert [r.arguments["text"] for r in _recordings(redis_server, "old", "echo")] == ["x"]


async def test_sixteen_writers_on_two_gateways_lose_and_tear_nothing(
        cluster: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    a, b = cluster

    async def client(index: int) -> None:
        gateway = (a, b)[index % 2]
        async with mcp_session(gateway.mcp_url("w"), headers={"X-Simgate-Session": f"c{index}"}) as session:
            for call in range(10):
                await session.call_tool("echo", {"text": f"{index}-{call}"})
                await session.call_tool("counter", {})

    async with anyio.create_task_group() as tg:
        for index in range(16):
            tg.start_soon(client, index)
    echoes = _recordings(redis_server, "w", "echo")  # every entry parses as a whole Recording
    counters = _recordings(redis_server, "w", "counter")
    assert sorted(r.arguments["text"] for r in echoes) == sorted(f"{i}-{c}" for i in range(16) for c in range(10))
    # One key for all sequences of `counter`, written by 16 sessions on 2 gateways at once.
    assert len({r.key for r in counters}) == 1 and len(counters) == 160
    for index in range(16):
        assert sorted(r.position for r in counters if r.episode == f"c{index}") == list(range(10))
    # Each gateway's own upstream counted its 80 calls: 1..80 twice.
    assert sorted(int(r.result["content"][0]["text"]) for r in counters if r.result) == sorted(
        list(range(1, 81)) * 2)
    raw = redis_server.client()
    key = counters[0].key
    assert raw.llen(f"{PREFIX}r:{key}") == raw.hlen(f"{PREFIX}p:{key}") == 160  # the index agrees


async def test_a_rate_limit_and_an_upstream_quota_hold_for_the_cluster(
        cluster: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = cluster
    ok = refused = 0
    go = anyio.Event()
    window: list[float] = []  # when each call was sent, once all sessions are open

    async def hammer(gateway: GatewayProcess, ready: Any) -> None:
        nonlocal ok, refused
        async with mcp_session(gateway.mcp_url("limited"), headers={"X-Simgate-Session": "R"}) as session:
            ready()
            await go.wait()
            while time.monotonic() < deadline:
                window.append(time.monotonic())
                try:
                    await session.call_tool("echo", {"text": "x"})
                    ok += 1
                except MCPError as exc:
                    assert exc.code == -32006
                    refused += 1

    opened: list[int] = []
    deadline = float("inf")
    async with anyio.create_task_group() as tg:
        for index, gateway in enumerate((a, b, a, b)):
            tg.start_soon(hammer, gateway, lambda index=index: opened.append(index))
        with anyio.fail_after(30):
            while len(opened) < 4:
                await anyio.sleep(0.01)
        deadline = time.monotonic() + 2.0
        go.set()
    elapsed = max(window) - min(window)
    # One bucket (rate 20/s, burst 4) for the client, whichever gateway it calls: burst + rate x time,
    # within a few percent (per-gateway buckets would let through about twice as many).
    allowed = 4 + 20 * elapsed
    assert refused > ok, (ok, refused)
    assert 0.93 * allowed <= ok <= 1.05 * allowed + 1, (ok, allowed, elapsed)

    # The upstream quota (10 calls/s, burst 1) is one queue for the cluster: 20 calls, 10 through each
    # gateway at once, take (20 - 1) / 10 s, not half of it.
    async def queued(gateway: GatewayProcess, count: int) -> None:
        async with mcp_session(gateway.mcp_url("quota")) as session:
            async with anyio.create_task_group() as calls:
                for index in range(count):
                    calls.start_soon(session.call_tool, "echo", {"text": str(index)})

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(queued, a, 10)
        tg.start_soon(queued, b, 10)
    elapsed = time.monotonic() - started
    assert 1.8 <= elapsed <= 2.6, elapsed


async def test_a_cassette_moves_between_diskcache_and_redis_unchanged(
        cluster: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer, tmp_path: Path) -> None:
    a, b = cluster
    async with mcp_session(b.mcp_url("w"), headers={"X-Simgate-Session": "cassette"}) as session:
        await session.call_tool("echo", {"text": "ünïcode ✓ and 1.0e16"})
        await session.call_tool("add", {"numbers": [0.1, 0.2, 1e16]})
        assert (await session.call_tool("fail", {"reason": "recorded error"})).is_error
    config = a.workdir / "simgate.json"
    first, second, third = tmp_path / "from-redis.jsonl", tmp_path / "from-disk.jsonl", tmp_path / "again.jsonl"
    disk = tmp_path / "disk"
    assert _cache("export", "--config", str(config), "--server", "w", str(first)).returncode == 0
    assert _cache("import", "--cache-dir", str(disk), str(first)).returncode == 0
    assert _cache("export", "--cache-dir", str(disk), str(second)).returncode == 0
    # Into a Redis world of its own (another prefix), and out again.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"gateway": {"store": {"backend": "redis", "url": redis_server.url,
                                                       "prefix": "moved:"}}, "mcpServers": {}}))
    imported = _cache("import", "--config", str(other), str(second))
    assert imported.returncode == 0, imported.stderr
    assert "0 kept" in imported.stdout and "tool lists of w" in imported.stdout
    assert _cache("export", "--config", str(other), str(third)).returncode == 0
    bodies = [_cassette(path) for path in (first, second, third)]
    assert bodies[0][1] and bodies[0] == bodies[1] == bodies[2]
    assert any("ünïcode ✓" in line for line in bodies[0][1])
    # Importing again adds nothing; `ls` and `show` read the Redis store too.
    again = _cache("import", "--config", str(other), str(first))
    assert f"0 added, 0 replaced, {len(bodies[0][1])} kept" in again.stdout
    listed = _cache("ls", "--config", str(other), "--json")
    assert {row["tool"] for row in json.loads(listed.stdout)} >= {"echo", "add", "fail"}
    pruned = _cache("prune", "--all", "--tool", "echo", "--config", str(other))
    assert pruned.returncode == 0 and "removed" in pruned.stdout
    assert "echo" not in {row["tool"] for row in json.loads(_cache("ls", "--config", str(other), "--json").stdout)}


def _cassette(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(the header without its export time, the recording lines as written)."""
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    parsed = json.loads(header)
    parsed.pop("exported_at")
    parsed.pop("filter")
    return parsed, lines


def _cache(*args: str) -> subprocess.CompletedProcess[str]:
    return _simgate("cache", *args)


def _simgate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simgate", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


async def test_kill_9_of_a_gateway_mid_recording_loses_no_completed_entry(redis_server: RedisServer,
                                                                         tmp_path: Path) -> None:
    prefix = "killed:"
    config = {"gateway": {"record": "all", "store": {"backend": "redis", "url": redis_server.url, "prefix": prefix}},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
    completed: list[str] = []
    with running_gateway(config, tmp_path / "a") as a, running_gateway(config, tmp_path / "b") as b:
        stop = anyio.Event()

        async def client(gateway: GatewayProcess, index: int) -> None:
            try:
                async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": f"k{index}"}) as session:
                    for call in range(1000):
                        if stop.is_set():
                            return
                        await session.call_tool("echo", {"text": f"{index}-{call}"})
                        await session.call_tool("counter", {})
                        completed.append(f"{index}-{call}")
            except Exception:
                pass  # the gateway is killed under it

        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(client, (a, b)[index % 2], index)
            with anyio.fail_after(60):
                while len(completed) < 150:
                    await anyio.sleep(0.02)
            os.kill(a.process.pid, signal.SIGKILL)
            a.process.wait(timeout=10)
            await anyio.sleep(0.5)
            stop.set()
    echoes = {r.arguments["text"] for r in _recordings(redis_server, "fx", "echo", prefix)}
    counters = _recordings(redis_server, "fx", "counter", prefix)
    assert set(completed) <= echoes
    for index in range(8):
        done = sum(1 for text in completed if text.startswith(f"{index}-"))
        positions = sorted(r.position for r in counters if r.episode == f"k{index}")
        assert positions[:done] == list(range(done))  # contiguous: nothing completed was lost
        assert positions == list(range(len(positions)))  # and no hole after a torn write


def test_an_unreachable_redis_stops_the_start_naming_it_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "simgate.json"
    config.write_text(json.dumps({"gateway": {"store": {"backend": "redis",
                                                        "url": f"redis://ops:${{REDIS_PASSWORD}}@127.0.0.1:{port}/2"}},
                                  "mcpServers": {}}))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REDIS_PASSWORD": "hunter2-secret"}
    result = subprocess.run([sys.executable, "-m", "simgate", "serve", str(config), "--port", str(free_port())],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"cannot use Redis at redis://ops:***@127.0.0.1:{port}/2" in output, output
    assert "hunter2" not in output
    # A URL that is no Redis URL is refused when the config is read.
    config.write_text(json.dumps({"gateway": {"store": {"backend": "redis", "url": "http://:pw@host/x"}},
                                  "mcpServers": {}}))
    checked = _simgate("serve", str(config), "--port", str(free_port()))
    assert checked.returncode != 0 and "gateway.store" in checked.stderr and "redis://" in checked.stderr
    assert ":pw@" not in checked.stderr


def test_a_gateway_on_diskcache_never_loads_the_redis_client(tmp_path: Path) -> None:
    config = tmp_path / "simgate.json"
    config.write_text(json.dumps({"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {}}))
    code = ("import sys\nfrom simgate.gateway.app import Gateway\nfrom simgate.gateway.config.loader import load_config\n"
            f"Gateway(load_config({str(config)!r}))\nprint('redis' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


async def test_redis_gone_while_serving_is_a_clear_error_and_the_gateway_lives_on(tmp_path: Path) -> None:
    with private_redis() as own:
        config = {"gateway": {"record": "all", "store": {"backend": "redis", "url": own.url, "prefix": "gone:"}},
                  "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
        with running_gateway(config, tmp_path / "gw") as gateway:
            async with mcp_session(gateway.mcp_url("fx")) as session:
                assert provenance(await session.call_tool("echo", {"text": "stored"}))["recorded"] is True
                own.process.send_signal(signal.SIGTERM)
                own.process.wait(timeout=10)
                for mode in ("live", "replay"):  # a write, then a read, of the store
                    with pytest.raises(MCPError) as failed:
                        await session.call_tool("echo", {"text": "stored"}, meta={"simgate/mode": mode})
                    assert failed.value.error.message.startswith(
                        f"the recording store is unavailable: Redis at {own.url}: "), failed.value.error.message
            assert httpx.get(gateway.url + "/healthz").status_code == 200


def _rec(key: str, *, episode: str = "", position: int = 0, text: str = "a", server: str = "s", tool: str = "t",
         expires_at: float | None = None) -> Recording:
    return Recording(key=key * 64, server=server, tool=tool, tool_fingerprint="f", arguments={"text": text},
                     result={"content": [{"type": "text", "text": text}], "isError": False}, latency_ms=1.0,
                     recorded_at="2026-01-01T00:00:00.000+00:00", sequential=bool(episode), episode=episode,
                     position=position, expires_at=expires_at)


def _script(store: Any) -> list[Any]:
    """The same operations on a store; what each one answered and what the store then holds."""
    seen: list[Any] = [
        store.put(_rec("a"), replace=False), store.put(_rec("a", text="b"), replace=False),
        store.put(_rec("a", text="c"), replace=True),
        store.put_many([_rec("b", episode="e1", position=1), _rec("b", episode="e1", position=0),
                        _rec("b", episode="e2", position=0, expires_at=1.0), _rec("b", episode="e2", position=1),
                        _rec("b", episode="e3", position=2), _rec("c", tool="u")], replace=False,
                       tools={"s": [{"name": "t"}, {"name": "u"}]}),
        store.tool_keys("s", "t"), store.tool_keys("s", "u"), store.load_tools("s"), sorted(store.keys()),
        [r.model_dump() for r in store.get("b" * 64)],
        store.prune(),  # e2's expired first position takes its whole sequence
        [(r.episode, r.position) for r in store.get("b" * 64)],
        store.delete("c" * 64), store.delete("c" * 64), store.tool_keys("s", "u"),
        store.prune(expired_only=False, tool="t"), sorted(store.keys()), store.tool_keys("s", "t"),
        store.decide_once("s", lambda: True), store.decide_once("s", lambda: False),
    ]
    return seen


def test_the_redis_store_answers_as_the_diskcache_store(redis_server: RedisServer, tmp_path: Path) -> None:
    from simgate.gateway.cache.store import DiskStore

    disk, shared = DiskStore(tmp_path / "disk"), _store(redis_server, "same:")
    try:
        on_disk, on_redis = _script(disk), _script(shared)
    finally:
        disk.close()
        shared.close()
    # `once` differs by design only in who asks: diskcache asks every time (one gateway keeps its
    # decision for the run), Redis keeps the first decision for every gateway.
    assert on_disk[:-1] == on_redis[:-1] and on_redis[-2:] == [True, True]
    assert on_redis[3] == {"added": 5, "replaced": 0, "kept": 0, "gaps": 1}


def test_a_corrupt_value_in_redis_is_named_skipped_by_listings_and_deletable(redis_server: RedisServer) -> None:
    from simgate.gateway.cache.listing import iter_groups
    from simgate.gateway.errors import CorruptRecording

    store = _store(redis_server, "corrupt:")
    try:
        for key in "abc":
            store.put(_rec(key, text=key), replace=False)
        with redis_server.client() as client:
            client.rpush(f"corrupt:r:{'a' * 64}", '{"key": "trunc')  # a truncated item after a good one
            client.delete(f"corrupt:r:{'b' * 64}")
            client.set(f"corrupt:r:{'b' * 64}", "a string, not a list")  # WRONGTYPE for LRANGE
        for key in ("a", "b"):
            with pytest.raises(CorruptRecording, match=f"key {key * 64} is corrupt"):
                store.get(key * 64)
        assert [group[0].key for group in iter_groups(store)] == ["c" * 64]  # the others are named, not fatal
        assert store.prune() == 0 and len(list(store.keys())) == 3  # passed over, not fatal
        assert store.delete("a" * 64)
        assert store.prune(expired_only=False, tool="t") == 1  # c; b (its tool unknown) is left
        assert list(store.keys()) == ["b" * 64]
        store.prune(expired_only=False)  # --all: the corrupt value too
        assert list(store.keys()) == []
    finally:
        store.close()


async def test_fidelity_calls_and_status_read_the_recordings_from_redis(
        cluster: tuple[GatewayProcess, GatewayProcess], tmp_path: Path) -> None:
    """`simgate fidelity calls/status --config` on a Redis config read its store, not an empty cache directory
    (the gate's evidence is written to the gateway's cache directory, which each gateway reads)."""
    a, _ = cluster
    headers = {"X-Simgate-Session": "fidelity", "X-Simgate-Mode": "live"}  # earlier tests may leave replay on
    async with mcp_session(a.mcp_url("fx"), headers=headers) as session:
        for text in ("one", "two", "three"):
            await session.call_tool("echo", {"text": text})
    config = json.loads((a.workdir / "simgate.json").read_text())
    config["gateway"]["cache_dir"] = str(tmp_path / "evidence")
    config["gateway"]["simulator"] = {"backend": "examples"}
    path = tmp_path / "simgate.json"
    path.write_text(json.dumps(config))
    done = _simgate("fidelity", "calls", "--config", str(path), "--server", "fx", "--backend", "examples",
                    "--setting", "few_shot", "--out", str(tmp_path / "report"), timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["settings"]["few_shot"]["overall"]["calls"] >= 3, report["settings"]["few_shot"]["overall"]
    status = _simgate("fidelity", "status", "--config", str(path), "--json")
    assert status.returncode == 0, status.stderr
    assert ("fx", "echo") in {(row["server"], row["tool"]) for row in json.loads(status.stdout)["tools"]}
    exported = _simgate("export", "simulator-sft", "--config", str(path), "--server", "fx",
                        "--out", str(tmp_path / "sft.jsonl"))
    assert exported.returncode == 0, exported.stderr
    assert len((tmp_path / "sft.jsonl").read_text().splitlines()) >= 3


def _recorded(key: str, position: int = 0, latency: float = 1.5) -> Recording:
    return Recording(key=key * 64, server="imp", tool="seq", tool_fingerprint="f", arguments={"n": position},
                     result={"content": [{"type": "text", "text": f"{key}{position}"}]}, latency_ms=latency,
                     recorded_at="2026-01-01T00:00:00.000+00:00", sequential=True, episode="e", position=position)


def _redis_world(server: RedisServer, prefix: str) -> dict[str, Any]:
    """Everything under `prefix`, as Redis holds it."""
    client = _store(server, prefix)._client
    try:
        world: dict[str, Any] = {}
        for name in client.scan_iter(f"{prefix}*"):
            kind = client.type(name)
            world[name] = {"list": lambda n: client.lrange(n, 0, -1), "hash": client.hgetall,
                           "set": lambda n: sorted(client.smembers(n)), "string": client.get}[kind](name)
        return world
    finally:
        client.close()


def test_a_failed_import_into_redis_is_taken_back_batch_by_batch(redis_server: RedisServer, tmp_path: Path) -> None:
    """An import too big for one script is written in batches; when it fails after some (here: the file changed
    between the check and the write, seen at its end), the journal puts back what they replaced and drops what
    they added: Redis holds exactly what it held before, and no journal."""
    prefix = "rollback:"
    store = _store(redis_server, prefix)
    try:
        store.put(_recorded("a", 0, latency=9.0), replace=False)  # replaced by the import, then put back
        store.save_tools("imp", [{"name": "seq"}])
        before = _redis_world(redis_server, prefix)
        path = tmp_path / "world.jsonl"
        write_cassette(path, [*(_recorded("a", n) for n in range(3)), *(_recorded(c) for c in "bcd")],
                       {"imp": [{"name": "seq", "description": "new"}]}, {"server": None, "tool": None})
        checked = check_cassette(path)
        stat = path.stat()
        data = path.read_bytes()
        path.write_bytes(data.replace(b'"latency_ms":1.5', b'"latency_ms":2.5', 1))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with pytest.raises(CassetteError, match=r"changed since it was checked \(its content differs\)"):
            apply_cassette(store, checked, replace=True, batch=2)
        assert _redis_world(redis_server, prefix) == before
        # The cassette as it now is imports: the same batches, each kept.
        report = apply_cassette(store, check_cassette(path), replace=True, batch=2)
        assert (report.added, report.replaced, report.kept) == (5, 1, 0)
        assert [r.latency_ms for r in store.get("a" * 64)] == [2.5, 1.5, 1.5]
        assert store.load_tools("imp") == [{"name": "seq", "description": "new"}]
        assert not [name for name in _redis_world(redis_server, prefix) if ":import:" in name]
    finally:
        store.close()
