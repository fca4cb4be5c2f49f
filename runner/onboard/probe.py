"""Probe one server: serve it alone behind a private gateway, offline, and call every tool.

The gateway does what it always does — installs the package, runs the server in its sandbox with
its own dirs, records every answer into the store — so onboarding uses the same code paths as
serving, and what it records replays under `simgate serve` as it is. The server runs with no network
but the gateway's egress proxy with an empty allowlist: nothing gets out, and the proxy's log says
which hosts and ports a tool tried to reach. Runner code reaches the gateway only as an MCP client
over HTTP (and its admin API), as everywhere in `runner/`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, Field

from simgate.gateway.cache.store import DiskStore
from simgate.gateway.upstream.start_hints import http_listener, serves_http_instead
from simgate.results import schema_error, text_of
from simgate.runner.onboard.arguments import ProbeArguments, name_hints, probe_arguments
from simgate.runner.onboard.classify import env_names, outcome_of
from simgate.runner.onboard.observations import CallOutcome, ProbeCall, ServerStatus, ToolReport
from simgate.runner.onboard.specs import Candidate
from simgate.sandboxes.workdir import directory_name
from simgate.simulators.schema import SchemaSynthesisError, synthesize

TEXT_LIMIT = 2000  # characters of an answer kept in the report
RESULT_LIMIT = 64 * 1024  # bytes of an answer kept in the report (the store keeps it whole)
# The task the deliberately invalid calls are recorded under, so they can be taken out of the seeded world: a
# served gateway refuses such calls itself (`validate_arguments`), so they would only mislead a simulator.
INVALID_INPUT_TASK = "onboard/invalid-input"

# Start-up failures with a known remedy: the stderr signature, the fix, and what it changes in the entry.
_MCP_DRIFT = re.compile(r"(ImportError|ModuleNotFoundError|AttributeError|TypeError)[^\n]*\bmcp\b|"
                        r"No module named 'mcp\.|from mcp[.\w]* import|cannot import name '[^']+' from 'mcp",
                        re.IGNORECASE)
_PYTHON_MISSING = re.compile(r"No interpreter found for Python ([\d.]+)|requires-python|"
                             r"Python ([\d.]+) (is not installed|not found)", re.IGNORECASE)


class ProbeSettings(BaseModel):
    state_dir: Path
    store_dir: Path
    sandbox: str = Field("bwrap", description="bwrap, docker, or none (then no network isolation: refused unless "
                         "allow_network)")
    allow_network: bool = False
    startup_timeout: float = 600.0  # the first start includes the install
    http_grace: float = 15.0  # seconds a server that says it listens on HTTP gets to answer on stdio anyway
    call_timeout: float = 20.0
    vary_arguments: int = 3  # optional arguments varied one at a time to find ones that do not matter
    python: str = sys.executable


class StartFailure(Exception):
    def __init__(self, status: ServerStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe_entry(entry: dict[str, Any], settings: ProbeSettings) -> dict[str, Any]:
    """The entry as probed: sandboxed with a closed egress proxy (unless the user allowed the network)."""
    probed = {key: value for key, value in entry.items() if key not in ("disabled", "enabled")}
    if settings.sandbox != "none":
        sandbox = dict(probed.get("sandbox") or {})
        sandbox["backend"] = settings.sandbox
        sandbox["network"] = "host" if settings.allow_network else {"allow": []}
        probed["sandbox"] = sandbox
    probed["startup_timeout"] = settings.startup_timeout
    probed["http_grace"] = settings.http_grace  # the gateway gives such a start up by itself, as the probe would
    probed["call_timeout"] = settings.call_timeout
    probed["health_interval"] = 3600  # a probe must not be interrupted by a liveness restart
    probed["validate_arguments"] = False  # the invalid call must reach the server: how it refuses is evidence
    return probed


class ProbedGateway:
    """A private `simgate serve` of one server; its log is read for the egress proxy's decisions."""

    def __init__(self, name: str, entry: dict[str, Any], settings: ProbeSettings) -> None:
        self.name = name
        self.settings = settings
        self.workdir = Path(tempfile.mkdtemp(prefix=f"simgate-onboard-{directory_name(name)}-"))
        self.config = {"gateway": {"state_dir": str(settings.state_dir), "cache_dir": str(settings.store_dir),
                                   "record": "all", "log_level": "info"},
                       "mcpServers": {name: entry}}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._stderr_offset = 0  # where this start's stderr begins (a resumed run appends to the old log)

    @property
    def server_dir(self) -> Path:
        return (self.settings.state_dir / "servers" / directory_name(self.name)).resolve()

    def start(self) -> None:
        try:
            self._stderr_offset = (self.server_dir / "stderr.log").stat().st_size
        except OSError:
            self._stderr_offset = 0
        config_path = self.workdir / "simgate.json"
        config_path.write_text(json.dumps(self.config))
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [self.settings.python, "-m", "simgate", "serve", str(config_path), "--host", "127.0.0.1",
                 "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    async def wait_ready(self) -> dict[str, Any]:
        """The server's status once it is ready; raises StartFailure with the reason otherwise."""
        deadline = time.monotonic() + self.settings.startup_timeout + 30
        heard_http = 0.0
        async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise StartFailure(ServerStatus.CRASHED_ON_START,
                                       f"the gateway exited ({self.process.returncode}): {self.log_tail(800)}")
                try:
                    answer = await http.get(f"{self.url}/admin/servers")
                    status = next(s for s in answer.json()["servers"] if s["name"] == self.name)
                except (httpx.HTTPError, ValueError, KeyError, StopIteration):
                    status = None
                if status is not None:
                    if status["state"] == "ready":
                        return status
                    if status.get("last_error"):
                        raise self.failure(status["last_error"])
                listening = http_listener(self.stderr_since_start())
                if listening is not None:
                    # Its default transport is HTTP: no stdio handshake will come, however long we wait.
                    heard_http = heard_http or time.monotonic()
                    if time.monotonic() - heard_http > self.settings.http_grace:
                        raise StartFailure(ServerStatus.PROTOCOL_ERROR, serves_http_instead(listening))
                if time.monotonic() > deadline:
                    raise StartFailure(ServerStatus.CRASHED_ON_START,
                                       f"not ready after {self.settings.startup_timeout:g}s; stderr: "
                                       f"{_short(self.stderr_since_start()[-600:]) or '(empty)'}")
                await anyio.sleep(0.3)

    def failure(self, last_error: str) -> StartFailure:
        stderr = self.stderr_tail()
        text = f"{last_error}\n{stderr}"
        listening = http_listener(stderr)
        if listening is not None and serves_http_instead(listening) in last_error:  # the gateway's verdict
            return StartFailure(ServerStatus.PROTOCOL_ERROR, serves_http_instead(listening))
        if "install" in last_error.lower() and ("failed" in last_error.lower() or "error" in last_error.lower()):
            return StartFailure(ServerStatus.INSTALL_FAILED, _short(last_error))
        refused = usage_error(stderr)
        if refused is not None and not _ASKS_FOR_CREDENTIALS.search(refused):
            # Its own command line was refused (the rest of a usage text may still mention tokens or keys).
            return StartFailure(ServerStatus.CRASHED_ON_START,
                                f"its command line was refused (fix the args of its entry): {_short(refused)}")
        names = env_names([stderr, last_error])
        if names or _ASKS_FOR_CREDENTIALS.search(refused or stderr):
            detail = f" ({', '.join(names)})" if names else ""
            return StartFailure(ServerStatus.NEEDS_CREDENTIALS,
                                f"exits at start asking for credentials{detail}: {_short(stderr or last_error)}")
        if "protocol" in text.lower() or "initialize" in last_error.lower() and "json" in stderr.lower():
            return StartFailure(ServerStatus.PROTOCOL_ERROR, _short(text))
        return StartFailure(ServerStatus.CRASHED_ON_START, _short(f"{last_error}; stderr: {stderr}"))

    def stderr_tail(self, limit: int = 4000) -> str:
        """The end of the server's stderr of this start, each line once (a server restarted at start says it
        again and again); what an earlier start or run wrote to the same log is not this start's story."""
        lines = self.stderr_since_start(limit).strip().splitlines()
        return "\n".join(dict.fromkeys(line for line in lines if line.strip()))

    def stderr_since_start(self, limit: int = 16000) -> str:
        """What the server wrote on stderr since this start (at most its last `limit` bytes)."""
        try:
            with open(self.server_dir / "stderr.log", "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._stderr_offset, size - limit) if size >= self._stderr_offset else 0)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-limit:].decode(errors="replace")
        except OSError:
            return ""

    def egress_since_last(self) -> list[str]:
        """host:port pairs the proxy refused since the last look (from the gateway's JSON log)."""
        try:
            with open(self.log, "rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        hosts: list[str] = []
        for line in data[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("logger") == "simgate.egress" and entry.get("decision") in ("denied", "failed"):
                target = str(entry.get("target", ""))
                target = re.sub(r"^[a-z]+://", "", target).split("/", 1)[0]
                if target and target not in hosts:
                    hosts.append(target)
        return hosts


_ASKS_FOR_CREDENTIALS = re.compile(r"api[ _-]?key|token|credential|environment variable", re.IGNORECASE)
# The error line of an argument parser's usage failure: Click/Typer's `Error: ...` after a `Usage:` line,
# argparse's `PROG: error: ...`, commander's `error: ...`.
_USAGE = re.compile(r"^\s*usage:", re.IGNORECASE | re.MULTILINE)
_USAGE_ERROR = re.compile(r"^\s*(?:\S+: )?error: .+$", re.IGNORECASE | re.MULTILINE)


def usage_error(stderr: str) -> str | None:
    """The error line when `stderr` is an argument parser refusing the command line, else None."""
    if not _USAGE.search(stderr):
        return None
    found = _USAGE_ERROR.search(stderr)
    return found.group(0).strip() if found else None


def _short(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def installed_mcp_major(server_dir: Path) -> int | None:
    """The major version of the `mcp` SDK in the server's install (from its install manifest)."""
    for manifest in sorted(server_dir.glob("tools/*/simgate-install.json")):
        try:
            packages = json.loads(manifest.read_text()).get("packages") or []
        except (OSError, ValueError):
            continue
        for package in packages:
            if isinstance(package, dict) and str(package.get("name", "")).lower() == "mcp":
                head = str(package.get("version", "")).split(".", 1)[0]
                return int(head) if head.isdigit() else None
    return None


def start_fix(failure: StartFailure, gateway: ProbedGateway, entry: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A known remedy for a start-up failure, as (what was fixed, the changed entry); None if none applies.

    SDK drift: a Python server that dies at start with an import/attribute/type error while its install
    has the 2.x `mcp` SDK was written for 1.x (most declare `mcp>=1` unbounded)."""
    stderr = gateway.stderr_tail(20000)
    installs_pypi = str(entry.get("package", "")).startswith("pypi:") or entry.get("command") == "uvx"
    python_error = re.search(r"^(ImportError|ModuleNotFoundError|AttributeError|TypeError|NameError)\b", stderr,
                             re.MULTILINE)
    drift = _MCP_DRIFT.search(stderr) or (python_error and (installed_mcp_major(gateway.server_dir) or 0) >= 2)
    if installs_pypi and drift and "mcp<2" not in json.dumps(entry):
        fixed = dict(entry)
        if "package" in fixed:
            fixed["constraints"] = [*fixed.get("constraints", []), "mcp<2"]
        else:
            fixed["args"] = ["--with", "mcp<2", *fixed.get("args", [])]
        return "mcp<2 (the server was written for the 1.x SDK)", fixed
    match = _PYTHON_MISSING.search(stderr + failure.reason)
    if installs_pypi and match and entry.get("command") == "uvx" and "--python" in entry.get("args", []):
        args = list(entry["args"])
        index = args.index("--python")
        del args[index:index + 2]
        return f"dropped --python {match.group(1) or match.group(2)} (not installed here)", {**entry, "args": args}
    return None


def snapshot(directory: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """path → (size, mtime) of every file under the server's HOME, TMPDIR and work dir."""
    files: dict[str, tuple[int, int]] = {}
    for part in ("home", "tmp", "work"):
        root = directory / part
        for dirpath, dirnames, filenames in os.walk(root):
            if skip is not None and Path(dirpath) == skip:
                dirnames[:] = []
                continue
            for filename in filenames:
                path = Path(dirpath) / filename
                try:
                    stat = path.lstat()
                except OSError:
                    continue
                files[str(path.relative_to(directory))] = (stat.st_size, stat.st_mtime_ns)
            if len(files) > 20000:  # bounded: a server with a huge tree is judged on what was seen
                return files
    return files


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))


@asynccontextmanager
async def client_session(url: str, timeout: float):  # type: ignore[no-untyped-def]
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=timeout + 30), trust_env=False) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def call_once(session: ClientSession, tool: str, arguments: ProbeArguments, kind: str, attempt: int,
                    gateway: ProbedGateway, timeout: float, session_name: str) -> ProbeCall:
    before = snapshot(gateway.server_dir)
    gateway.egress_since_last()
    started_at = time.time()
    started = time.perf_counter()
    result: dict[str, Any] | None = None
    code: int | None = None
    text = ""
    timed_out = False
    try:
        with anyio.fail_after(timeout + 15):
            answer = await session.call_tool(tool, arguments.arguments, read_timeout_seconds=timeout + 10,
                                             meta={"simgate/session": session_name,  # type: ignore[call-overload]
                                                   **({} if arguments.valid else {"simgate/task": INVALID_INPUT_TASK})})
        result = answer.model_dump(mode="json", by_alias=True, exclude_none=True)
        result.get("_meta", {}).pop("simgate/provenance", None)
        if not result.get("_meta"):
            result.pop("_meta", None)
        text = text_of(result)
    except MCPError as exc:
        code, text = exc.error.code, exc.error.message
    except TimeoutError:
        timed_out, text = True, f"no answer in {timeout + 15:g}s"
    except Exception as exc:  # the client refused the answer (e.g. structuredContent against outputSchema)
        code, text = -32603, f"{type(exc).__name__}: {exc}"
    latency = (time.perf_counter() - started) * 1000
    await anyio.sleep(0.05)  # let the proxy's log line of a refused connection land
    files = changed_files(before, snapshot(gateway.server_dir))
    kept = result if result is not None and len(json.dumps(result)) <= RESULT_LIMIT else None
    return ProbeCall(kind=kind, arguments=arguments.arguments, valid=arguments.valid, attempt=attempt,
                     outcome=outcome_of(result, code, timed_out), error_code=code, text=text[:TEXT_LIMIT],
                     result=kept, latency_ms=round(latency, 2), started_at=started_at, files_changed=files[:50],
                     egress=gateway.egress_since_last())


def varied_arguments(schema: dict[str, Any], base: ProbeArguments, limit: int) -> list[ProbeArguments]:
    """`base` plus one optional argument at a time, set to a value other than its default."""
    properties = found if isinstance(found := schema.get("properties"), dict) else {}
    hints = name_hints(schema)
    sets = []
    for name in [name for name in properties if name not in base.arguments][:limit]:
        try:
            value = hints.get(name, synthesize(properties[name] or {}, f"vary/{name}"))
        except (SchemaSynthesisError, ValueError):
            continue
        if value == (properties[name] or {}).get("default", object()):
            continue
        candidate = {**base.arguments, name: value}
        try:
            if schema_error(schema, candidate) is not None:
                continue
        except ValueError:
            continue
        sets.append(ProbeArguments(kind=f"vary:{name}", arguments=candidate, valid=True))
    return sets


async def probe_tools(gateway: ProbedGateway, candidate: Candidate, settings: ProbeSettings,
                      llm_arguments: Any = None) -> tuple[list[ToolReport], list[str], list[str], dict[str, Any]]:
    """Every tool called with each argument set, twice; the prompts' and resources' names; server info."""
    url = f"{gateway.url}/servers/{candidate.name}/mcp"
    reports: list[ToolReport] = []
    async with client_session(url, settings.call_timeout) as session:
        info = session.initialize_result
        server_info = (info.server_info.model_dump(mode="json", exclude_none=True)
                       if info is not None and info.server_info else {})
        tools = (await session.list_tools()).tools
        prompts = await _names(session.list_prompts, "prompts")
        resources = await _names(session.list_resources, "resources")
        for tool in tools:
            schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
            annotations = tool.annotations.model_dump(mode="json", exclude_none=True) if tool.annotations else None
            report = ToolReport(name=tool.name, description=tool.description, input_schema=schema,
                                annotations=annotations)
            sets = probe_arguments(schema, seed=f"{candidate.name}/{tool.name}", description=tool.description)
            if llm_arguments is not None:
                sets += await llm_arguments(tool.name, tool.description, schema)
            minimal = next((s for s in sets if s.kind == "minimal"), None)
            if minimal is not None:
                sets += varied_arguments(schema, minimal, settings.vary_arguments)
            for arguments in sets:
                attempts = 2 if arguments.valid else 1
                for attempt in range(1, attempts + 1):
                    call = await call_once(session, tool.name, arguments, arguments.kind, attempt, gateway,
                                           settings.call_timeout,
                                           f"onboard/{candidate.name}/{tool.name}/{arguments.kind}/{attempt}")
                    report.calls.append(call)
                    if call.outcome is CallOutcome.TIMEOUT:
                        break  # a tool that hangs is not called again with the same arguments
            reports.append(report)
    return reports, prompts, resources, server_info


async def _names(lister: Any, field: str) -> list[str]:
    try:
        listed = await lister()
    except Exception:  # a server without the capability answers -32601; nothing to list
        return []
    return [str(getattr(item, "name", None) or getattr(item, "uri", "")) for item in getattr(listed, field, [])]


def forget_invalid_probes(store_dir: Path, server: str) -> int:
    """Delete the recordings of the invalid probe calls of `server`; returns how many."""
    store = DiskStore(store_dir)
    try:
        # Only this server's keys (through the tool list its gateway kept), not a scan of the whole store.
        keys = {key for tool in store.load_tools(server) for key in store.tool_keys(server, tool.get("name", ""))}
        doomed = [key for key in keys if any(r.task == INVALID_INPUT_TASK for r in store.get(key))]
        return sum(store.delete(key) for key in doomed)
    finally:
        store.close()
