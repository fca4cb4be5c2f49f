"""What `/readyz` waits for: every server by default, any one, a named set (config or query) — so a
gateway serving 34 of 37 servers can say it is ready for what its users need."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from harness import fixture_server, running_gateway, wait_until

from simgate.gateway.config import parse_config
from simgate.gateway.errors import ConfigError

BROKEN = {"command": "/bin/false"}  # exits at once: never ready


def _status(url: str, query: str = "") -> tuple[int, dict]:
    answer = httpx.get(f"{url}/readyz{query}", timeout=5)
    return answer.status_code, answer.json()


@pytest.mark.parametrize("ready_when", ["all", "any", ["good"]])
def test_readyz_waits_for_what_the_config_names(tmp_path: Path, ready_when: object) -> None:
    config = {"gateway": {"ready_when": ready_when},
              "mcpServers": {"good": fixture_server("raw_stdio_server.py"), "broken": BROKEN}}
    with running_gateway(config, tmp_path / "gw", wait_ready=False) as gateway:
        assert wait_until(lambda: _status(gateway.url)[1]["servers"]["good"] == "ready", timeout=60)
        code, body = _status(gateway.url)
        assert body["servers"]["broken"] != "ready"
        assert code == (503 if ready_when == "all" else 200) and body["ready"] is (ready_when != "all")
        # A client may ask for its own set, whatever the config says.
        assert _status(gateway.url, "?servers=good")[0] == 200
        assert _status(gateway.url, "?servers=good,broken")[0] == 503
        code, body = _status(gateway.url, "?servers=nope")
        assert code == 400 and body["known"] == ["broken", "good"]


def test_ready_when_must_name_configured_servers() -> None:
    config = {"gateway": {"ready_when": ["good", "typo"]}, "mcpServers": {"good": BROKEN}}
    with pytest.raises(ConfigError, match="gateway.ready_when names no server 'typo'"):
        parse_config(json.dumps(config), source="c.json", json_only=True)


def test_a_server_that_serves_http_instead_of_stdio_is_named_so_when_its_startup_times_out(tmp_path: Path) -> None:
    # Its default transport is HTTP (a FastMCP server started without its stdio option): the startup timeout's
    # error says so from its stderr, instead of only "timed out".
    config = {"mcpServers": {"web": {**fixture_server("http_only_server.py"), "startup_timeout": 2,
                                     "max_restart_backoff": 30}}}
    with running_gateway(config, tmp_path / "gw", wait_ready=False) as gateway:
        def last_error() -> str:
            servers = httpx.get(f"{gateway.url}/admin/servers", timeout=5).json()["servers"]
            return next(s for s in servers if s["name"] == "web").get("last_error") or ""

        assert wait_until(lambda: "startup timeout" in last_error(), timeout=30)
        error = last_error()
        assert "it serves HTTP (http://127.0.0.1:" in error and "--transport stdio" in error, error
        assert _status(gateway.url)[0] == 503


def test_a_server_that_serves_http_instead_of_stdio_fails_its_start_after_the_grace_not_the_startup_timeout(
        tmp_path: Path) -> None:
    # Its stderr announces an HTTP listener: no stdio handshake will come, so the start is given up `http_grace`
    # after that line, well before the (long) startup timeout, and the server is `failed` with the reason.
    config = {"mcpServers": {"web": {**fixture_server("http_only_server.py"), "startup_timeout": 60,
                                     "http_grace": 2}}}
    with running_gateway(config, tmp_path / "gw", wait_ready=False) as gateway:
        started = time.monotonic()

        def web() -> dict:
            servers = httpx.get(f"{gateway.url}/admin/servers", timeout=5).json()["servers"]
            return next(s for s in servers if s["name"] == "web")

        assert wait_until(lambda: "it serves HTTP" in (web().get("last_error") or ""), timeout=15), web()
        assert time.monotonic() - started < 15
        status = web()
        assert status["state"] == "failed", status
        assert status["last_error"].startswith("it serves HTTP (http://127.0.0.1:"), status
        assert "--transport stdio" in status["last_error"] and "startup timeout" not in status["last_error"]
        assert "Traceback" not in gateway.log_text()


def test_http_grace_must_be_positive() -> None:
    config = {"mcpServers": {"web": {"command": "x", "http_grace": 0}}}
    with pytest.raises(ConfigError, match="http_grace"):
        parse_config(json.dumps(config), source="c.json", json_only=True)
