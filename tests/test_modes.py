"""Execution modes against real servers: record, replay with every upstream gone, hybrid, shadow,
mode precedence, and the store's reliability under concurrency and `kill -9`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
import real_servers as rs
from harness import (
    PROVENANCE,
    REPO_ROOT,
    fixture_server,
    mcp_session,
    provenance,
    running_gateway,
    without_provenance,
)
from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.shadow import ShadowLog
from simgate.gateway.cache.store import DiskStore

pytestmark = pytest.mark.anyio

ROOT = rs.default_install_root()
GONE = {"command": "/bin/false"}  # an upstream that cannot start: replay must not need it



def _real(name: str, work_dir: Path) -> dict[str, Any]:
    return rs.gateway_server(name, work_dir, ROOT)




# A session's calls: pure (calculator), clock (time), stateful (sqlite, memory), in an order that
# depends on state: the second read sees the first write.
SESSION_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("calculator", "calculate", {"expression": "2**10 + 3"}),
    ("time", "get_current_time", {"timezone": "UTC"}),
    ("sqlite", "create_table", {"query": "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"}),
    ("sqlite", "read_query", {"query": "SELECT count(*) AS n FROM t"}),
    ("sqlite", "write_query", {"query": "INSERT INTO t (name) VALUES ('a'), ('b')"}),
    ("sqlite", "read_query", {"query": "SELECT count(*) AS n FROM t"}),
    ("memory", "create_entities", {"entities": [{"name": "Ada", "entityType": "person", "observations": ["x"]}]}),
    ("memory", "read_graph", {}),
    ("time", "get_current_time", {"timezone": "UTC"}),
]


async def _run_session(url: str, session_name: str) -> list[types.CallToolResult]:
    results = []
    async with mcp_session(url, headers={"X-Simgate-Session": session_name}) as session:
        for index, (server, tool, arguments) in enumerate(SESSION_CALLS):
            if index == len(SESSION_CALLS) - 1:
                await anyio.sleep(1.1)  # the clock's second read is a different second
            results.append(await session.call_tool(f"{server}__{tool}", arguments))
    return results


async def test_record_then_replay_with_every_upstream_gone(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    servers = {name: _real(name, tmp_path / name) for name in ("calculator", "time", "sqlite", "memory")}
    # The clock is read-only, so by default it replays by key (one answer for all reads); for a
    # faithful trajectory its reads replay in sequence instead.
    servers["time"]["tool_settings"] = {"get_current_time": {"cacheable": False}}
    with running_gateway({"gateway": {"record": "all", "cache_dir": str(cache)}, "mcpServers": servers},
                         tmp_path / "record") as recording:
        recorded = await _run_session(recording.mcp_url(), "trajectory-1")
    assert all(provenance(r)["source"] == "live" and provenance(r)["recorded"] for r in recorded)
    # The two reads of the same query differ (state), and so do the two clock reads.
    assert without_provenance(recorded[3]) != without_provenance(recorded[5])
    assert without_provenance(recorded[1]) != without_provenance(recorded[8])

    # The replaying gateway knows nothing of the clock's settings: replay follows the recording.
    gone = {name: GONE for name in servers}
    with running_gateway({"gateway": {"mode": "replay", "cache_dir": str(cache)}, "mcpServers": gone},
                         tmp_path / "replay", wait_ready=False) as replaying:
        replayed = await _run_session(replaying.mcp_url(), "trajectory-1")
        states = {s["name"]: s["state"] for s in httpx.get(replaying.url + "/admin/servers").json()["servers"]}
        metrics = httpx.get(replaying.url + "/metrics").text
    assert [without_provenance(r) for r in replayed] == [without_provenance(r) for r in recorded]
    assert all(provenance(r)["source"] == "cache" for r in replayed)
    assert [provenance(r)["cache_key"] for r in replayed] == [provenance(r)["cache_key"] for r in recorded]
    assert all(state != "ready" for state in states.values())  # no upstream ever answered
    assert 'simgate_upstream_up{server="sqlite"} 0.0' in metrics


async def test_schema_change_invalidates_and_a_miss_names_the_nearest_calls(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = {"gateway": {"record": "all", "cache_dir": str(cache)}, "mcpServers": {
        "fx": fixture_server("misbehaving_server.py", "--banner", "")}}
    with running_gateway(config, tmp_path / "v1") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            await session.call_tool("echo", {"text": "hello"})
            await session.call_tool("echo", {"text": "help"})

    replay = {"gateway": {"mode": "replay", "cache_dir": str(cache)}}
    with running_gateway({**replay, "mcpServers": {"fx": fixture_server("misbehaving_server.py")}},
                         tmp_path / "same") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            result = await session.call_tool("echo", {"text": "hello"})
            assert provenance(result)["source"] == "cache"
            with pytest.raises(MCPError) as miss:
                await session.call_tool("echo", {"text": "hellp"})
    assert miss.value.code == -32003
    assert "echo" in miss.value.message and "{'text': 'hello'}" in miss.value.message
    assert [near["arguments"] for near in miss.value.data["nearest"]][:2] == [{"text": "hello"}, {"text": "help"}]

    changed = fixture_server("misbehaving_server.py", "--echo-v2")
    with running_gateway({**replay, "mcpServers": {"fx": changed}}, tmp_path / "v2") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            with pytest.raises(MCPError) as stale:
                await session.call_tool("echo", {"text": "hello"})
    assert stale.value.code == -32003 and "[older schema]" in stale.value.message


async def test_hybrid_falls_through_cache_live_simulator(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = {"mode": "hybrid", "record": "new_episodes", "cache_dir": str(cache),
                "simulator": {"backend": "examples"}}
    with running_gateway({"gateway": settings, "mcpServers": {"fx": fixture_server("misbehaving_server.py")}},
                         tmp_path / "up") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            first = await session.call_tool("echo", {"text": "one"})
            again = await session.call_tool("echo", {"text": "one"})
    assert provenance(first)["source"] == "live"
    assert provenance(first)["fell_through"][0].startswith("cache: replay miss")
    assert provenance(again)["source"] == "cache"

    with running_gateway({"gateway": settings, "mcpServers": {"fx": GONE}}, tmp_path / "down",
                         wait_ready=False) as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            cached = await session.call_tool("echo", {"text": "one"})
            with anyio.fail_after(20):
                imagined = await session.call_tool("echo", {"text": "two"})
    assert provenance(cached)["source"] == "cache"
    imagined_from = provenance(imagined)
    assert imagined_from["source"] == "simulator" and imagined_from["simulator"] == "examples"
    assert [step.split(":")[0] for step in imagined_from["fell_through"]] == ["cache", "live"]
    # the nearest recorded answer ("one"), with the new argument put where it echoed the old one
    assert imagined.content[0].text == "two"  # type: ignore[union-attr]


async def test_order_of_hybrid_is_configurable_and_simulated_needs_a_simulator(tmp_path: Path) -> None:
    settings = {"mode": "hybrid", "hybrid_order": ["live", "cache"], "record": "none",
                "cache_dir": str(tmp_path / "cache")}
    with running_gateway({"gateway": settings, "mcpServers": {"fx": fixture_server("misbehaving_server.py")}},
                         tmp_path / "gw") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            result = await session.call_tool("echo", {"text": "x"})
            assert provenance(result)["source"] == "live" and "fell_through" not in provenance(result)
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Mode": "simulated"}) as session:
            with pytest.raises(MCPError) as none:
                await session.call_tool("echo", {"text": "x"})
    assert none.value.code == -32004 and "no simulator is configured" in none.value.message


async def test_shadow_returns_live_and_keeps_both_answers(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = {"record": "all", "cache_dir": str(cache), "simulator": {"backend": "examples"}}
    with running_gateway({"gateway": settings, "mcpServers": {"fx": fixture_server("misbehaving_server.py")}},
                         tmp_path / "gw") as gateway:
        async with mcp_session(gateway.mcp_url("fx")) as session:
            await session.call_tool("echo", {"text": "recorded"})
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Mode": "shadow"}) as session:
            result = await session.call_tool("echo", {"text": "shadowed"})
            assert provenance(result)["source"] == "live" and provenance(result)["mode"] == "shadow"
            assert result.content[0].text == "shadowed"  # type: ignore[union-attr]
            await anyio.sleep(0.5)
    log = ShadowLog(cache / "shadow")
    pairs = list(log.pairs())
    log.close()
    assert len(pairs) == 1 and pairs[0].tool == "echo" and pairs[0].simulator == "examples"
    assert pairs[0].live["content"][0]["text"] == "shadowed"
    assert pairs[0].simulated["content"][0]["text"] == "shadowed"  # "recorded", carried over to the new argument


async def test_mode_precedence_admin_api_and_cli(tmp_path: Path) -> None:
    config = {"gateway": {"mode": "live", "record": "all", "cache_dir": str(tmp_path / "cache")},
              "mcpServers": {"a": fixture_server("misbehaving_server.py"),
                             "b": {**fixture_server("misbehaving_server.py"), "mode": "replay",
                                   "tool_settings": {"add": {"mode": "live"}}}}}
    with running_gateway(config, tmp_path / "gw") as gateway:
        async def mode_of(tool: str, arguments: dict[str, Any], headers: dict[str, str] | None = None) -> str:
            async with mcp_session(gateway.mcp_url(), headers=headers) as session:
                try:
                    return provenance(await session.call_tool(tool, arguments))["mode"]
                except MCPError as exc:
                    return exc.data[PROVENANCE]["mode"] if exc.code == -32003 else f"error {exc.code}"

        assert await mode_of("a__echo", {"text": "1"}) == "live"  # gateway default
        assert await mode_of("b__echo", {"text": "1"}) == "replay"  # server
        assert await mode_of("b__add", {"numbers": [1]}) == "live"  # tool beats server
        assert await mode_of("b__add", {"numbers": [1]}, {"X-Simgate-Mode": "replay"}) == "replay"  # request
        headers = {"X-Simgate-Session": "s-42"}
        admin = httpx.put(gateway.url + "/admin/modes", json={"mode": "replay", "session": "s-42"})
        assert admin.status_code == 200 and admin.json()["sessions"] == {"s-42": "replay"}
        assert await mode_of("b__add", {"numbers": [1]}, headers) == "replay"  # session beats tool
        assert await mode_of("a__echo", {"text": "1"}, {**headers, "X-Simgate-Mode": "live"}) == "live"

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "simgate", "mode", *args, "--url", gateway.url],
                                  capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)

        done = cli("set", "replay", "--server", "a")
        assert done.returncode == 0 and json.loads(done.stdout)["servers"]["a"] == "replay"
        assert await mode_of("a__echo", {"text": "1"}) == "replay"
        assert cli("set", "simulated").returncode == 0
        shown = json.loads(cli("show").stdout)
        assert shown["default"] == "simulated" and shown["servers"] == {"a": "replay", "b": "replay"}
        assert shown["tools"] == {"b": {"add": "live"}}
        bad = cli("set", "sideways")
        assert bad.returncode == 2 and "unknown mode 'sideways'" in bad.stderr
        assert cli("set", "live", "--tool", "echo").returncode == 2  # a tool needs its server
        assert httpx.put(gateway.url + "/admin/modes", json={"mode": "live", "server": "zz"}).status_code == 400
        assert await mode_of("a__echo", {"text": "1"}, {"X-Simgate-Mode": "nonsense"}) == "error -32602"


async def test_sixteen_clients_recording_at_once_lose_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = {"gateway": {"record": "all", "cache_dir": str(cache)},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path / "gw") as gateway:
        async def client(index: int) -> None:
            async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": f"c{index}"}) as session:
                for call in range(10):
                    await session.call_tool("echo", {"text": f"{index}-{call}"})
                    await session.call_tool("counter", {})

        async with anyio.create_task_group() as tg:
            for index in range(16):
                tg.start_soon(client, index)
    store = DiskStore(cache)
    try:
        echoes = [r for key in store.tool_keys("fx", "echo") for r in store.get(key)]
        counters = [r for key in store.tool_keys("fx", "counter") for r in store.get(key)]
    finally:
        store.close()
    assert sorted(r.arguments["text"] for r in echoes) == sorted(f"{i}-{c}" for i in range(16) for c in range(10))
    # `counter` is not read-only: each session keeps its own sequence of 10 under the one key.
    assert len(counters) == 160
    for index in range(16):
        episode = [r for r in counters if r.episode == f"c{index}"]
        assert [r.position for r in episode] == list(range(10))
    # The counter is shared server state: across all sessions every answer 1..160 was recorded once.
    assert sorted(int(r.result["content"][0]["text"]) for r in counters) == list(range(1, 161))


async def test_kill_9_while_recording_keeps_every_completed_entry(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = {"gateway": {"record": "all", "cache_dir": str(cache)},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
    completed: list[str] = []
    with running_gateway(config, tmp_path / "gw") as gateway:
        async def client(index: int) -> None:
            try:
                async with mcp_session(gateway.mcp_url("fx")) as session:
                    for call in range(1000):
                        await session.call_tool("echo", {"text": f"{index}-{call}"})
                        completed.append(f"{index}-{call}")
            except Exception:
                pass  # the gateway is killed under it

        async with anyio.create_task_group() as tg:
            for index in range(4):
                tg.start_soon(client, index)
            with anyio.fail_after(60):
                while len(completed) < 200:
                    await anyio.sleep(0.02)
            os.kill(gateway.process.pid, signal.SIGKILL)
        gateway.process.wait(timeout=10)
    store = DiskStore(cache)
    try:
        recorded = {r.arguments["text"] for key in store.tool_keys("fx", "echo") for r in store.get(key)}
    finally:
        store.close()
    assert set(completed) <= recorded
    with running_gateway({"gateway": {"mode": "replay", "cache_dir": str(cache)}, "mcpServers": {"fx": GONE}},
                         tmp_path / "replay", wait_ready=False) as replaying:
        async with mcp_session(replaying.mcp_url("fx")) as session:
            for text in completed[:: max(1, len(completed) // 20)]:
                result = await session.call_tool("echo", {"text": text})
                assert result.content[0].text == text  # type: ignore[union-attr]


async def test_a_mode_for_a_name_the_gateway_does_not_know_is_refused_with_the_nearest_names(tmp_path: Path) -> None:
    """`PUT /admin/modes` names a server of the config and a tool of its current list; a typo would otherwise be
    stored and never apply. A server that is down is checked against its recorded tool list, and one whose list
    is not known at all is accepted with a warning. `DELETE` of a setting that is not there says so (404)."""
    cache = tmp_path / "cache"
    recorded = DiskStore(cache)  # the tool list a cassette import (or an earlier run) leaves for a server
    try:
        recorded.save_tools("rec", [{"name": "read_query", "inputSchema": {"type": "object"}}])
    finally:
        recorded.close()
    config = {"gateway": {"cache_dir": str(cache), "ready_when": ["fx"]},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py"), "rec": GONE, "down": GONE}}
    with running_gateway(config, tmp_path / "gw") as gateway:
        modes = gateway.url + "/admin/modes"

        def put(change: dict[str, str]) -> httpx.Response:
            return httpx.put(modes, json={"mode": "replay", **change}, timeout=10)

        typo = put({"server": "fx", "tool": "ech"})
        assert typo.status_code == 400, typo.text
        assert typo.json()["error"] == "unknown tool 'ech' on server 'fx' (did you mean 'echo'?)"
        assert typo.json()["unknown"] == [{"kind": "tool", "name": "ech", "server": "fx", "suggestions": ["echo"]}]
        exposed = put({"server": "fx", "tool": "fx__echo"})  # the name an agent sees on /mcp
        assert exposed.status_code == 400 and "did you mean 'echo'?" in exposed.json()["error"], exposed.text
        server = put({"server": "fxx", "tool": "echo"})
        assert server.status_code == 400, server.text
        assert server.json()["unknown"] == [{"kind": "server", "name": "fxx", "server": None, "suggestions": ["fx"]}]
        assert "unknown server 'fxx' (did you mean 'fx'?)" in server.json()["error"]
        lone = put({"tool": "echo"})
        assert lone.status_code == 400 and "needs its server" in lone.json()["error"] and "'fx'" in lone.json()["error"]
        both = put({"session": "s-1", "server": "fx"})
        assert both.status_code == 400 and "session" in both.json()["error"], both.text
        shown = httpx.get(modes, timeout=10).json()
        assert (shown["servers"], shown["tools"], shown["sessions"]) == ({}, {}, {})  # nothing was stored

        known = put({"server": "fx", "tool": "echo"})
        assert known.status_code == 200 and known.json()["tools"] == {"fx": {"echo": "replay"}}, known.text
        assert "warnings" not in known.json()
        assert put({"server": "fx"}).status_code == 200
        # Down, with a recorded tool list: checked against it.
        stale = put({"server": "rec", "tool": "read_querry"})
        assert stale.status_code == 400 and "did you mean 'read_query'?" in stale.json()["error"], stale.text
        assert put({"server": "rec", "tool": "read_query"}).status_code == 200
        # Down, nothing recorded: taken, and said so.
        unknown_list = put({"server": "down", "tool": "anything"})
        assert unknown_list.status_code == 200, unknown_list.text
        assert unknown_list.json()["tools"]["down"] == {"anything": "replay"}
        assert ["'anything'" in w and "'down'" in w for w in unknown_list.json()["warnings"]] == [True]

        missing = httpx.delete(modes, params={"server": "fx", "tool": "ech"}, timeout=10)
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"] == "no run-time mode is set for tool 'ech' of server 'fx' (did you mean 'echo'?)"
        assert httpx.delete(modes, params={"server": "fx", "tool": "echo"}, timeout=10).status_code == 200
        again = httpx.delete(modes, params={"server": "fx", "tool": "echo"}, timeout=10)
        assert again.status_code == 404 and "'echo'" in again.json()["error"], again.text
        assert httpx.delete(modes, params={"server": "fz"}, timeout=10).status_code == 400
        assert httpx.delete(modes, timeout=10).status_code == 404  # no run-time default: the config's applies
        assert httpx.delete(modes, params={"server": "down", "tool": "anything"}, timeout=10).status_code == 200
        shown = httpx.get(modes, timeout=10).json()
        assert shown["servers"] == {"fx": "replay"} and shown["tools"] == {"rec": {"read_query": "replay"}}
