"""Secrets never leave the gateway: a hostile upstream gets a vault secret and echoes it everywhere it
can (results, structuredContent, tool errors, JSON-RPC errors, logs, progress, prompts, resources,
instructions, a tool description, stdout, stderr), plain and encoded. Everything a client receives
and every file the gateway writes is scanned: zero occurrences.

Real gateway processes, the real `simgate vault` command, the real `mcp` client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from harness import (
    FIXTURES,
    REPO_ROOT,
    GatewayProcess,
    fixture_server,
    free_port,
    mcp_session,
    running_gateway,
    wait_until,
)
from mcp.shared.exceptions import MCPError

pytestmark = pytest.mark.anyio

PLACEHOLDER = "[REDACTED:api]"


def _make_secret() -> str:
    # Chosen so that its base64 differs between the standard and URL-safe alphabets and its
    # URL-encoding differs from it: a leak through any one encoding is caught.
    while True:
        value = f"sk-live/{secrets.token_hex(12)}+Tok=en é&?>~"
        encoded = base64.b64encode(value.encode()).decode()
        if "+" in encoded or "/" in encoded:
            return value


SECRET = _make_secret()
SECRET_2 = _make_secret()


def forms(secret: str) -> dict[str, str]:
    """Every form of a secret whose presence is a leak."""
    data = secret.encode("utf-8")
    found = {
        "plain": secret,
        "base64": base64.b64encode(data).decode(),
        "base64 unpadded": base64.b64encode(data).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "base64url unpadded": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "base64 in longer base64": base64.b64encode(b"user:" + data).decode()[8:-4],
        "url": urllib.parse.quote(secret, safe=""),
        "url keeping /": urllib.parse.quote(secret),
        "url plus": urllib.parse.quote_plus(secret),
        "url lower": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(secret, safe="")),
        "json ascii": json.dumps(secret)[1:-1],
    }
    core = re.search(r"/([0-9a-f]{24})\+", secret)
    if core:
        found["random core"] = core.group(1)  # the random part alone is a leak too
    return found


def leaks_in(data: bytes | str, secret: str = SECRET) -> list[str]:
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    # Also with line breaks (and their padding) removed: a console logger may wrap a secret over lines.
    unwrapped = re.sub(rb"[ \t]*\r?\n[ \t]*", b"", blob)
    return [kind for kind, form in forms(secret).items() if form.encode("utf-8") in blob
            or form.encode("utf-8") in unwrapped]


def scan_files(root: Path, secret: str = SECRET) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            kinds = leaks_in(path.read_bytes(), secret)
            if kinds:
                found[str(path.relative_to(root))] = kinds
    return found


def cli(workdir: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "simgate", *args], check=False, cwd=workdir, input=stdin, text=True,
                          capture_output=True, timeout=60, env=env)


def plant(workdir: Path, name: str, value: str) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    done = cli(workdir, "vault", "set", name, stdin=value + "\n")
    assert done.returncode == 0, done.stderr
    assert value not in done.stdout + done.stderr


def leaky_server(**extra: Any) -> dict[str, Any]:
    return {**fixture_server("echo_secret_server.py"), "env": {"API_TOKEN": "vault:api"}, **extra}


def _dump(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", by_alias=True)
    return json.dumps(value, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- the scan


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("leaky")
    plant(work, "api", SECRET)
    config = {
        "gateway": {"record": "all", "simulator": {"backend": "examples"}, "vault_check_interval": 0.5,
                    "log_level": "debug"},
        "mcpServers": {"leaky": leaky_server()},
    }
    assert "vault:api" in json.dumps(config) and SECRET not in json.dumps(config)
    with running_gateway(config, work) as running:
        yield running


async def _session_traffic(gateway: GatewayProcess, url: str, prefix: str, received: list[str],
                           headers: dict[str, str] | None = None) -> None:
    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(_dump(params))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append(json.dumps([progress, total, message], ensure_ascii=False))

    async with mcp_session(url, headers=headers, logging_callback=on_log) as session:
        received.append(_dump(session.initialize_result or session.discover_result))
        received.append(json.dumps({"instructions": session.instructions}, ensure_ascii=False))
        received.append(_dump(await session.list_tools()))
        for tool in ("leak_text", "leak_structured", "leak_tool_error", "leak_rpc_error", "leak_stderr",
                     "leak_stdout", "leak_log", "token_digest"):
            try:
                result = await session.call_tool(prefix + tool, {}, progress_callback=on_progress)
                received.append(_dump(result))
            except MCPError as exc:
                received.append(_dump(exc.error))
                received.append(str(exc))
        received.append(_dump(await session.list_prompts()))
        received.append(_dump(await session.get_prompt(prefix + "leak_prompt")))
        received.append(_dump(await session.list_resources()))
        received.append(_dump(await session.read_resource("secret://token")))
        await anyio.sleep(0.3)  # late notifications


def _raw_exchange(gateway: GatewayProcess, path: str, received: list[str]) -> None:
    """JSON-RPC by hand, keeping the raw bytes of every response."""
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        init = http.post(path, headers=accept, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "raw", "version": "0"}}})
        received.append(init.text)
        session = {"mcp-session-id": init.headers.get("mcp-session-id", ""), "mcp-protocol-version": "2025-06-18"}
        http.post(path, headers={**accept, **session}, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        for number, tool in enumerate(("leak_text", "leak_structured", "leak_tool_error", "leak_rpc_error",
                                       "leak_log"), start=2):
            response = http.post(path, headers={**accept, **session}, json={
                "jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {"name": tool, "arguments": {}}})
            received.append(response.text)
        for number, (method, params) in enumerate((("tools/list", {}), ("prompts/get", {"name": "leak_prompt"}),
                                                   ("resources/read", {"uri": "secret://token"})), start=20):
            response = http.post(path, headers={**accept, **session},
                                 json={"jsonrpc": "2.0", "id": number, "method": method, "params": params})
            received.append(response.text)
        for admin in ("/admin/servers", "/admin/modes", "/metrics", "/readyz", "/healthz"):
            received.append(http.get(admin).text)


async def test_a_planted_secret_reaches_the_upstream_and_nothing_else(leaky: GatewayProcess) -> None:
    received: list[str] = []
    # Live (and recorded: record mode all), through both endpoints, then the SDK-free raw exchange.
    await _session_traffic(leaky, leaky.mcp_url("leaky"), "", received)
    await _session_traffic(leaky, leaky.mcp_url(), "leaky__", received)
    _raw_exchange(leaky, "/servers/leaky/mcp", received)
    # Replay, simulated and shadow answer from the (redacted) recordings; shadow writes pairs to disk.
    for mode in ("replay", "simulated", "shadow", "hybrid"):
        async with mcp_session(leaky.mcp_url("leaky"), headers={"X-Simgate-Mode": mode}) as session:
            for tool in ("leak_text", "leak_structured", "leak_tool_error", "leak_rpc_error"):
                try:
                    received.append(_dump(await session.call_tool(tool, {})))
                except MCPError as exc:
                    received.append(_dump(exc.error))
    await anyio.sleep(1)  # shadow pairs are written in the background

    # The upstream did get the secret...
    digests = [json.loads(item) for item in received if hashlib.sha256(SECRET.encode()).hexdigest() in item]
    assert digests, "the upstream never ran with the planted secret"
    # ...it did echo it, and what came back was redacted, not dropped.
    everything = "\n".join(received)
    assert PLACEHOLDER in everything
    assert f"Use the token {PLACEHOLDER}" in everything  # the instructions
    for needle in ("the token is", "access denied for token", "upstream rejected token", "log line with the token",
                   "Use this token", "as a key"):
        assert needle in everything, needle
    assert leaks_in(everything) == [], [item for item in received if leaks_in(item)][:3]

    # A cassette export (the CLI, as a user would run it) is redacted too.
    export = cli(leaky.workdir, "cache", "export", "--cache-dir", ".simgate/cache", "exported.jsonl")
    assert export.returncode == 0, export.stderr
    cassette = (leaky.workdir / "exported.jsonl").read_text()
    assert PLACEHOLDER in cassette and "leak_rpc_error" in cassette and "leak_tool_error" in cassette
    assert json.loads(cassette.splitlines()[0])["count"] >= 4

    # Every file the gateway wrote, after it stopped (logs flushed, stderr copied to the end).
    assert leaky.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    stderr_log = leaky.workdir / ".simgate" / "servers" / "leaky" / "stderr.log"
    text = stderr_log.read_text()
    assert "debug: plain " + PLACEHOLDER in text and "partial line without a newline " + PLACEHOLDER in text
    assert "starting with token" in text
    assert "garbage with the token " + PLACEHOLDER in text
    assert PLACEHOLDER in leaky.log_text()  # debug logs of response bodies went through the log filter
    assert (leaky.workdir / ".simgate" / "vault.json").exists()
    assert scan_files(leaky.workdir) == {}
    assert scan_files(leaky.workdir, SECRET_2) == {}  # (sanity: the scan finds nothing it should not)


def test_the_scan_would_see_a_leak(tmp_path: Path) -> None:
    """The scanner itself: each form is found, in a file of bytes."""
    for kind, form in forms(SECRET).items():
        (tmp_path / "f").write_bytes(b"prefix " + form.encode() + b" suffix")
        assert kind in scan_files(tmp_path).get("f", []), kind


# ---------------------------------------------------------------------------------------------- changes


async def test_changing_a_secret_restarts_its_upstream_with_the_new_value(tmp_path: Path) -> None:
    plant(tmp_path, "api", SECRET)
    config = {"gateway": {"vault_check_interval": 0.3},
              "mcpServers": {"leaky": leaky_server(), "plain": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("leaky")) as session:
            first = (await session.call_tool("token_digest", {})).content[0]
            assert first.text == hashlib.sha256(SECRET.encode()).hexdigest()  # type: ignore[union-attr]
        plant(tmp_path, "api", SECRET_2)

        def restarted() -> bool:
            servers = httpx.get(gateway.url + "/admin/servers").json()["servers"]
            by_name = {server["name"]: server for server in servers}
            return by_name["leaky"]["restarts"] >= 1 and by_name["leaky"]["state"] == "ready"

        assert wait_until(restarted, timeout=30)
        servers = {s["name"]: s for s in httpx.get(gateway.url + "/admin/servers").json()["servers"]}  # noqa: ASYNC210
        assert servers["plain"]["restarts"] == 0  # only the server whose secret changed
        async with mcp_session(gateway.mcp_url("leaky")) as session:
            digest = (await session.call_tool("token_digest", {})).content[0]
            assert digest.text == hashlib.sha256(SECRET_2.encode()).hexdigest()  # type: ignore[union-attr]
            text = _dump(await session.call_tool("leak_text", {}))
        assert PLACEHOLDER in text and leaks_in(text, SECRET_2) == [] and leaks_in(text, SECRET) == []
        assert "vault secrets changed" in gateway.log_text()
    assert scan_files(tmp_path, SECRET) == {} and scan_files(tmp_path, SECRET_2) == {}


def test_a_missing_secret_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    plant(tmp_path, "api", SECRET)
    config = {"mcpServers": {"leaky": {**fixture_server("echo_secret_server.py"),
                                       "env": {"API_TOKEN": "vault:api", "OTHER": "x-${vault:nothere}"}}}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    done = cli(tmp_path, "serve", "simgate.json", "--port", str(free_port()))
    assert done.returncode == 2
    assert "server 'leaky'" in done.stderr and "env.OTHER" in done.stderr and "'nothere'" in done.stderr
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert not (tmp_path / ".simgate" / "servers").exists()  # no upstream was started


def test_no_vault_or_no_key_stops_the_start(tmp_path: Path) -> None:
    config = {"mcpServers": {"leaky": leaky_server()}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    done = cli(tmp_path, "serve", "simgate.json", "--port", str(free_port()))
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
    plant(tmp_path, "api", SECRET)
    (tmp_path / ".simgate" / "vault.key").unlink()
    done = cli(tmp_path, "serve", "simgate.json", "--port", str(free_port()))
    assert done.returncode == 2 and "no key for vault" in done.stderr and "Traceback" not in done.stderr


def test_a_malformed_reference_is_a_config_error(tmp_path: Path) -> None:
    from simgate.gateway.config.loader import parse_config
    from simgate.gateway.errors import ConfigError

    with pytest.raises(ConfigError, match=r"server 'x'.*env\.TOKEN.*not a valid vault reference"):
        parse_config(json.dumps({"mcpServers": {"x": {"command": "true", "env": {"TOKEN": "vault:bad name"}}}}))
    config = parse_config(json.dumps({"mcpServers": {"x": {"url": "http://h/mcp",
                                                             "headers": {"Authorization": "Bearer ${vault:tok}"}}}}))
    assert config.servers["x"].headers["Authorization"] == "Bearer ${vault:tok}"  # resolved at start, not at load


async def test_http_upstream_gets_the_secret_in_its_headers(tmp_path: Path) -> None:
    secret = "ghp_" + secrets.token_urlsafe(24) + "/+="  # what a header can carry: printable ASCII
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(FIXTURES / "echo_secret_server.py"), "--http", str(port)],  # noqa: ASYNC220
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "API_TOKEN": secret})
    try:
        assert wait_until(lambda: _listening(port), timeout=30)
        plant(tmp_path, "api", secret)
        config = {"gateway": {"record": "all"},
                  "mcpServers": {"remote": {"type": "http", "url": f"http://127.0.0.1:{port}/mcp",
                                            "headers": {"Authorization": "Bearer ${vault:api}"}}}}
        with running_gateway(config, tmp_path) as gateway:
            async with mcp_session(gateway.mcp_url("remote")) as session:
                digest = (await session.call_tool("auth_digest", {})).content[0]
                assert digest.text == hashlib.sha256(f"Bearer {secret}".encode()).hexdigest()  # type: ignore[union-attr]
                text = _dump(await session.call_tool("leak_text", {}))
                try:
                    await session.call_tool("leak_rpc_error", {})
                except MCPError as exc:
                    text += _dump(exc.error)
            assert PLACEHOLDER in text and leaks_in(text, secret) == []
            gateway.terminate()
        assert scan_files(tmp_path, secret) == {}
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


def test_a_secret_unfit_for_a_header_stops_the_start(tmp_path: Path) -> None:
    plant(tmp_path, "api", SECRET)  # non-ASCII
    config = {"mcpServers": {"remote": {"url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "vault:api"}}}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    done = cli(tmp_path, "serve", "simgate.json", "--port", str(free_port()))
    assert done.returncode == 2 and "headers.X-Key" in done.stderr and "Traceback" not in done.stderr
    assert leaks_in(done.stderr + done.stdout) == []


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
        return True
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------------------------------------- the redactor


def test_redactor_forms_keys_and_nesting() -> None:
    from simgate.gateway.pipeline.redact import Redactor

    redactor = Redactor({"api": SECRET})
    for kind, form in forms(SECRET).items():
        if kind == "random core":
            continue  # a fragment of the secret is not the secret: not replaced, but never produced alone
        if kind == "base64 in longer base64":
            form = "Basic " + base64.b64encode(b"user:" + SECRET.encode()).decode()
        assert leaks_in(redactor.redact_text(f"x {form} y")) == [], kind
    value = {SECRET: [SECRET, {"k": f"Bearer {SECRET}"}], "n": 1, "b": True, "none": None}
    redacted = redactor.redact(value)
    assert redacted == {PLACEHOLDER: [PLACEHOLDER, {"k": f"Bearer {PLACEHOLDER}"}], "n": 1, "b": True, "none": None}
    assert value[SECRET][0] == SECRET  # the input is not changed
    assert Redactor().redact(value) is value  # no secrets: nothing is copied


def test_redactor_keeps_old_values_and_prefers_the_longest() -> None:
    from simgate.gateway.pipeline.redact import Redactor

    redactor = Redactor({"short": "abcdefgh1"})
    redactor.update({"long": "abcdefgh1-and-more", "short": "new-value-2"})
    assert redactor.redact_text("abcdefgh1-and-more abcdefgh1 new-value-2") == \
        "[REDACTED:long] [REDACTED:short] [REDACTED:short]"


def test_stream_redaction_across_pieces() -> None:
    from simgate.gateway.pipeline.redact import Redactor, StreamRedactor

    redactor = Redactor({"api": SECRET})
    text = ("line one\n" + "x" * 50 + SECRET + "\n" + base64.b64encode(SECRET.encode()).decode() + " tail " + SECRET)
    for size in (1, 3, 7, 64):
        stream = StreamRedactor(redactor)
        out = "".join(stream.feed(text[i:i + size]) for i in range(0, len(text), size)) + stream.feed("", final=True)
        assert leaks_in(out) == [] and out.count(PLACEHOLDER) == 3, size
    # Only what could begin a secret is held back; a pause (flush) does not let it out, the next piece
    # completes it.
    stream = StreamRedactor(redactor)
    assert stream.feed("a complete line\npartial") == "a complete line\npartial"
    assert stream.feed(" then " + SECRET[:9], flush=True) == " then "
    assert stream.feed(SECRET[9:] + " end.") == PLACEHOLDER + " end."
    assert stream.feed("x " + SECRET[:9], final=True) == "x " + SECRET[:9]  # the end: not a secret after all


def test_console_output_wrapped_anywhere_and_split_items() -> None:
    """A console logger wraps inside a `%XX` escape (rich does, at its column width); a result splits a
    secret over text items, some a single character."""
    from simgate.gateway.pipeline.redact import Redactor, StreamRedactor

    redactor = Redactor({"api": SECRET})
    encoded = "".join(f"%{byte:02X}" for byte in SECRET.encode())
    text = f"[12:00] INFO rejected: {encoded[:10]}   \n                  {encoded[10:41]}\n{encoded[41:]}' done\n"
    for size in (1, 7, 4096):
        stream = StreamRedactor(redactor, wrapped=True)
        out = "".join(stream.feed(text[i:i + size]) for i in range(0, len(text), size)) + stream.feed("", final=True)
        assert out == f"[12:00] INFO rejected: {PLACEHOLDER}' done\n", size
    items = [{"type": "text", "text": "a " + SECRET[:1], "_meta": {SECRET: 1}}, SECRET[1:2], {"type": "image"},
             {"type": "text", "text": SECRET[2:] + " b"}]
    assert redactor.redact(items) == [{"type": "text", "text": "a " + PLACEHOLDER, "_meta": {PLACEHOLDER: 1}}, "",
                                      {"type": "image"}, {"type": "text", "text": " b"}]


def test_redacted_errors_and_recordings() -> None:
    from simgate.gateway.cache.records import RecordedError, Recording
    from simgate.gateway.pipeline.redact import Redactor, redact_error, redact_recording

    redactor = Redactor({"api": SECRET})
    error = redact_error(redactor, MCPError(-32010, f"denied {SECRET}", {"t": SECRET}))
    assert error.message == f"denied {PLACEHOLDER}" and error.data == {"t": PLACEHOLDER}
    assert SECRET not in str(error) and SECRET not in repr(error.args)
    recording = Recording(key="a" * 64, server="s", tool="t", tool_fingerprint="b" * 64, arguments={"q": SECRET},
                          error=RecordedError(code=1, message=SECRET, data=[SECRET]), latency_ms=1.0,
                          recorded_at="now")
    assert leaks_in(redact_recording(redactor, recording).model_dump_json()) == []
    assert redact_recording(redactor, recording).key == "a" * 64


def test_log_records_are_redacted() -> None:
    import logging

    from simgate.gateway.logs import JsonFormatter, RedactingFilter
    from simgate.gateway.pipeline.redact import Redactor

    log_filter = RedactingFilter(Redactor({"api": SECRET}))
    try:
        raise ValueError(f"boom {SECRET}")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "token %s", (SECRET,),
                                                   sys.exc_info(), extra={"headers": {"auth": SECRET}, "n": 3})
    assert log_filter.filter(record)
    line = JsonFormatter().format(record)
    assert leaks_in(line) == [] and line.count(PLACEHOLDER) == 3 and '"n": 3' in line


def test_vault_file_defaults() -> None:
    from simgate.gateway.config.models import GatewaySettings

    assert GatewaySettings().vault_file == ".simgate/vault.json"
    assert GatewaySettings(state_dir="/s").vault_file == "/s/vault.json"
    assert GatewaySettings(vault_path="/v.json").vault_file == "/v.json"


def test_the_simulator_sees_old_recordings_redacted(tmp_path: Path) -> None:
    """Recordings made before a secret was in the vault are redacted on their way to a simulator."""
    from simgate.gateway.cache.records import Recording
    from simgate.gateway.cache.store import DiskStore
    from simgate.gateway.pipeline.redact import RedactingStore, Redactor

    store = DiskStore(tmp_path / "cache")
    try:
        store.put(Recording(key="c" * 64, server="s", tool="t", tool_fingerprint="d" * 64, arguments={},
                            result={"content": [{"type": "text", "text": f"token {SECRET}"}]}, latency_ms=1.0,
                            recorded_at="now"), replace=True)
        view = RedactingStore(store, Redactor({"api": SECRET}))
        assert leaks_in(view.get("c" * 64)[0].model_dump_json()) == []
        assert view.tool_keys("s", "t") == store.tool_keys("s", "t")
    finally:
        store.close()


# ---------------------------------------------------------------------------------------------- encodings and splits

# The kinds of tests/fixtures/echo_secret_server.py `encoded`: each one a search for fixed spellings misses.
ENCODED_KINDS = ["percent_every_byte", "percent_every_byte_lower", "percent_mixed_case", "base64_wrapped",
                 "base64url_wrapped_crlf", "base64_in_pem", "hex_lower", "hex_upper", "hex_mixed_case",
                 "json_u_every_char", "json_u_upper_some_chars"]
_BREAKS = re.compile(r"[ \t]*(?:\r?\n|(?:\\+r)?\\+n)[ \t]*")  # line breaks, as characters or JSON-escaped
_JSON_U = re.compile(r"\\+u([0-9a-fA-F]{4})")


def decoded_views(text: str) -> list[str]:
    """`text` as it is and with each encoding undone: line breaks removed, %XX and \\uXXXX decoded."""
    unwrapped = _BREAKS.sub("", text)
    views = [text, unwrapped]
    for view in (text, unwrapped):
        views += [urllib.parse.unquote(view), _JSON_U.sub(lambda m: chr(int(m.group(1), 16)), view)]
    return views


def encoded_leaks(text: str, secret: str = SECRET) -> list[str]:
    """Leaks of `secret` in `text` once encodings are undone (a different method from the redactor's)."""
    data = secret.encode("utf-8")
    needles = {"plain": secret}
    core = re.search(r"/([0-9a-f]{24})\+", secret)
    if core:
        needles["random core"] = core.group(1)
    for offset in range(3):  # its base64 at each alignment inside a longer base64 text
        for alphabet in (None, b"-_"):
            shifted = base64.b64encode(b"\0" * offset + data, altchars=alphabet).decode()
            needles[f"base64 at {offset} {alphabet}"] = shifted[-(-8 * offset // 6):(8 * (offset + len(data))) // 6]
    found = set()
    for view in decoded_views(text):
        found |= {kind for kind, needle in needles.items() if needle in view}
        if data.hex() in view.lower():
            found.add("hex")
    return sorted(found)


def joined_texts(value: Any) -> list[str]:
    """The texts of the text items of every list in a JSON value, joined as a reader would."""
    out: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            out += joined_texts(item)
    elif isinstance(value, list):
        out.append("".join(item if isinstance(item, str) else item.get("text", "") if isinstance(item, dict) else ""
                           for item in value if isinstance(item, str | dict)))
        for item in value:
            out += joined_texts(item)
    return out


def test_the_encoded_scan_would_see_each_leak() -> None:
    """The test's own scanner: every kind the fixture produces, and a split, is seen."""
    sys.path.insert(0, str(FIXTURES))
    try:
        import echo_secret_server
    finally:
        sys.path.remove(str(FIXTURES))
    produced = echo_secret_server.encoded(SECRET)
    assert sorted(produced) == sorted(ENCODED_KINDS)
    for kind, value in produced.items():
        assert encoded_leaks(f"x {value} y"), kind
        assert encoded_leaks(json.dumps({"v": value})), kind  # as written on the wire
    assert encoded_leaks("".join(joined_texts({"content": [{"text": SECRET[:5]}, {"text": SECRET[5:]}]})))


def _encoded_config() -> dict[str, Any]:
    return {"gateway": {"record": "all", "simulator": {"backend": "examples"}, "log_level": "debug"},
            "mcpServers": {"leaky": leaky_server()}}


@pytest.fixture(scope="module")
def encoded_leaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("encoded")
    plant(work, "api", SECRET)
    with running_gateway(_encoded_config(), work) as running:
        yield running


async def _encoded_traffic(session: Any, kind: str, received: list[str]) -> None:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append(json.dumps(message, ensure_ascii=False))

    result = await session.call_tool("leak_encoded", {"kind": kind}, progress_callback=on_progress)
    received.append(_dump(result))
    received.append(_dump(await session.call_tool("leak_encoded_tool_error", {"kind": kind})))
    try:
        await session.call_tool("leak_encoded_error", {"kind": kind})
    except MCPError as exc:
        received += [_dump(exc.error), str(exc)]


def _after(text: str, needle: str) -> str:
    """What follows `needle` in `text` (it must be there): where the secret was written."""
    assert needle in text, needle
    start = text.index(needle) + len(needle)
    return text[start:start + 200]


@pytest.mark.parametrize("kind", ENCODED_KINDS)
async def test_an_encoded_secret_is_redacted_in_results_errors_and_notifications(
        encoded_leaky: GatewayProcess, kind: str) -> None:
    received: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(_dump(params))

    async with mcp_session(encoded_leaky.mcp_url("leaky"), logging_callback=on_log) as session:
        await _encoded_traffic(session, kind, received)
        await anyio.sleep(0.2)  # late notifications
    everything = "\n".join(received)
    for needle in (f"log {kind}: ", f"progress {kind}: ", f"rejected {kind}: ", f"denied {kind}: "):
        assert PLACEHOLDER in _after(everything, needle), needle  # every channel delivered, redacted
    assert encoded_leaks(everything) == [], [item for item in received if encoded_leaks(item)][:2]


async def test_a_secret_split_across_content_items_is_redacted(encoded_leaky: GatewayProcess) -> None:
    async with mcp_session(encoded_leaky.mcp_url("leaky")) as session:
        result = await session.call_tool("leak_split", {})
    texts = [item.text for item in result.content]  # type: ignore[union-attr]
    assert len(texts) == 4 and "".join(texts) == f"the token is {PLACEHOLDER} (split)", texts
    assert encoded_leaks(_dump(result)) == []


async def test_encoded_and_split_secrets_reach_no_file(tmp_path: Path) -> None:
    """The store, an exported cassette, stderr.log (a secret written over a pause too) and the
    gateway's log hold none of them."""
    plant(tmp_path, "api", SECRET)
    with running_gateway(_encoded_config(), tmp_path) as gateway:
        async with mcp_session(gateway.mcp_url("leaky")) as session:
            for kind in ENCODED_KINDS:
                await _encoded_traffic(session, kind, [])
            await session.call_tool("leak_split", {})
            await session.call_tool("leak_stderr_split", {})
        export = cli(tmp_path, "cache", "export", "--cache-dir", ".simgate/cache", "exported.jsonl")
        assert export.returncode == 0, export.stderr
        assert gateway.terminate() in (0, -15)
    from simgate.gateway.cache.store import DiskStore

    store = DiskStore(tmp_path / ".simgate" / "cache")
    try:
        recordings = [recording.model_dump(mode="json") for recording in store.all()]
    finally:
        store.close()
    assert len(recordings) >= 2 * len(ENCODED_KINDS) + 1
    cassette = [json.loads(line) for line in (tmp_path / "exported.jsonl").read_text().splitlines()]
    for where, values in (("store", recordings), ("cassette", cassette)):
        for value in values:
            found = encoded_leaks(json.dumps(value, ensure_ascii=False)) + encoded_leaks("\n".join(joined_texts(value)))
            assert found == [], (where, found, str(value)[:300])
    stderr_log = (tmp_path / ".simgate" / "servers" / "leaky" / "stderr.log").read_text()
    assert f"split over a pause: {PLACEHOLDER} end of split" in stderr_log
    assert all(PLACEHOLDER in _after(stderr_log, f"stderr {kind}: ") for kind in ENCODED_KINDS)
    assert PLACEHOLDER in (tmp_path / "gateway.log").read_text()  # its debug log of bodies was redacted
    found = {}
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and not path.is_symlink():
            kinds = encoded_leaks(path.read_bytes().decode("utf-8", "replace"))
            if kinds:
                found[str(path.relative_to(tmp_path))] = kinds
    assert found == {}
