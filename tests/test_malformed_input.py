"""Malformed and odd requests to the MCP endpoint, in both protocol eras, sent to two real gateways in
front of the same stdio fixture: one with its fast paths (the direct path downstream, raw calls
upstream) and one with `gateway.fast_paths: false` (the SDK all the way). Each request must get the
right answer (a JSON-RPC error with the right code, never a 5xx, never a hang) and the same answer
from both; a good call works afterwards. The last test fuzzes the surface with hypothesis."""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from harness import GatewayProcess, fixture_server, running_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HANDSHAKE, MODERN = "2025-06-18", "2026-07-28"
BOTH_WAYS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HEADER_MISMATCH = -32020  # the 2026 era's: a routing header that disagrees with the body
# An answer later than this is a hang.
CLIENT_TIMEOUT = 15.0


@dataclass
class Endpoint:
    """One gateway, with a handshake-era session opened on it."""

    gateway: GatewayProcess
    session_headers: dict[str, str]
    client: httpx.Client  # one for all requests: a new client per request costs ~100 ms here

    @property
    def url(self) -> str:
        return self.gateway.mcp_url()

    def headers(self, era: str, method: str = "tools/call", name: str | None = "fx__echo") -> dict[str, str]:
        if era == HANDSHAKE:
            return dict(self.session_headers)
        headers = {**BOTH_WAYS, "mcp-protocol-version": MODERN, "mcp-method": method}
        return {**headers, "mcp-name": name} if name is not None else headers

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post(self.url, content=body, headers=headers)


def _open(gateway: GatewayProcess, client: httpx.Client) -> Endpoint:
    url = gateway.mcp_url()
    opened = client.post(url, headers=BOTH_WAYS, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    headers = {**BOTH_WAYS, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": HANDSHAKE}
    assert client.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
                       ).status_code == 202
    return Endpoint(gateway, headers, client)


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoint, Endpoint]]:
    """(fast paths on, fast paths off)."""
    work = tmp_path_factory.mktemp("malformed")
    servers = {"fx": {**fixture_server("misbehaving_server.py"), "call_timeout": 10}}
    with (running_gateway({"gateway": {"fast_paths": True}, "mcpServers": servers}, work / "fast") as fast,
          running_gateway({"gateway": {"fast_paths": False}, "mcpServers": servers}, work / "sdk") as sdk,
          httpx.Client(timeout=CLIENT_TIMEOUT) as client):
        pair = _open(fast, client), _open(sdk, client)
        time.sleep(0.5)  # the SDK handles `notifications/initialized` after its 202: then calls go direct
        yield pair


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    status: int
    message: Any  # the JSON-RPC message (from a JSON body or the last SSE event); None: no body

    @property
    def code(self) -> int | None:
        error = self.message.get("error") if isinstance(self.message, dict) else None
        return error.get("code") if isinstance(error, dict) else None


def answer(response: httpx.Response) -> Answer:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        # SSE ends lines with CR, LF or CRLF only (`splitlines` would also split inside a U+0085 in an id)
        lines = re.split(r"\r\n|\r|\n", text)
        events = [line[len("data:"):].strip() for line in lines if line.startswith("data:")]
        text = events[-1] if events else ""
    if not text.strip():
        message = None
    elif response.headers.get("content-type", "").startswith(("application/json", "text/event-stream")):
        message = json.loads(text)
    else:
        message = text  # the transport's plain-text refusals (e.g. transport security's)
    if isinstance(message, dict) and isinstance(message.get("result"), dict):
        provenance = message["result"].get("_meta", {}).get("simgate/provenance")
        if isinstance(provenance, dict):
            provenance.pop("latency_ms", None)  # the one thing two equal answers may differ in
    return Answer(response.status_code, message)


def both(endpoints: tuple[Endpoint, Endpoint], body: bytes, era: str, *, name: str | None = "fx__echo",
         extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Answer:
    """The answer of both gateways, which must be the same and no server error."""
    answers = []
    for endpoint in endpoints:
        headers = {**endpoint.headers(era, name=name), **(extra or {})}
        headers = {key: value for key, value in headers.items() if key not in drop}
        answers.append(answer(endpoint.post(body, headers)))
    assert answers[0].status < 500, answers[0]
    assert answers[0] == answers[1], f"fast paths: {answers[0]}\nSDK only:   {answers[1]}"
    return answers[0]


def call(arguments: Any = None, *, request_id: Any = 1, name: Any = "fx__echo", era: str = HANDSHAKE,
         method: str = "tools/call") -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": {"text": "hi"} if arguments is None else arguments}
    if era == MODERN:
        params["_meta"] = ENVELOPE
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def encoded(message: Any) -> bytes:
    return json.dumps(message).encode()


def assert_good_calls(endpoints: tuple[Endpoint, Endpoint]) -> None:
    for era in (HANDSHAKE, MODERN):
        reply = both(endpoints, encoded(call({"text": "still here"}, request_id=7, era=era)), era)
        assert reply.status == 200 and reply.message["result"]["content"][0]["text"] == "still here", reply


# --------------------------------------------------------------------------- the cases


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def _args(**members: str) -> str:
    """A JSON object written from JSON text (which may be what no JSON encoder writes)."""
    return "{" + ", ".join(f'"{key}": {value}' for key, value in members.items()) + "}"


def _raw_call(arguments: str, era: str, request_id: str = "1") -> bytes:
    meta = f', "_meta": {json.dumps(ENVELOPE)}' if era == MODERN else ""
    return (f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "tools/call", '
            f'"params": {{"name": "fx__echo", "arguments": {arguments}{meta}}}}}').encode()


@pytest.mark.parametrize("era", [HANDSHAKE, MODERN])
@pytest.mark.parametrize(("case", "body"), [
    ("not json", lambda era: b'{"jsonrpc": "2.0", "id": 1, "method": '),
    ("5000 levels deep", lambda era: _raw_call(_args(text='"a"', x=_deep(5000)), era)),
    ("900 levels deep", lambda era: _raw_call(_args(text='"a"', x=_deep(900)), era)),
    ("lone surrogate", lambda era: _raw_call('{"text": "a\\ud800b"}', era)),
    ("lone low surrogate", lambda era: _raw_call('{"text": "\\udc00"}', era)),
    ("invalid utf-8", lambda era: _raw_call('{"text": "\xff"}', era).replace(b"\xc3\xbf", b"\xff")),
    ("NaN", lambda era: _raw_call('{"text": "a", "n": NaN}', era)),
    ("Infinity", lambda era: _raw_call('{"text": "a", "n": -Infinity}', era)),
    ("1e999", lambda era: _raw_call('{"text": "a", "n": 1e999}', era)),
    ("400-digit float", lambda era: _raw_call(_args(text='"a"', n="9" * 400 + ".5"), era)),
    ("id 1e999", lambda era: _raw_call('{"text": "a"}', era, request_id="1e999")),
])
def test_unparseable_bodies_get_a_parse_error(endpoints: tuple[Endpoint, Endpoint], era: str, case: str,
                                              body: Any) -> None:
    reply = both(endpoints, body(era), era)
    assert (reply.status, reply.code) == (400, PARSE_ERROR), reply


@pytest.mark.parametrize("era", [HANDSHAKE, MODERN])
def test_nesting_the_parser_takes_is_carried_through(endpoints: tuple[Endpoint, Endpoint], era: str) -> None:
    """Just below the parser's limit, a call is answered (the upstream's own error or its result), never
    with a serialization failure (code 0) or an internal error."""
    for levels in range(190, 200):
        reply = both(endpoints, _raw_call(_args(text='"a"', x=_deep(levels)), era), era)
        if reply.code == PARSE_ERROR:
            break
        assert reply.status == 200 and "result" in reply.message, (levels, reply)
    assert_good_calls(endpoints)


@pytest.mark.parametrize("request_id", ["1.5", "1.0", "null", "true", "[1]", '{"a": 1}'])
def test_an_id_that_is_no_request_id_is_refused(endpoints: tuple[Endpoint, Endpoint], request_id: str) -> None:
    """Not taken for a notification (202, no answer ever): -32602 as the handshake-era transport answers
    any message it cannot validate, -32600 in the 2026 era."""
    assert both(endpoints, _raw_call('{"text": "a"}', HANDSHAKE, request_id), HANDSHAKE).code == INVALID_PARAMS
    reply = both(endpoints, _raw_call('{"text": "a"}', MODERN, request_id), MODERN)
    assert (reply.status, reply.code) == (400, INVALID_REQUEST), reply


def test_huge_ids_come_back_as_they_were_sent(endpoints: tuple[Endpoint, Endpoint]) -> None:
    for request_id in (2**53 + 1, 2**64, -(2**70), "x" * 5000):
        for era in (HANDSHAKE, MODERN):
            reply = both(endpoints, encoded(call(request_id=request_id, era=era)), era)
            assert reply.status == 200 and reply.message["id"] == request_id, reply
            assert reply.message["result"]["content"][0]["text"] == "hi"


# Accept / Content-Type of a good call, and the status the SDK's transport gives them.
HEADER_CASES = [
    ({"accept": "application/json"}, 406),  # the direct path used to answer this one
    ({"accept": "text/event-stream"}, 406),
    ({"accept": "*/*"}, 200),
    ({"accept": "application/*, text/*"}, 200),
    ({"accept": "application/json;q=0.9, text/event-stream;q=0.1"}, 200),
    ({"accept": ""}, 406),
    ({"content-type": "Application/JSON"}, 415),
    ({"content-type": "application/json; charset=utf-8"}, 200),
    ({"content-type": "application/jsonx"}, 415),
    ({"content-type": "application/json, text/plain"}, 200),
    # Refused by the SDK's transport security before anything else, in both eras (a plain-text 400).
    ({"content-type": "text/plain"}, 400),
    ({"content-type": ""}, 400),
    ({"content-type": "text/plain", "accept": "application/json"}, 400),
]


@pytest.mark.parametrize("era", [HANDSHAKE, MODERN])
@pytest.mark.parametrize(("headers", "status"), HEADER_CASES)
def test_both_paths_keep_the_same_header_rules(endpoints: tuple[Endpoint, Endpoint], era: str,
                                               headers: dict[str, str], status: int) -> None:
    if era == MODERN and status == 415:
        status = 200  # the 2026-era entry checks Content-Type only as transport security does
    reply = both(endpoints, encoded(call(era=era)), era, extra=headers)
    assert reply.status == status, reply
    if status == 200:
        assert reply.message["result"]["content"][0]["text"] == "hi"


def test_bad_params_and_methods_get_their_codes(endpoints: tuple[Endpoint, Endpoint]) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        (call({"text": 5}), INVALID_PARAMS),
        (call([1, 2]), INVALID_PARAMS),
        (call(name="fx__nosuch"), INVALID_PARAMS),
        (call(name=5), INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 3, "method": "tools/call"}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1]}, INVALID_PARAMS),
        ({"jsonrpc": "2.0", "id": 3, "method": "no/such"}, METHOD_NOT_FOUND),
        ({"jsonrpc": "1.0", "id": 3, "method": "tools/call", "params": {}}, INVALID_PARAMS),
        ([call()], INVALID_PARAMS),
    ]
    for message, code in cases:
        reply = both(endpoints, encoded(message), HANDSHAKE)
        assert reply.code == code, (message, reply)
    assert_good_calls(endpoints)


# --------------------------------------------------------------------------- fuzz

_JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False,
                                                                                     allow_infinity=False) | st.text()
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_BAD_IDS = st.sampled_from(["1.5", "1.0", "null", "true", "false", "[]", "{}", "-0.0", "1e300", "2.5e-3", "[1, 2]"])
_NON_NUMBERS = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E+400", "9" * 310 + ".0"])
_SURROGATES = st.integers(0xD800, 0xDFFF).map(lambda point: f"\\u{point:04x}")


def _not_json(body: bytes) -> bool:
    """Whether Python's strict parser refuses `body` as UTF-8 JSON (an oracle apart from the gateway's)."""
    def refuse(token: str) -> Any:
        raise ValueError(token)

    try:
        json.loads(body.decode("utf-8"), parse_constant=refuse)
    except (ValueError, RecursionError):
        return True
    return False


@dataclass(frozen=True)
class Case:
    era: str
    body: bytes
    codes: dict[str, int | None]  # era -> the JSON-RPC error code (None: a result), or
    status: int | None = None  # the HTTP status, where that is the answer (headers the transport refuses)
    extra: tuple[tuple[str, str], ...] = ()
    name: str = "fx__echo"
    drop: tuple[str, ...] = ()  # headers left out


def _garbage() -> st.SearchStrategy[Case]:
    bodies = (st.binary(max_size=300) | st.text(max_size=200).map(str.encode)
              | _JSON.map(lambda value: json.dumps(value)[:-1].encode())).filter(_not_json)
    return st.builds(lambda era, body: Case(era, body, {era: PARSE_ERROR}), st.sampled_from([HANDSHAKE, MODERN]),
                     bodies)


def _non_json_numbers() -> st.SearchStrategy[Case]:
    def build(era: str, token: str, where: str) -> Case:
        if where == "id":
            return Case(era, _raw_call('{"text": "a"}', era, request_id=token), {era: PARSE_ERROR})
        return Case(era, _raw_call(_args(text='"a"', n=f"[1, {token}]"), era), {era: PARSE_ERROR})
    return st.builds(build, st.sampled_from([HANDSHAKE, MODERN]), _NON_NUMBERS, st.sampled_from(["id", "arguments"]))


def _surrogates() -> st.SearchStrategy[Case]:
    def build(era: str, surrogate: str, before: str) -> Case:
        escaped = json.dumps(before)[1:-1]
        return Case(era, _raw_call(_args(text=f'"{escaped}{surrogate}"'), era), {era: PARSE_ERROR})
    return st.builds(build, st.sampled_from([HANDSHAKE, MODERN]), _SURROGATES, st.text(max_size=10))


def _deep_nesting() -> st.SearchStrategy[Case]:
    def build(era: str, levels: int, brace: bool) -> Case:
        nested = ('{"a": ' * levels + "1" + "}" * levels) if brace else _deep(levels)
        return Case(era, _raw_call(_args(text='"a"', x=nested), era), {era: PARSE_ERROR})
    return st.builds(build, st.sampled_from([HANDSHAKE, MODERN]), st.integers(300, 6000), st.booleans())


# A message the transport cannot take: the handshake-era transport answers -32602, the 2026-era entry -32600.
_INVALID_MESSAGE = {HANDSHAKE: INVALID_PARAMS, MODERN: INVALID_REQUEST}


def _not_messages() -> st.SearchStrategy[Case]:
    """JSON that is no JSON-RPC message."""
    values = _JSON.filter(lambda value: not (isinstance(value, dict) and "jsonrpc" in value))
    return st.builds(lambda era, value: Case(era, encoded(value), {era: _INVALID_MESSAGE[era]}),
                     st.sampled_from([HANDSHAKE, MODERN]), values)


def _bad_ids() -> st.SearchStrategy[Case]:
    return st.builds(lambda era, token: Case(era, _raw_call('{"text": "a"}', era, request_id=token),
                                             {era: _INVALID_MESSAGE[era]}),
                     st.sampled_from([HANDSHAKE, MODERN]), _BAD_IDS)


def _bad_params() -> st.SearchStrategy[Case]:
    """Well-formed calls with wrong arguments, unknown tools, huge ids (a result)."""
    def build(era: str, request_id: Any, kind: str, value: Any, suffix: str) -> Case:
        if kind == "text":
            return Case(era, encoded(call({"text": value}, request_id=request_id, era=era)),
                        {era: None if isinstance(value, str) else INVALID_PARAMS})
        if kind == "tool":
            name = f"fx__no_{suffix}"
            return Case(era, encoded(call(name=name, request_id=request_id, era=era)), {era: INVALID_PARAMS},
                        name=name)
        message = call(request_id=request_id, era=era)  # with arguments that are no object, or lack `text`
        message["params"]["arguments"] = value if not isinstance(value, dict) else {
            key: item for key, item in value.items() if key != "text"}
        return Case(era, encoded(message), {era: INVALID_PARAMS})
    ids = st.integers(-(2**70), 2**70) | st.text(max_size=50)
    return st.builds(build, st.sampled_from([HANDSHAKE, MODERN]), ids, st.sampled_from(["text", "tool", "arguments"]),
                     _JSON, st.text(string.ascii_letters + string.digits + "_-", max_size=12))


def _odd_headers() -> st.SearchStrategy[Case]:
    accepts = st.sampled_from(["application/json", "text/event-stream", "*/*", "application/*, text/*", "", "text/html",
                               "application/json, text/event-stream", "APPLICATION/JSON, TEXT/EVENT-STREAM",
                               "application/json;q=0, text/event-stream", "image/*, application/json"])
    content_types = st.sampled_from(["application/json", "Application/JSON", "application/json; charset=utf-8",
                                     "text/plain", "", "application/json, text/plain", "application/jsonx"])

    def build(era: str, accept: str, content_type: str) -> Case:
        types = [part.strip().split(";")[0].strip().lower() for part in accept.split(",")]
        has_json = bool({"*/*", "application/json", "application/*"} & set(types))
        has_sse = bool({"*/*", "text/event-stream", "text/*"} & set(types))
        typed = any(part.strip() == "application/json" for part in content_type.split(";")[0].split(","))
        # The SDK's order: transport security (a JSON Content-Type at all: a plain-text 400), Accept, then the
        # exact type; the handshake-era transport says why in a JSON-RPC error, the 2026-era entry with no body.
        code: int | None = None
        if not content_type.lower().startswith("application/json"):
            status = 400
        elif not (has_json and has_sse):
            status, code = 406, INVALID_REQUEST if era == HANDSHAKE else None
        elif era == HANDSHAKE and not typed:
            status, code = 415, INVALID_REQUEST
        else:
            status = 200
        return Case(era, encoded(call(era=era)), {era: code}, status=status,
                    extra=(("accept", accept), ("content-type", content_type)))
    return st.builds(build, st.sampled_from([HANDSHAKE, MODERN]), accepts, content_types)


def _odd_routing() -> st.SearchStrategy[Case]:
    """Sessions, versions and routing headers that do not fit the body; notifications (202, no body)."""
    tokens = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=40)
    good = encoded(call())
    notification = st.builds(lambda era, method: Case(era, encoded({"jsonrpc": "2.0", "method": method}),
                                                      {era: None}, status=202),
                             st.sampled_from([HANDSHAKE, MODERN]), st.text(max_size=30))
    return st.one_of(
        tokens.map(lambda session: Case(HANDSHAKE, good, {HANDSHAKE: INVALID_REQUEST}, status=404,
                                        extra=(("mcp-session-id", session),))),
        st.just(Case(HANDSHAKE, good, {HANDSHAKE: INVALID_REQUEST}, status=400, drop=("mcp-session-id",))),
        # An unknown version is the 2026 era's to judge: a body without its envelope is refused.
        tokens.map(lambda version: Case(HANDSHAKE, good, {HANDSHAKE: INVALID_PARAMS}, status=400,
                                        extra=(("mcp-protocol-version", version),))),
        tokens.filter(lambda method: method != "tools/call").map(
            lambda method: Case(MODERN, encoded(call(era=MODERN)), {MODERN: HEADER_MISMATCH}, status=400,
                                extra=(("mcp-method", method),))),
        notification,
    )


CASES = st.one_of(_garbage(), _non_json_numbers(), _surrogates(), _deep_nesting(), _not_messages(), _bad_ids(),
                  _bad_params(), _odd_headers(), _odd_routing())
FUZZ_BUDGET = 60.0  # seconds; examples past it are not sent


def test_fuzz_the_http_surface(endpoints: tuple[Endpoint, Endpoint]) -> None:
    """No 5xx, no hang, the right JSON-RPC error code for each malformed request, the same answer with
    and without the fast paths; and a good call works afterwards."""
    stop_at = time.monotonic() + FUZZ_BUDGET
    sent = []

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(CASES)
    def check(case: Case) -> None:
        if time.monotonic() > stop_at:
            return
        sent.append(case)
        reply = both(endpoints, case.body, case.era, name=case.name, extra=dict(case.extra), drop=case.drop)
        if case.status is not None:
            assert reply.status == case.status, (case, reply)
            if reply.status == 202:
                assert reply.message is None, (case, reply)
                return
        code = case.codes[case.era]
        assert reply.code == code, (case, reply)
        if code is None and case.status in (None, 200):
            assert reply.status == 200 and "result" in reply.message, (case, reply)
        elif code == PARSE_ERROR:
            assert reply.status == 400 and reply.message["id"] is None, (case, reply)

    check()
    assert len(sent) >= 50, f"only {len(sent)} examples within {FUZZ_BUDGET:g}s"
    assert_good_calls(endpoints)
