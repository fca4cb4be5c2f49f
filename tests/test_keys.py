"""Client API keys: `simgate keys`, Bearer authentication, per-key tool filtering and rate limits.

A real gateway process in front of the conformance fixture (tools, prompts, resources) and the real
calculator server from PyPI; clients are the real `mcp` SDK client and plain HTTP requests.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import real_servers as rs
from harness import REPO_ROOT, fixture_server, free_port, http_ok, mcp_session, running_gateway, wait_until
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

ROOT = rs.default_install_root()
FORBIDDEN = -32007
RATE_LIMITED = -32006


def _keys(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simgate", "keys", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)


def _create(workdir: Path, *args: str) -> str:
    created = _keys(workdir, "create", "--config", "simgate.json", *args)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sgk_") and "only time it is shown" in created.stderr
    return key


def _config(tmp_path: Path) -> dict[str, Any]:
    return {"gateway": {"state_dir": str(tmp_path / "state")},
            "mcpServers": {"alpha": fixture_server("conformance_server.py"),
                           "calc": rs.gateway_server("calculator", tmp_path / "calc", ROOT)}}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _post_initialize(url: str, headers: dict[str, str]) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    return httpx.post(url, json=body, headers={"Accept": "application/json, text/event-stream", **headers},
                      timeout=10, trust_env=False)


def test_keys_cli_stores_only_a_hash(tmp_path: Path) -> None:
    (tmp_path / "simgate.json").write_text(json.dumps({"gateway": {"state_dir": "st"},
                                                       "mcpServers": {"a": {"command": "true"}}}))
    key = _create(tmp_path, "agent-1", "--servers", "a", "--tools", "read_*,a/write", "--rate", "5")
    keys_file = tmp_path / "st" / "keys.json"
    text = keys_file.read_text()
    # sgk_{id}_{secret}: the secret (base64url, which may itself hold "_") must not be in the file
    secret = key.split("_", 2)[2]
    assert key not in text and secret not in text
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    record = json.loads(text)["keys"][0]
    assert record["name"] == "agent-1" and record["servers"] == ["a"] and record["tools"] == ["read_*", "a/write"]
    assert record["rate_limit"] == {"rate": 5.0, "burst": 5}

    listed = _keys(tmp_path, "list", "--config", "simgate.json", "--json")
    assert listed.returncode == 0 and key not in listed.stdout and "sha256" not in listed.stdout
    assert [entry["name"] for entry in json.loads(listed.stdout)] == ["agent-1"]

    # Bad input: a server the config lacks, a duplicate name, a revoked unknown key.
    unknown = _keys(tmp_path, "create", "--config", "simgate.json", "x", "--servers", "nope")
    assert unknown.returncode == 2 and "'nope'" in unknown.stderr and "Traceback" not in unknown.stderr
    duplicate = _keys(tmp_path, "create", "--config", "simgate.json", "agent-1", "--servers", "a")
    assert duplicate.returncode == 2 and "exists already" in duplicate.stderr
    assert _keys(tmp_path, "rm", "--config", "simgate.json", "ghost").returncode == 2

    removed = _keys(tmp_path, "rm", "--config", "simgate.json", "agent-1")
    assert removed.returncode == 0 and json.loads(keys_file.read_text())["keys"] == []


def test_a_broken_key_file_stops_the_gateway_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "keys.json").write_text('{"keys": [{"id": 1}]}')
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {}}))
    started = subprocess.run([sys.executable, "-m", "simgate", "serve", str(config), "--port", str(free_port())],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, check=False)
    assert started.returncode == 2
    assert "keys.json is not valid at keys.0" in started.stderr and "Traceback" not in started.stderr


async def test_keys_admit_filter_and_limit_clients(tmp_path: Path) -> None:
    workdir = tmp_path / "gw"
    workdir.mkdir()
    config = _config(tmp_path)
    (workdir / "simgate.json").write_text(json.dumps(config))
    narrow = _create(workdir, "narrow", "--servers", "alpha", "--tools", "test_simple_text,alpha/test_error_*")
    admin = _create(workdir, "ops", "--servers", "*", "--admin", "--rate", "1", "--burst", "2")

    with running_gateway(config, workdir) as gateway:
        # Missing and wrong keys: 401 with a Bearer challenge, before any MCP handling.
        missing = _post_initialize(gateway.mcp_url(), {})
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert "requires an API key" in missing.json()["error"]
        wrong = _post_initialize(gateway.mcp_url(), _bearer(narrow[:-4] + "AAAA"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid API key"
        assert _post_initialize(gateway.mcp_url(), _bearer(narrow)).status_code == 200
        # Probes stay open; the admin API and other servers' endpoints need the right key.
        assert http_ok(f"{gateway.url}/healthz") and http_ok(f"{gateway.url}/metrics")
        assert httpx.get(f"{gateway.url}/admin/servers", headers=_bearer(narrow)).status_code == 403
        assert httpx.get(f"{gateway.url}/admin/servers", headers=_bearer(admin)).status_code == 200
        assert _post_initialize(gateway.mcp_url("calc"), _bearer(narrow)).status_code == 403

        async with mcp_session(gateway.mcp_url(), headers=_bearer(narrow)) as session:
            names = sorted(tool.name for tool in (await session.list_tools()).tools)
            assert names == ["alpha__test_error_handling", "alpha__test_simple_text"]
            assert (await session.call_tool("alpha__test_simple_text", {})).content[0].text  # allowed
            for outside in ("alpha__test_image_content", "calc__calculate"):
                with pytest.raises(MCPError) as refused:
                    await session.call_tool(outside, {"expression": "1+1"} if "calc" in outside else {})
                assert refused.value.code == FORBIDDEN and "'narrow' may not call tool" in refused.value.message
            prompts = [prompt.name for prompt in (await session.list_prompts()).prompts]
            assert prompts and all(name.startswith("alpha__") for name in prompts)

        async with mcp_session(gateway.mcp_url(), headers=_bearer(admin)) as session:
            assert len((await session.list_tools()).tools) > 2
            answers = [await session.call_tool("calc__calculate", {"expression": "6*7"}) for _ in range(2)]
            assert all("42" in answer.content[0].text for answer in answers)
            with pytest.raises(MCPError) as limited:  # the key's own bucket: burst 2, 1/s
                await session.call_tool("calc__calculate", {"expression": "6*7"})
            assert limited.value.code == RATE_LIMITED and limited.value.data["retry_after"] > 0

        # A key made while the gateway runs works at once; a revoked one stops working at once.
        late = _create(workdir, "late", "--servers", "calc")
        async with mcp_session(gateway.mcp_url("calc"), headers=_bearer(late)) as session:
            assert "42" in (await session.call_tool("calculate", {"expression": "6*7"})).content[0].text
        assert _keys(workdir, "rm", "--config", "simgate.json", "late").returncode == 0
        assert wait_until(lambda: _post_initialize(gateway.mcp_url("calc"), _bearer(late)).status_code == 401)

        log = gateway.log_text()
    for key in (narrow, admin, late):
        assert key not in log


def test_a_non_loopback_bind_is_allowed_once_keys_exist(tmp_path: Path) -> None:
    config = tmp_path / "simgate.json"
    config.write_text(json.dumps({"gateway": {"state_dir": "st"}, "mcpServers": {}}))
    _create(tmp_path, "remote", "--servers", "*")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "simgate", "serve", str(config), "--host", "0.0.0.0",
                                "--port", str(port)], cwd=tmp_path, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        assert wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz") or process.poll() is not None,
                          timeout=30)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert _post_initialize(f"http://127.0.0.1:{port}/mcp", {}).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(("host", "serve_args", "key_at_start", "after_last_removed"), [
    ("0.0.0.0", (), True, 403),  # non-loopback: the last key's removal must not open the gateway to anyone
    ("127.0.0.1", (), True, 403),  # loopback too: once keys are in use, they stay required
    ("127.0.0.1", (), False, 403),  # ... also when the first key was created while the gateway ran
    ("0.0.0.0", ("--insecure",), True, 200),  # --insecure: serving without keys was asked for
], ids=["non-loopback", "loopback", "loopback-key-made-later", "insecure"])
def test_removing_the_last_key_fails_closed(tmp_path: Path, host: str, serve_args: tuple[str, ...],
                                            key_at_start: bool, after_last_removed: int) -> None:
    config: dict[str, Any] = {"gateway": {"state_dir": "st"}, "mcpServers": {}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    key = _create(tmp_path, "only", "--servers", "*", "--admin") if key_at_start else None
    # Traffic goes to 127.0.0.1 only, whatever address the gateway listens on.
    with running_gateway(config, tmp_path, host=host, serve_args=serve_args) as gateway:
        if key is None:
            assert _post_initialize(gateway.mcp_url(), {}).status_code == 200  # no keys yet: open on loopback
            key = _create(tmp_path, "only", "--servers", "*", "--admin")
        assert wait_until(lambda: _post_initialize(gateway.mcp_url(), {}).status_code == 401)
        assert _post_initialize(gateway.mcp_url(), _bearer(key)).status_code == 200
        assert httpx.get(f"{gateway.url}/admin/servers", headers=_bearer(key)).status_code == 200

        removed = _keys(tmp_path, "rm", "--config", "simgate.json", "only")
        assert removed.returncode == 0 and "that was the last key" in removed.stderr
        assert wait_until(lambda: _post_initialize(gateway.mcp_url(), {}).status_code == after_last_removed)
        change = {"mode": "replay"}
        if after_last_removed == 403:
            for headers in ({}, _bearer(key)):  # nobody, not even the removed key's holder
                refused = _post_initialize(gateway.mcp_url(), headers)
                assert refused.status_code == 403 and "no API keys are configured" in refused.json()["error"]
                assert httpx.get(f"{gateway.url}/admin/servers", headers=headers).status_code == 403
                assert httpx.put(f"{gateway.url}/admin/modes", json=change, headers=headers).status_code == 403
            assert httpx.get(f"{gateway.url}/admin/modes").status_code == 403
            assert http_ok(f"{gateway.url}/healthz") and http_ok(f"{gateway.url}/metrics")  # probes stay open
            assert "the last client API key is gone" in gateway.log_text()
            # A new key restores service, for its holder only.
            fresh = _create(tmp_path, "fresh", "--servers", "*")
            assert wait_until(lambda: _post_initialize(gateway.mcp_url(), _bearer(fresh)).status_code == 200)
            assert _post_initialize(gateway.mcp_url(), {}).status_code == 401
        else:
            assert httpx.put(f"{gateway.url}/admin/modes", json=change).status_code == 200
