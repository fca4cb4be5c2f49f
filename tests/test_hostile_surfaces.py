"""A hostile client against the gateway's newest surfaces (legacy HTTP+SSE, the replicas' private paths, the
page's cookies, the admin modes API): raw HTTP, a real gateway; each refusal precise, nothing leaked."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import GatewayProcess, fixture_server, running_gateway, wait_until

from simgate.gateway.auth.api_keys import KeyStore

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    base = tmp_path_factory.mktemp("hostile")
    store = KeyStore(base / "keys.json")
    keys = {name: store.create(name, servers=["*"])[1] for name in ("alice", "mallory")}
    keys["admin"] = store.create("admin", servers=["*"], admin=True)[1]
    config = {"gateway": {"keys_path": str(base / "keys.json")},
              "mcpServers": {"mis": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, base / "gateway") as gateway:
        yield gateway, keys


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _endpoint_of(lines: Iterator[str]) -> str:
    """The message URL a legacy stream announces first (`event: endpoint`). `lines`: the stream's, kept by the
    caller (a line iterator let go closes the response, which ends the session)."""
    for line in lines:
        if line.startswith("data: "):
            return line.removeprefix("data: ")
    raise AssertionError("the stream ended before naming its message endpoint")


def test_a_legacy_session_takes_messages_only_with_the_key_that_opened_it(
        keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """The session id travels in a URL (proxies log URLs): another client that learns it, with a key of its
    own, must not post into the session (its answers would reach the session's owner, under its name)."""
    gateway, keys = keyed
    with httpx.Client(timeout=10, trust_env=False) as http, \
            http.stream("GET", f"{gateway.url}/servers/mis/sse", headers=_bearer(keys["alice"])) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        messages = gateway.url + _endpoint_of(lines)
        intruded = http.post(messages, json=INIT, headers=_bearer(keys["mallory"]))
        assert intruded.status_code == 404, intruded.text
        assert http.post(messages, json=INIT).status_code == 401  # no key at all
        assert http.post(messages, json=INIT, headers=_bearer(keys["alice"])).status_code == 202


def test_legacy_messages_that_name_no_live_session_are_refused_in_json(
        keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    gateway, keys = keyed
    with httpx.Client(timeout=10, trust_env=False, headers=_bearer(keys["alice"])) as http:
        base = f"{gateway.url}/servers/mis/messages/"
        for url, status, says in ((base, 400, "session_id is required"),
                                  (f"{base}?session_id=not-a-uuid", 400, "Invalid session ID"),
                                  (f"{base}?session_id={uuid.uuid4().hex}", 404, "Could not find session")):
            answer = http.post(url, json=INIT)
            assert (answer.status_code, answer.headers["content-type"]) == (status, "application/json"), answer.text
            assert answer.json() == {"error": says}
        assert http.post(f"{gateway.url}/servers/nope/messages/?session_id={uuid.uuid4().hex}",
                         json=INIT).status_code == 404
        assert http.get(f"{base}?session_id={uuid.uuid4().hex}").status_code == 405


def test_a_malformed_legacy_message_is_answered_precisely_and_the_session_goes_on(
        keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """As over streamable HTTP (see `downstream.inbound`): not JSON, NaN or a number out of range: -32700; a
    request id that is no id (the SDK took it for a notification: 202, and no answer ever), a batch: -32602;
    each answered on the POST, in JSON, with no traceback in the log."""
    gateway, keys = keyed
    with httpx.Client(timeout=10, trust_env=False, headers=_bearer(keys["alice"])) as http, \
            http.stream("GET", f"{gateway.url}/servers/mis/sse") as stream:
        lines = stream.iter_lines()
        messages = gateway.url + _endpoint_of(lines)
        assert http.post(messages, json=INIT).status_code == 202
        for body, code in ((b"not json", -32700), (b"[" * 5000 + b"]" * 5000, -32700),
                           (b'{"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"x": NaN}}', -32700),
                           (b'{"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"x": 1e999}}', -32700),
                           (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ping"}', -32602),
                           (b'[{"jsonrpc": "2.0", "id": 2, "method": "ping"}]', -32602)):
            answer = http.post(messages, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 400, (body[:40], answer.text)
            assert answer.json()["error"]["code"] == code, (body[:40], answer.text)
        wrong_type = http.post(messages, content=b'{"jsonrpc": "2.0", "id": 3, "method": "ping"}',
                               headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 400 and wrong_type.json() == {"error": "Invalid Content-Type header"}
        assert http.post(messages, json={"jsonrpc": "2.0", "id": 4, "method": "ping"}).status_code == 202
        answers = (line for line in lines if line.startswith("data: "))
        assert json.loads(next(answers).removeprefix("data: "))["id"] == 1  # the handshake's
        assert json.loads(next(answers).removeprefix("data: ")) == {"jsonrpc": "2.0", "id": 4, "result": {}}
    assert "Traceback" not in gateway.log_text()


def test_a_huge_legacy_message_is_refused_unread(tmp_path: Path) -> None:
    config = {"gateway": {"max_body_bytes": 1024}, "mcpServers": {"mis": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path / "gateway") as gateway, httpx.Client(timeout=10, trust_env=False) as http, \
            http.stream("GET", f"{gateway.url}/sse") as stream:
        lines = stream.iter_lines()
        messages = gateway.url + _endpoint_of(lines)
        big = http.post(messages, content=b'{"jsonrpc": "2.0", "method": "x", "params": {"p": "' + b"a" * 4096 + b'"}}',
                        headers={"content-type": "application/json"})
        assert big.status_code == 413
        assert http.post(messages, json=INIT).status_code == 202  # the session goes on


def _mcp_session(http: httpx.Client, url: str) -> dict[str, str]:
    """The headers of a fresh handshake-era session at `url` (raw JSON-RPC over streamable HTTP)."""
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    opened = http.post(url, headers=headers, json={**INIT, "params": {**INIT["params"], "protocolVersion": "2025-06-18"}})
    session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    http.post(url, headers=session, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return session


def _answer_of(answer: httpx.Response) -> dict[str, object]:
    """A JSON-RPC answer, sent as one JSON body or on an SSE stream (the gateway answers either way)."""
    if answer.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
        answers = [json.loads(item) for item in data if item.strip()]
        return next(item for item in answers if "id" in item)
    body: dict[str, object] = answer.json()
    return body


def _call_error(http: httpx.Client, url: str, headers: dict[str, str], meta: dict[str, object]) -> dict[str, object]:
    answer = http.post(url, headers=headers, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "hi"}, "_meta": {"simgate/mode": "replay", **meta}}})
    assert answer.status_code == 200, answer.text
    body = _answer_of(answer)
    assert "error" in body, f"accepted: {answer.text[:300]}"
    error: dict[str, object] = body["error"]
    return error


def test_a_session_name_is_bounded_and_a_string(keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """Every name a call gives its session is kept (run state, up to 10,000 of them): one of megabytes per call
    would hold gigabytes. A name over the bound, or one that is no string, is refused naming the field, without
    echoing the name."""
    gateway, keys = keyed
    url = gateway.mcp_url("mis")
    with httpx.Client(timeout=30, trust_env=False, headers=_bearer(keys["alice"])) as http:
        session = _mcp_session(http, url)
        huge = "s" * 100_000
        error = _call_error(http, url, session, {"simgate/session": huge})
        assert error["code"] == -32602 and "simgate/session" in str(error["message"])
        assert "sss" not in json.dumps(error), error
        error = _call_error(http, url, {**session, "x-simgate-session": "h" * 5000}, {})
        assert error["code"] == -32602 and "X-Simgate-Session" in str(error["message"]) and "hhh" not in json.dumps(error)
        for wrong in ({"a": 1}, 5, ["s"]):
            error = _call_error(http, url, session, {"simgate/session": wrong})
            assert error["code"] == -32602 and "simgate/session" in str(error["message"]), error
        error = _call_error(http, url, session, {"simgate/mode": {"x": 1}})
        assert error["code"] == -32602 and "simgate/mode" in str(error["message"]), error
        # A name within the bound is a name as before.
        fine = http.post(url, headers=session, json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "hi"}, "_meta": {"simgate/session": "n" * 256}}})
        assert '"hi"' in fine.text
        # The admin API holds the same bound for a session's mode.
        put = http.put(f"{gateway.url}/admin/modes", json={"mode": "replay", "session": huge},
                       headers=_bearer(keys["admin"]))
        assert put.status_code == 400 and "session" in put.json()["error"] and "sss" not in put.text, put.text[:300]


def test_a_legacy_client_that_never_reads_its_stream_holds_up_no_other_client(tmp_path: Path) -> None:
    """An upstream notification of no request goes to every client session of the endpoint. A legacy client
    that opens its stream and never reads it fills its socket's buffers; sending to it then waits for ever,
    and every other client stopped hearing notifications (each new one left a task waiting behind it)."""
    config = {"mcpServers": {"routing": fixture_server("routing_server.py")}}
    with running_gateway(config, tmp_path / "gateway") as gateway, \
            httpx.Client(timeout=20, trust_env=False) as http, socket.socket() as stuck:
        port = int(gateway.url.rsplit(":", 1)[1])
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(f"GET /servers/routing/sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        seen = b""
        while b"session_id=" not in seen or b"\r\n" not in seen.partition(b"session_id=")[2]:
            seen += stuck.recv(4096)
        stuck_messages = gateway.url + seen.partition(b"data: ")[2].partition(b"\r\n")[0].decode()
        assert http.post(stuck_messages, json=INIT).status_code == 202
        assert http.post(stuck_messages, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        url = gateway.mcp_url("routing")
        caller = _mcp_session(http, url)
        for index in range(10):  # 10 MB of log lines of no request: more than the stuck socket's buffers hold
            http.post(url, headers=caller, json={"jsonrpc": "2.0", "id": 10 + index, "method": "tools/call", "params": {
                "name": "announce", "arguments": {"text": "x" * 1_000_000}}})
        with http.stream("GET", f"{gateway.url}/servers/routing/sse") as stream:
            lines = stream.iter_lines()
            messages = gateway.url + _endpoint_of(lines)
            assert http.post(messages, json=INIT).status_code == 202
            assert http.post(messages, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
            http.post(url, headers=caller, json={"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {
                "name": "announce", "arguments": {"text": "heard"}}})
            heard: list[str] = []

            def listen() -> None:
                with contextlib.suppress(httpx.HTTPError):  # the stream closes as the test ends
                    for line in lines:
                        if line.startswith("data: ") and "notifications/message" in line and "heard" in line:
                            heard.append(line)
                            return

            threading.Thread(target=listen, daemon=True).start()
            assert wait_until(lambda: bool(heard), timeout=15), "a client stuck on its stream held up the others"


def test_the_legacy_routes_hold_the_dns_rebinding_rules(keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    gateway, keys = keyed
    with httpx.Client(timeout=10, trust_env=False, headers=_bearer(keys["alice"])) as http:
        for path in ("/sse", "/servers/mis/sse"):
            assert http.get(gateway.url + path, headers={"Host": "evil.example"}).status_code == 421
            assert http.get(gateway.url + path, headers={"Origin": "http://evil.example"}).status_code == 403
        for path in ("/messages/", "/servers/mis/messages/", "/messages/r1/"):
            answer = http.post(f"{gateway.url}{path}?session_id={uuid.uuid4().hex}", json=INIT,
                               headers={"Origin": "http://evil.example"})
            assert answer.status_code == 403 and "refused" in answer.json()["error"]


def _raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Status and body of one request sent as written (no client normalises its target)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _replica_token(parent: int) -> str:
    """The siblings' token, from a replica's environment (where the parent put it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if stat.read_text().rpartition(")")[2].split()[1] == str(parent):
                for entry in (stat.parent / "environ").read_bytes().split(b"\0"):
                    if entry.startswith(b"SIMGATE_REPLICA_PLAN="):
                        token: str = json.loads(entry.partition(b"=")[2])["token"]
                        return token
    raise AssertionError("no replica found")


def test_the_replicas_private_paths_exist_for_no_client(tmp_path: Path) -> None:
    """However the target is spelled, a request without the parent's token never reaches the siblings' paths,
    and the token (logged at debug level too) appears nowhere in the log."""
    config = {"gateway": {"log_level": "debug"}, "mcpServers": {"mis": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path / "gateway", serve_args=("--workers", "2")) as gateway:
        assert wait_until(lambda: all(httpx.get(f"{gateway.url}/readyz?replica={index}", trust_env=False).status_code
                                      == 200 for index in (0, 1)), timeout=60)
        port = int(gateway.url.rsplit(":", 1)[1])
        token = _replica_token(gateway.process.pid)
        body = b'{"mode": "replay"}'
        for target in ("/_simgate/replica/modes", "//_simgate/replica/modes", "/_simgate%2Freplica%2Fmodes",
                       "/./_simgate/replica/modes", "/_simgate/replica/modes/", "/x/../_simgate/replica/modes",
                       f"http://127.0.0.1:{port}/_simgate/replica/modes", "/_simgate/replica/apply/admin/modes",
                       "/_simgate/replica/apply//admin/modes", "/_simgate/replica/apply/%61dmin/modes"):
            for method in ("GET", "PUT"):
                status, _ = _raw(port, f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                                       f"X-Simgate-Replica-Token: {'0' * len(token)}\r\nContent-Length: {len(body)}\r\n"
                                       "Connection: close\r\n\r\n".encode() + body)
                assert status in (404, 405), (method, target, status)
        assert httpx.get(f"{gateway.url}/admin/modes", trust_env=False).json()["default"] == "live"
        # The probe is not vacuous: with the token, the path is there.
        assert httpx.get(f"{gateway.url}/_simgate/replica/modes", headers={"X-Simgate-Replica-Token": token},
                         trust_env=False).status_code == 200
        for tag in ("r99", "r-1", "r00001", "r1"):
            answer = httpx.post(f"{gateway.url}/messages/{tag}/?session_id={uuid.uuid4().hex}", json=INIT,
                                trust_env=False)
            assert (answer.status_code, answer.json()) == (404, {"error": "Could not find session"}), (tag, answer.text)
        log = gateway.log_text()
    assert token not in log


def test_a_streamable_http_session_takes_requests_only_with_the_key_that_opened_it(
        keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """As a legacy session is held to its key: another key naming the session's id is answered 404 (the SDK's
    answer to a session it does not know), on the SDK's path and the gateway's direct path for calls alike."""
    gateway, keys = keyed
    url = gateway.mcp_url("mis")
    with httpx.Client(timeout=10, trust_env=False, headers=_bearer(keys["alice"])) as alice, \
            httpx.Client(timeout=10, trust_env=False) as http:
        opened = _mcp_session(alice, url)
        for message in ({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo",
                                                                                        "arguments": {"text": "in"}}},
                        {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}):
            intruded = http.post(url, json=message, headers={**opened, **_bearer(keys["mallory"])})
            assert intruded.status_code == 404, intruded.text[:300]
            owned = http.post(url, json=message, headers={**opened, **_bearer(keys["alice"])})
            assert owned.status_code == 200 and "error" not in _answer_of(owned), owned.text[:300]
