"""Network allowlists: a server under bubblewrap keeps no network of its own and reaches only the
host:port pairs of its allowlist, through the gateway's egress proxy. Every target is on loopback."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from harness import GatewayProcess, fixture_server, mcp_session, running_gateway

from simgate.gateway.config import parse_config
from simgate.gateway.errors import ConfigError
from simgate.sandboxes.egress.allowlist import NetworkAllow
from simgate.sandboxes.egress.proxy import serving_proxy
from simgate.sandboxes.policy import SandboxPolicy


class HostServer:
    """A real HTTP server on the host's loopback that counts the requests reaching it."""

    def __init__(self) -> None:
        hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = f"hello from {self.server.server_address[1]}".encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.hits = hits
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[HostServer, HostServer]]:
    allowed, other = HostServer(), HostServer()
    yield allowed, other
    allowed.close()
    other.close()


# ------------------------------------------------------------------ policy validation


def test_policy_accepts_allowlists_and_keeps_none_and_host() -> None:
    assert SandboxPolicy().network == "none"
    assert SandboxPolicy(backend="bwrap", network="host").network == "host"
    policy = SandboxPolicy.model_validate({"backend": "bwrap", "network": {"allow": [
        "API.Example.com:443", "127.0.0.1:8080", "[::1]:9000", "*.example.org:443"]}})
    assert isinstance(policy.network, NetworkAllow)
    assert policy.network.allow == ["api.example.com:443", "127.0.0.1:8080", "[::1]:9000", "*.example.org:443"]
    assert policy.network.permits("api.EXAMPLE.com", 443) and not policy.network.permits("api.example.com", 80)
    assert policy.network.permits("a.example.org", 443) and not policy.network.permits("example.org", 443)
    assert policy.network.permits("::1", 9000) and not policy.network.permits("127.0.0.2", 8080)


@pytest.mark.parametrize(("network", "backend", "message"), [
    ({"allow": ["example.com"]}, "bwrap", "field 'sandbox.network': allow: 'example.com' must be 'host:port'"),
    ({"allow": ["example.com:0"]}, "bwrap", "'example.com:0': the port must be a number from 1 to 65535"),
    ({"allow": ["exa mple.com:80"]}, "bwrap", "'exa mple.com' is not a host name or an IP address"),
    ({"deny": ["a:1"]}, "bwrap", "field 'sandbox.network': "),
    ("open", "bwrap", "network must be 'none', 'host' or {allow: ['host:port', ...]}, got 'open'"),
    ({"allow": ["127.0.0.1:80"]}, "none", "network.allow needs a sandbox backend that cuts the network off"),
])
def test_bad_network_policies_are_named(network: Any, backend: str, message: str) -> None:
    config = {"mcpServers": {"a": {"command": "x", "sandbox": {"backend": backend, "network": network}}}}
    with pytest.raises(ConfigError) as error:
        parse_config(json.dumps(config), source="c.json", json_only=True)
    assert "c.json: server 'a'" in str(error.value) and message in str(error.value), str(error.value)


# ------------------------------------------------------------------ the proxy itself (in process, real sockets)


async def _ask(socket_path: Path, request: bytes) -> bytes:
    async with await anyio.connect_unix(socket_path) as stream:
        await stream.send(request)
        chunks = []
        with anyio.fail_after(10):
            async for chunk in stream:
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and request.startswith(b"CONNECT") and b" 200 " in chunks[0]:
                    break
        return b"".join(chunks)


@pytest.mark.anyio
async def test_proxy_decides_by_allowlist(hosts: tuple[HostServer, HostServer]) -> None:
    allowed, other = hosts
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: a refused connection
    allow = NetworkAllow(allow=[f"127.0.0.1:{allowed.port}", f"127.0.0.1:{closed_port}"])
    async with serving_proxy("unit", allow) as (proxy, path):
        assert len(str(path)) < 100 and path.is_socket()
        answer = await _ask(path, f"GET http://127.0.0.1:{allowed.port}/plain?q=1 HTTP/1.1\r\n"
                                  f"Host: 127.0.0.1:{allowed.port}\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.") and b" 200 " in answer and answer.endswith(
            f"hello from {allowed.port}".encode())
        denied = await _ask(path, f"CONNECT 127.0.0.1:{other.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert denied.startswith(b"HTTP/1.1 403 Forbidden") and b"not in the allowlist of server 'unit'" in denied
        direct = await _ask(path, b"GET /not-a-proxy-request HTTP/1.1\r\nHost: x\r\n\r\n")
        assert direct.startswith(b"HTTP/1.1 400 ")
        tls_form = await _ask(path, f"GET https://127.0.0.1:{allowed.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert tls_form.startswith(b"HTTP/1.1 400 ") and b"use CONNECT for https" in tls_form
        refused = await _ask(path, f"CONNECT 127.0.0.1:{closed_port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert refused.startswith(b"HTTP/1.1 502 ")
    closed.close()
    assert proxy.decisions == {"allowed": 1, "denied": 3, "failed": 1}
    assert not path.exists() and not path.parent.exists()
    assert other.hits == [] and allowed.hits == ["/plain?q=1"]


# ------------------------------------------------------------------ through a real gateway, under each backend

@pytest.fixture(scope="module", params=["bwrap", "docker"])
def gateway(request: pytest.FixtureRequest, hosts: tuple[HostServer, HostServer],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    sandbox: dict[str, Any] = {"backend": request.param}
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    if request.param == "docker":  # a private engine (tests/docker_engine.py), skipped only outside CI
        sandbox["docker_host"] = request.getfixturevalue("docker_engine").host
    allowed, _ = hosts
    servers = {
        "allowed": {**fixture_server("egress_server.py"),
                    "sandbox": {**sandbox, "network": {"allow": [f"127.0.0.1:{allowed.port}"]}}},
        "offline": {**fixture_server("egress_server.py"), "sandbox": {**sandbox, "network": "none"}},
    }
    with running_gateway({"mcpServers": servers}, tmp_path_factory.mktemp("egress")) as running:
        yield running


async def _call(gateway: GatewayProcess, server: str, tool: str, arguments: dict[str, Any]) -> str:
    async with mcp_session(gateway.mcp_url(server)) as session:
        with anyio.fail_after(60):
            result = await session.call_tool(tool, arguments)
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


@pytest.mark.anyio
async def test_allowlisted_target_answers(gateway: GatewayProcess, hosts: tuple[HostServer, HostServer]) -> None:
    allowed, _ = hosts
    env = await _call(gateway, "allowed", "proxy_env", {})
    assert "HTTP_PROXY=http://127.0.0.1:" in env and "NO_PROXY= " not in env and env.endswith("NO_PROXY=")
    answer = await _call(gateway, "allowed", "fetch", {"url": f"http://127.0.0.1:{allowed.port}/via-proxy"})
    assert answer == f"STATUS 200: hello from {allowed.port}"
    tunneled = await _call(gateway, "allowed", "tunnel", {"host": "127.0.0.1", "port": allowed.port})
    assert tunneled == f"STATUS 200: hello from {allowed.port}"  # CONNECT, as for https
    assert "/via-proxy" in allowed.hits


@pytest.mark.anyio
async def test_other_targets_are_refused(gateway: GatewayProcess, hosts: tuple[HostServer, HostServer]) -> None:
    _, other = hosts
    answer = await _call(gateway, "allowed", "fetch", {"url": f"http://127.0.0.1:{other.port}/nope"})
    assert answer.startswith("HTTP 403: simgate: egress to 127.0.0.1:"), answer
    assert f"{other.port} is not in the allowlist of server 'allowed'" in answer
    tunneled = await _call(gateway, "allowed", "tunnel", {"host": "127.0.0.1", "port": other.port})
    assert tunneled == "FAILED: Tunnel connection failed: 403 Forbidden"
    assert other.hits == []
    log = gateway.log_text()
    assert f"egress denied: server allowed GET http://127.0.0.1:{other.port}" in log
    assert f"egress denied: server allowed CONNECT 127.0.0.1:{other.port}" in log
    assert "/nope" not in log  # paths and queries are not logged
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(gateway.url + "/metrics")).text
    denied = [line for line in metrics.splitlines()
              if line.startswith('simgate_egress_decisions_total{decision="denied",server="allowed"}')]
    assert denied and float(denied[0].split()[-1]) >= 2, metrics


@pytest.mark.anyio
async def test_network_none_cannot_connect_at_all(gateway: GatewayProcess,
                                                  hosts: tuple[HostServer, HostServer]) -> None:
    allowed, _ = hosts
    before = len(allowed.hits)
    answer = await _call(gateway, "offline", "fetch", {"url": f"http://127.0.0.1:{allowed.port}/direct"})
    assert answer.startswith("FAILED: "), answer  # its loopback is its own: nothing listens there
    assert len(allowed.hits) == before


@pytest.mark.anyio
async def test_proxy_caps_open_connections(hosts: tuple[HostServer, HostServer]) -> None:
    allowed, _ = hosts
    async with serving_proxy("capped", NetworkAllow(allow=[f"127.0.0.1:{allowed.port}"])) as (proxy, path):
        proxy._max_connections = 1  # the cap, made small enough to reach
        async with await anyio.connect_unix(path):  # holds the only slot (sends nothing)
            await anyio.sleep(0.2)
            over = await _ask(path, f"GET http://127.0.0.1:{allowed.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert over.startswith(b"HTTP/1.1 503 ") and over.endswith(b"simgate: too many connections\n")
        await anyio.sleep(0.2)
        again = await _ask(path, f"GET http://127.0.0.1:{allowed.port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b" 200 " in again.split(b"\r\n", 1)[0]
    assert proxy.decisions["refused"] == 1 and proxy.decisions["allowed"] == 1
