"""A `tools/call` that nothing but its result can follow is answered directly, with one JSON body; anything
that may need the request's stream (progress, or a client that takes sampling/elicitation/roots) goes
through the SDK's transport (SSE). Both ways give the same answers and errors."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
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


def _call(url: str, headers: dict[str, str], request_id: int, meta: dict[str, Any] | None = None,
          tool: str = "echo", arguments: Any = None) -> httpx.Response:
    params: dict[str, Any] = {"name": tool, "arguments": {"text": f"hi {request_id}"} if arguments is None else arguments}
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
        # The session is known from its `notifications/initialized` on (which the SDK handles after its 202,
        # so the very first call may still come first): one JSON body.
        assert kinds[1:] == ["application/json", "application/json"]
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


def test_a_session_is_known_from_its_handshake(tmp_path: Path) -> None:
    """Its very first call is answered directly (the gateway met it at `notifications/initialized`)."""
    with running_gateway({"mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, tmp_path) as gateway:
        url = gateway.mcp_url("fx")
        headers = _session(url, {})
        time.sleep(0.5)  # the SDK handles the notification after answering it 202
        first = _call(url, headers, 1)
        assert first.headers["content-type"].startswith("application/json")
        assert _result(first)["result"]["content"][0]["text"] == "hi 1"


def _same_call(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what differs between two calls: their latency and session."""
    provenance = answer.get("result", {}).get("_meta", {}).get("simgate/provenance")
    if provenance is not None:
        assert provenance.pop("latency_ms") >= 0
        provenance.pop("session", None)
    return answer


def test_direct_and_sdk_answers_are_the_same(tmp_path: Path) -> None:
    """Results, tool errors, gateway errors and SDK-level errors: byte for byte the same JSON-RPC answers."""
    cases: list[tuple[str, Any]] = [
        ("echo", {"text": "same"}),
        ("add", {"numbers": [1, 2.5]}),  # structured output
        ("fail", {"reason": "on purpose"}),  # isError result
        ("echo", {"text": 5}),  # -32602 from the gateway's argument validation
        ("no_such_tool", {}),  # -32602 naming the tool
        ("echo", "not an object"),  # params the SDK's surface validation rejects
    ]
    with running_gateway({"mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, tmp_path) as gateway:
        url = gateway.mcp_url("fx")
        direct, through_sdk = _session(url, {}), _session(url, {"roots": {}})
        _call(url, direct, 0)  # the gateway meets the session on its first call
        for number, (tool, arguments) in enumerate(cases, start=1):
            answers = [_call(url, headers, number, tool=tool, arguments=arguments) for headers in (direct, through_sdk)]
            kinds = [answer.headers["content-type"].split(";")[0] for answer in answers]
            assert kinds == ["application/json", "text/event-stream"], (tool, kinds)
            assert _same_call(_result(answers[0])) == _same_call(_result(answers[1])), (tool, arguments)
            assert all(answer.headers["mcp-session-id"] for answer in answers)


def test_a_direct_call_is_cancelled_by_the_client(tmp_path: Path) -> None:
    with running_gateway({"mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, tmp_path) as gateway:
        url = gateway.mcp_url("fx")
        headers = _session(url, {})
        _call(url, headers, 0)
        answer: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answer.append(
            _call(url, headers, 7, tool="sleep", arguments={"seconds": 30})))
        started = time.monotonic()
        slow.start()
        time.sleep(1.0)
        cancelled = httpx.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                           "params": {"requestId": 7, "reason": "user"}})
        assert cancelled.status_code == 202
        slow.join(timeout=10)
        assert not slow.is_alive() and time.monotonic() - started < 10
        assert answer[0].headers["content-type"].startswith("application/json")
        assert _result(answer[0]) == {"jsonrpc": "2.0", "id": 7,
                                      "error": {"code": -32800, "message": "Request cancelled"}}
        # The upstream was told too, and the session goes on.
        assert _result(_call(url, headers, 8))["result"]["content"][0]["text"] == "hi 8"


def test_requests_the_direct_path_does_not_take_get_the_sdk_answers(tmp_path: Path) -> None:
    with running_gateway({"mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, tmp_path) as gateway:
        url = gateway.mcp_url("fx")
        headers = _session(url, {})
        _call(url, headers, 0)
        not_acceptable = _call(url, {**headers, "Accept": "text/plain"}, 1)
        assert not_acceptable.status_code == 406
        wrong_type = httpx.post(url, headers={**headers, "Content-Type": "text/plain"}, content=json.dumps({
            "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}))
        assert wrong_type.status_code in (400, 415) and "result" not in wrong_type.text, wrong_type.text
        bad_host = _call(url, {**headers, "Host": "evil.example:80"}, 3)
        assert bad_host.status_code in (403, 421)
        unknown_version = _call(url, {**headers, "mcp-protocol-version": "1999-01-01"}, 4)
        assert unknown_version.status_code == 400
        # A terminated session is not answered, whichever way its calls would go.
        assert httpx.delete(url, headers=headers).status_code == 200
        assert _call(url, headers, 5).status_code == 404


@pytest.mark.parametrize("fast_paths", [True, False])
def test_fast_paths_can_be_turned_off(tmp_path: Path, fast_paths: bool) -> None:
    """`gateway.fast_paths: false`: every call through the SDK's transport downstream (SSE) and the SDK's
    session upstream (whose ids count from 0; raw calls use ids from 2**40 on)."""
    config = {"gateway": {"fast_paths": fast_paths}, "mcpServers": {"ids": fixture_server("request_id_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        url = gateway.mcp_url("ids")
        headers = _session(url, {})
        time.sleep(0.5)  # the SDK handles the notification after answering it 202
        responses = [_call(url, headers, request_id, tool="request_id", arguments={}) for request_id in (1, 2)]
    kinds = {response.headers["content-type"].split(";")[0] for response in responses}
    upstream_ids = [int(_result(response)["result"]["content"][0]["text"]) for response in responses]
    if fast_paths:
        assert kinds == {"application/json"} and all(upstream_id >= 2**40 for upstream_id in upstream_ids)
    else:
        assert kinds == {"text/event-stream"} and all(upstream_id < 2**40 for upstream_id in upstream_ids)
