"""Config loading: client configs accepted as they are; bad configs get one precise message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from harness import REPO_ROOT

from simgate.gateway.config import load_config, parse_config
from simgate.gateway.errors import ConfigError

CLAUDE_DESKTOP = {
    "mcpServers": {
        "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                       "env": {"DEBUG": "1"}, "disabled": False, "autoApprove": ["read_file"]},
        "remote": {"type": "http", "url": "https://example.invalid/mcp", "headers": {"X-Key": "k"}},
        "cursor-style": {"url": "http://127.0.0.1:9/mcp"},
    }
}


def test_client_config_is_accepted_unchanged() -> None:
    config = parse_config(json.dumps(CLAUDE_DESKTOP), json_only=True)
    assert config.servers["filesystem"].transport == "stdio"
    assert config.servers["filesystem"].env == {"DEBUG": "1"}
    assert config.servers["remote"].transport == "http"
    assert config.servers["remote"].headers == {"X-Key": "k"}
    assert config.servers["cursor-style"].transport == "http"
    assert set(config.active_servers) == {"filesystem", "remote", "cursor-style"}


def test_vscode_servers_section_and_disabled_servers() -> None:
    config = parse_config('servers:\n  a: {type: stdio, command: x}\n  b: {command: y, disabled: true}\n'
                          '  c: {command: z, enabled: false}\n')
    assert set(config.servers) == {"a", "b", "c"} and set(config.active_servers) == {"a"}


def test_simgate_superset_fields() -> None:
    config = parse_config("gateway: {port: 9000}\nmcpServers:\n  a:\n    command: x\n    call_timeout: 5\n"
                          "    tools: {allow: ['get_*'], deny: ['get_secret']}\n")
    server = config.servers["a"]
    assert config.gateway.port == 9000 and server.call_timeout == 5
    assert server.tools.permits("get_time") and not server.tools.permits("get_secret")
    assert not server.tools.permits("set_time")


def test_environment_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMGATE_TEST_ROOT", "/data")
    config = parse_config('mcpServers: {a: {command: x, args: ["${SIMGATE_TEST_ROOT}/db", "${MISSING_VAR:-fallback}"]}}')
    assert config.servers["a"].args == ["/data/db", "fallback"]
    with pytest.raises(ConfigError, match=r"server 'a': environment variable NOT_SET_ANYWHERE is not set"):
        parse_config('mcpServers: {a: {command: "${NOT_SET_ANYWHERE}"}}', source="c.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ('{"mcpServers": {"a": {"command": "x", "args": "not-a-list"}}}',
     "c.json: server 'a', field 'args': Input should be a valid list"),
    ('{"mcpServers": {"a": {"command": "x", "call_timeout": 0}}}',
     "c.json: server 'a', field 'call_timeout': Input should be greater than 0"),
    ('{"mcpServers": {"a": {"args": []}}}', "c.json: server 'a': needs 'command'"),
    ('{"mcpServers": {"a": {"url": "ftp://x"}}}', "c.json: server 'a': url must start with http"),
    ('{"mcpServers": {"a": {"type": "sse", "url": "http://x/sse"}}}', "legacy SSE transport is not supported"),
    ('{"mcpServers": {"a": {"type": "carrier-pigeon", "command": "x"}}}', "unknown type 'carrier-pigeon'"),
    ('{"mcpServers": []}', "c.json: 'mcpServers' must be a mapping"),
    ('{"gateway": {"port": 70000}, "mcpServers": {}}', "c.json: field 'gateway.port'"),
    ('{"gateway": {"prot": 1}, "mcpServers": {}}', "c.json: field 'gateway.prot': Extra inputs"),
    ('{"mcpServers": {"a": {"command": "x"}', "c.json: invalid JSON at line 1"),
    ('{}', "c.json: no 'mcpServers' section"),
])
def test_bad_configs_name_file_server_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="c.json", json_only=True)
    assert message in str(error.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simgate", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)


def test_config_check_command(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(CLAUDE_DESKTOP))
    ok = _cli("config", "check", str(good))
    assert ok.returncode == 0 and "ok, 3 server(s), 3 enabled" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcpServers:\n  broken: {command: 5, args: nope}\n")
    failed = _cli("config", "check", str(bad))
    assert failed.returncode == 2
    assert f"{bad}: server 'broken', field 'args'" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_serve_refuses_a_bad_config_without_starting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {"good": {"command": "true"}, "bad": {"url": 1}}}')
    result = _cli("serve", str(bad), "--port", "0")
    assert result.returncode == 2 and "server 'bad'" in result.stderr and "Traceback" not in result.stderr


def test_a_non_loopback_bind_is_refused_without_insecure(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text('{"mcpServers": {}}')
    refused = _cli("serve", str(config), "--host", "0.0.0.0", "--port", "0")
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0" in refused.stderr and "--insecure" in refused.stderr
    # With --insecure it starts (and is stopped here as soon as it answers).
    from harness import free_port, wait_until

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "simgate", "serve", str(config), "--host", "0.0.0.0",
                                "--port", str(port), "--insecure"], cwd=tmp_path, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(healthy, timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`simgate config check big.json | head -1`: exit 141 as for SIGPIPE, no traceback."""
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"mcpServers": {f"server{i}": {"command": "true"} for i in range(6000)}}))
    process = subprocess.Popen([sys.executable, "-m", "simgate", "config", "check", str(big)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # the reader is gone before the rest (far more than a pipe holds) is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert b"ok, 6000 server(s)" in first
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
