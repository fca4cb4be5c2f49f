"""A `tools/call` that nothing but its result can follow is answered with one JSON body; anything that
may need the request's stream (progress, or a client that takes sampling/elicitation/roots) keeps SSE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from harness import fixture_server, running_gateway

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _session(url: str, capabilities: dict[str, Any]) -> dict[str, str]:
    opened = httpx.post(url, headers=ACCEPT, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": capabilities,
                   "clientInfo": {"name": "t", "version": "1"}}})
    headers = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    assert httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
                      ).status_code == 202
    return headers


def _call(url: str, headers: dict[str, str], request_id: int, meta: dict[str, Any] | None = None) -> httpx.Response:
    params: dict[str, Any] = {"name": "echo", "arguments": {"text": f"hi {request_id}"}}
    if meta:
        params["_meta"] = meta
    return httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                                  "params": params})


def _result(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("application/json"):
        return json.loads(response.text)
    data = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    return json.loads(data[-1])


def test_json_only_when_nothing_else_can_belong_to_the_request(tmp_path: Path) -> None:
    with running_gateway({"mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, tmp_path) as gateway:
        url = gateway.mcp_url("fx")
        plain = _session(url, {})
        kinds = []
        for request_id in (1, 2, 3):
            response = _call(url, plain, request_id)
            assert _result(response)["result"]["content"][0]["text"] == f"hi {request_id}"
            kinds.append(response.headers["content-type"].split(";")[0])
        # The first call makes the session known to the gateway; from then on: one JSON body.
        assert kinds == ["text/event-stream", "application/json", "application/json"]
        with_progress = _call(url, plain, 4, {"progressToken": "p-4"})
        assert with_progress.headers["content-type"].startswith("text/event-stream")
        assert _result(with_progress)["result"]["content"][0]["text"] == "hi 4"

        sampling = _session(url, {"sampling": {}})
        for request_id in (5, 6):
            response = _call(url, sampling, request_id)
            assert response.headers["content-type"].startswith("text/event-stream")
            assert _result(response)["result"]["content"][0]["text"] == f"hi {request_id}"

        # Bad input still gets the SDK's answers, whichever way the body was read.
        broken = httpx.post(url, headers=plain, content=b"{not json")
        assert broken.status_code == 400 and "Parse error" in broken.text
