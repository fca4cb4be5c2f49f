"""Clients other than the `mcp` 2.x one, against a real gateway: the `mcp` 1.x Python SDK (1.30.0, the latest
1.x) and the TypeScript SDK's `Client` (@modelcontextprotocol/sdk 1.32.2), each offering every protocol version
of the handshake era (2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25), over streamable HTTP and over the
HTTP+SSE transport of 2024-11-05 (`.../sse`, also across `serve --workers 2` replicas); and a 2025-03-26 batch.

Each client is a small script in tests/fixtures/ (`mcp1_client.py`, `ts_client.mjs`) run by its own runtime
(the mcp 1.x venv, Node 22) from `.ci/install-servers`' install root; it plays a plan of steps and prints what
it saw as JSON. Skipped, naming the install command, when they are not installed (failed in CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import real_servers as rs
from harness import FIXTURES, GatewayProcess, fixture_server, http_ok, running_gateway, wait_until

from simgate.gateway.auth.api_keys import KeyStore

ROOT = rs.default_install_root()
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
CLIENTS = ("mcp1", "ts")
SUM_SCHEMA = {"type": "object", "title": "Sum", "required": ["total", "terms"],
              "properties": {"total": {"title": "Total", "type": "number"},
                             "terms": {"title": "Terms", "type": "integer"}}}


def _require(client: str) -> None:
    ok = rs.mcp1_client_installed(ROOT) if client == "mcp1" else (
        rs.node22_path(ROOT).exists() and (rs.ts_sdk_dir(ROOT) / "package.json").exists())
    if ok:
        return
    message = f"the {client} client is not installed under {ROOT}: run .ci/install-servers"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run_client(client: str, url: str, version: str, steps: list[dict[str, Any]], *,
               headers: dict[str, str] | None = None, transport: str = "streamable-http") -> dict[str, Any]:
    """Run one client's script on a plan; what it printed, as JSON."""
    _require(client)
    plan = json.dumps({"url": url, "version": version, "headers": headers or {}, "transport": transport,
                       "steps": steps})
    if client == "mcp1":
        argv = [str(rs.mcp1_client_python(ROOT)), str(FIXTURES / "mcp1_client.py"), plan]
    else:
        argv = [str(rs.node22_path(ROOT)), str(FIXTURES / "ts_client.mjs"), str(rs.ts_sdk_dir(ROOT)), plan]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90,
                          env={**os.environ, **rs.OFFLINE_ENV, "PYTHONPATH": ""})
    assert done.returncode == 0, f"{client} client failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("unseen-clients")
    config = {"gateway": {"record": "all", "cache_dir": str(base / "cache")},
              "mcpServers": {"mis": {**fixture_server("misbehaving_server.py"), "call_timeout": 60}}}
    with running_gateway(config, base / "gateway") as running:
        yield running


def _provenance(result: dict[str, Any]) -> dict[str, Any]:
    return result["_meta"]["simgate/provenance"]


def _text(result: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in result["content"])


def _session_gone(gateway: GatewayProcess, session: str, version: str) -> bool:
    """Whether the gateway no longer knows the session (it answers a request naming it 404)."""
    response = httpx.post(gateway.mcp_url("mis"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                          headers={"accept": "application/json, text/event-stream", "mcp-session-id": session,
                                   "mcp-protocol-version": version}, timeout=10, trust_env=False)
    return response.status_code == 404


def _plan(marker: str) -> list[dict[str, Any]]:
    """Steps every client plays: list, a structured call, a tool error, an unknown tool, progress, a marked echo."""
    return [
        {"op": "list"},
        {"op": "call", "tool": "add", "arguments": {"numbers": [1, 2]}},
        {"op": "call", "tool": "fail", "arguments": {"reason": "nope"}},
        {"op": "call", "tool": "nosuch", "arguments": {}},
        {"op": "call", "tool": "progress", "arguments": {"steps": 3}, "progress": True},
        {"op": "call", "tool": "echo", "arguments": {"text": marker}},
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("client", CLIENTS)
def test_a_session_at_each_protocol_version(gateway: GatewayProcess, client: str, version: str) -> None:
    marker = uuid.uuid4().hex  # this test's own recording
    steps = _plan(marker)
    if client == "ts":  # the TS Client cancels on an AbortSignal; then the session goes on
        steps += [{"op": "call", "tool": "sleep", "arguments": {"seconds": 30}, "abortAfterMs": 300},
                  {"op": "call", "tool": "echo", "arguments": {"text": "after the cancel"}}]
    seen = run_client(client, gateway.mcp_url("mis"), version, steps)
    assert seen["version"] == version and seen["server"] == "misbehaving"
    listed, added, failed, unknown, progressed, echoed, *rest = seen["steps"]

    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"echo", "add", "fail", "progress", "sleep"} <= set(tools)
    assert tools["add"]["outputSchema"] == SUM_SCHEMA
    assert tools["echo"]["inputSchema"]["required"] == ["text"]
    assert tools["echo"]["annotations"] == {"readOnlyHint": True}

    assert added["result"]["structuredContent"] == {"total": 3, "terms": 2}
    assert added["result"]["isError"] is False and "resultType" not in added["result"]
    assert failed["result"]["isError"] is True and _text(failed["result"]) == "Error executing tool fail: nope"
    assert unknown["error"]["code"] == -32602
    assert unknown["error"]["message"].endswith("unknown tool 'nosuch' on server 'mis'")
    assert progressed["progress"] == [[1, 3, "step 1"], [2, 3, "step 2"], [3, 3, "step 3"]]
    assert _text(progressed["result"]) == "3 steps"
    assert _provenance(echoed["result"])["source"] == "live" and _text(echoed["result"]) == marker

    if client == "ts":
        cancelled, after = rest
        assert cancelled["error"]["code"] == -32001 and cancelled["ms"] < 5000
        assert _text(after["result"]) == "after the cancel"
        assert seen["terminated"] is True

    # Closing the session (DELETE) ended it at the gateway.
    assert _session_gone(gateway, seen["session"], version)

    # Replay: the recorded call answers from the recording; one never recorded is a precise miss.
    replayed = run_client(client, gateway.mcp_url("mis"), version,
                          [{"op": "call", "tool": "echo", "arguments": {"text": marker}},
                           {"op": "call", "tool": "echo", "arguments": {"text": marker + "-never"}}],
                          headers={"X-Simgate-Mode": "replay"})
    hit, miss = replayed["steps"]
    assert _provenance(hit["result"])["source"] == "cache" and _text(hit["result"]) == marker
    assert hit["result"]["structuredContent"] == {"result": marker}
    assert miss["error"]["code"] == -32003 and "echo" in miss["error"]["message"]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_real_server_through_the_aggregate_endpoint(client: str, tmp_path: Path) -> None:
    _require(client)
    config = {"mcpServers": {"calculator": rs.gateway_server("calculator", tmp_path / "calculator", ROOT),
                             "mis": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path / "gateway") as gateway:
        seen = run_client(client, gateway.mcp_url(), "2025-06-18",
                          [{"op": "list"}, {"op": "call", "tool": "calculator__calculate",
                                            "arguments": {"expression": "6*7"}}])
    listed, called = seen["steps"]
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert {"calculator__calculate", "mis__add"} <= set(tools)
    assert tools["calculator__calculate"]["outputSchema"]["required"] == ["result"]
    assert called["result"]["structuredContent"] == {"result": "42"} and called["result"]["isError"] is False


@pytest.mark.parametrize("client", CLIENTS)
def test_the_legacy_http_sse_transport(gateway: GatewayProcess, client: str) -> None:
    """Clients of protocol 2024-11-05 (or set to an `sse` transport) open `GET .../sse` and POST where it says."""
    marker = uuid.uuid4().hex
    url = f"{gateway.url}/servers/mis/sse"
    seen = run_client(client, url, "2024-11-05", _plan(marker), transport="sse")
    assert seen["version"] == "2024-11-05" and seen["server"] == "misbehaving"
    listed, added, failed, unknown, progressed, echoed = seen["steps"]
    assert {tool["name"]: tool for tool in listed["tools"]}["add"]["outputSchema"] == SUM_SCHEMA
    assert added["result"]["structuredContent"] == {"total": 3, "terms": 2}
    assert failed["result"]["isError"] is True
    assert unknown["error"]["code"] == -32602
    expected = [[1, 3, "step 1"], [2, 3, "step 2"], [3, 3, "step 3"]]
    if client == "ts":
        # The TS Client handles a notification a microtask after a response that came in the same SSE chunk, so
        # a last progress right before its result may be dropped as "for an unknown token" (the wire order is
        # right): what it does hear is in order.
        assert progressed["progress"] and progressed["progress"] == expected[:len(progressed["progress"])]
    else:
        assert progressed["progress"] == expected
    assert _text(progressed["result"]) == "3 steps"
    assert _provenance(echoed["result"])["source"] == "live"

    replayed = run_client(client, url, "2024-11-05", [{"op": "call", "tool": "echo", "arguments": {"text": marker}}],
                          headers={"X-Simgate-Mode": "replay"}, transport="sse")
    assert _provenance(replayed["steps"][0]["result"])["source"] == "cache"

    # The aggregate endpoint has its own: `/sse`, tools under prefixed names.
    aggregate = run_client(client, f"{gateway.url}/sse", "2024-11-05",
                           [{"op": "call", "tool": "mis__echo", "arguments": {"text": "via /sse"}}], transport="sse")
    assert _text(aggregate["steps"][0]["result"]) == "via /sse"

    unknown_server = httpx.get(f"{gateway.url}/servers/nosuch/sse", timeout=10, trust_env=False)
    assert unknown_server.status_code == 404 and unknown_server.json() == {"error": "unknown server 'nosuch'",
                                                                           "known": ["mis"]}



def test_the_legacy_transport_across_replicas(tmp_path: Path) -> None:
    """With `serve --workers 2` the kernel spreads connections over the replicas: a session's POSTs must reach
    the replica that holds its stream, wherever they come in."""
    _require("ts")
    config = {"mcpServers": {"mis": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path / "gateway", serve_args=("--workers", "2")) as gateway:
        assert wait_until(lambda: all(http_ok(f"{gateway.url}/readyz?replica={index}") for index in (0, 1)),
                          timeout=60)
        steps = [{"op": "list"}, {"op": "call", "tool": "echo", "arguments": {"text": "replicated"}}]
        with ThreadPoolExecutor(max_workers=4) as pool:
            runs = list(pool.map(lambda _: run_client("ts", f"{gateway.url}/servers/mis/sse", "2024-11-05", steps,
                                                      transport="sse"), range(6)))
    for seen in runs:
        listed, echoed = seen["steps"]
        assert "echo" in {tool["name"] for tool in listed["tools"]}
        assert _text(echoed["result"]) == "replicated"


def test_a_legacy_session_hears_what_belongs_to_no_request(tmp_path: Path) -> None:
    """An upstream's list changes after a call has returned reach the client sessions of the endpoint, a
    legacy HTTP+SSE one too (the gateway knows it by its `session_id`, as others by their `mcp-session-id`)."""
    _require("ts")
    config = {"mcpServers": {"routing": fixture_server("routing_server.py")}}
    with running_gateway(config, tmp_path / "gateway") as gateway:
        seen = run_client("ts", f"{gateway.url}/servers/routing/sse", "2024-11-05",
                          [{"op": "call", "tool": "announce", "arguments": {"text": "later"}},
                           {"op": "wait", "ms": 1500}], transport="sse")
    assert _text(seen["steps"][0]["result"]) == "announced"
    assert {"notifications/tools/list_changed", "notifications/resources/list_changed"} <= set(seen["notifications"])


def test_a_batch_from_a_2025_03_26_client_is_refused_precisely(gateway: GatewayProcess) -> None:
    """Protocol 2025-03-26 let a client send a JSON-RPC batch; the gateway takes none, and says so."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    with httpx.Client(timeout=10, trust_env=False) as http:
        opened = http.post(gateway.mcp_url("mis"), headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
        session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-03-26"}
        http.post(gateway.mcp_url("mis"), headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        batch = http.post(gateway.mcp_url("mis"), headers=session, json=[
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}])
        assert batch.status_code == 400
        assert batch.json()["error"] == {"code": -32602, "message": "Validation error: JSON-RPC batches are not "
                                         "supported; send one message per POST (protocol 2025-06-18 dropped batching)"}
        # The session goes on.
        single = http.post(gateway.mcp_url("mis"), headers=session,
                           json={"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                                 "params": {"name": "echo", "arguments": {"text": "one"}}})
        assert single.status_code == 200 and '"one"' in single.text
        http.delete(gateway.mcp_url("mis"), headers=session)


@pytest.mark.parametrize("client", CLIENTS)
def test_each_legacy_connection_replays_a_recorded_sequence_from_its_start(gateway: GatewayProcess,
                                                                           client: str) -> None:
    """A stateful tool replays in sequence, from the first call for each client connection that names the
    recorded session: a legacy HTTP+SSE connection is one such connection."""
    name = f"sequence-{uuid.uuid4().hex}"
    steps = [{"op": "call", "tool": "counter"}, {"op": "call", "tool": "counter"}]
    recorded = run_client(client, gateway.mcp_url("mis"), "2025-06-18", steps, headers={"X-Simgate-Session": name})
    counts = [step["result"]["structuredContent"]["result"] for step in recorded["steps"]]
    for _ in range(2):
        replayed = run_client(client, f"{gateway.url}/servers/mis/sse", "2024-11-05", steps, transport="sse",
                              headers={"X-Simgate-Session": name, "X-Simgate-Mode": "replay"})
        assert [step["result"]["structuredContent"]["result"] for step in replayed["steps"]] == counts


def test_a_legacy_session_is_held_to_its_api_key(tmp_path: Path) -> None:
    """Over HTTP+SSE, as over streamable HTTP: no key, no stream; a key sees and calls only its servers."""
    _require("mcp1")
    keys = KeyStore(tmp_path / "keys.json")
    _, narrow = keys.create("narrow", servers=["mis"])
    config = {"gateway": {"keys_path": str(tmp_path / "keys.json")},
              "mcpServers": {"mis": fixture_server("misbehaving_server.py"),
                             "routing": fixture_server("routing_server.py")}}
    with running_gateway(config, tmp_path / "gateway") as gateway:
        refused = httpx.get(f"{gateway.url}/sse", timeout=10, trust_env=False)
        assert refused.status_code == 401
        posted = httpx.post(f"{gateway.url}/messages/?session_id={uuid.uuid4().hex}", json={}, timeout=10,
                            trust_env=False)
        assert posted.status_code == 401
        seen = run_client("mcp1", f"{gateway.url}/sse", "2024-11-05", [
            {"op": "list"},
            {"op": "call", "tool": "mis__echo", "arguments": {"text": "mine"}},
            {"op": "call", "tool": "routing__announce", "arguments": {"text": "not mine"}},
        ], headers={"Authorization": f"Bearer {narrow}"}, transport="sse")
        other = httpx.get(f"{gateway.url}/servers/routing/sse", timeout=10, trust_env=False,
                          headers={"Authorization": f"Bearer {narrow}"})
    listed, mine, theirs = seen["steps"]
    assert {tool["name"].partition("__")[0] for tool in listed["tools"]} == {"mis"}
    assert _text(mine["result"]) == "mine"
    assert theirs["error"]["code"] in (-32602, -32007), theirs
    assert other.status_code == 403


def _sessions_gauge(gateway: GatewayProcess, endpoint: str) -> float:
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10, trust_env=False).text
    line = next(line for line in metrics.splitlines()
                if line.startswith(f'simgate_downstream_sessions{{endpoint="{endpoint}"}}'))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.anyio
async def test_a_legacy_session_counts_among_the_live_sessions_while_its_stream_is_open(
        gateway: GatewayProcess) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.sse import sse_client

    before = _sessions_gauge(gateway, "/servers/mis/mcp")
    async with sse_client(f"{gateway.url}/servers/mis/sse") as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert _text((await session.call_tool("echo", {"text": "counted"})).model_dump()) == "counted"
        assert _sessions_gauge(gateway, "/servers/mis/mcp") == before + 1
    assert wait_until(lambda: _sessions_gauge(gateway, "/servers/mis/mcp") == before, timeout=10)
