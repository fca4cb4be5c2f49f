"""One upstream MCP server: a single long-lived session shared by every client, supervised.

The supervisor starts the server, initializes it, lists its tools, and then watches it: when the
stream ends (the process exited) or a liveness ping fails (it stopped answering), calls in flight
fail at once with a clear error, and the server is restarted with exponential backoff.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol

import anyio
import mcp_types as types
from mcp.client.session import ClientRequestContext, ClientSession
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, TypeAdapter

from simgate.gateway.config.models import GatewaySettings, ServerConfig
from simgate.gateway.errors import RESULT_TOO_LARGE, ResultTooLarge, UpstreamTimeout, UpstreamUnavailable
from simgate.gateway.upstream.correlation import Callers, unmarked, without_mark
from simgate.gateway.upstream.errlog import rotating_errlog
from simgate.gateway.upstream.origin_protocol import Origin
from simgate.gateway.upstream.raw_calls import RawCalls
from simgate.gateway.upstream.start_hints import (
    ServesHttpInstead,
    announced_listener,
    http_listener,
    log_size,
    serves_http_instead,
    written_since,
)
from simgate.gateway.upstream.tool_list import usable_tools
from simgate.gateway.upstream.tool_results import usable_result
from simgate.gateway.upstream.transport import open_transport
from simgate.sandboxes.exposure import Exposure
from simgate.sandboxes.install import InstallError
from simgate.sandboxes.workdir import ServerDirs, prepare_server_dirs

logger = logging.getLogger("simgate.upstream")

_RAW_RESULT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_CLIENT_INFO = types.Implementation(name="simgate", version="0.1.0")
# `_meta` keys of the 2026-07-28 envelope; a handshake-era upstream rejects calls that carry them.
_MODERN_META_PREFIX = "io.modelcontextprotocol/"

NotificationSink = Callable[[str, types.ServerNotification], Awaitable[None]]


class ToolSnapshots(Protocol):
    """Where the last tool list of each server is kept, so its tools stay known while it is down."""

    def save_tools(self, server: str, tools: list[dict[str, Any]]) -> None: ...

    def load_tools(self, server: str) -> list[dict[str, Any]]: ...


class UpstreamState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    # Its install failed: not retried by itself (an install is long), only on request. Or it serves HTTP
    # instead of stdio: retried at the back-off (it may have been slow, not wrong), failed meanwhile.
    FAILED = "failed"
    STOPPED = "stopped"  # stopped on request (`POST /admin/servers/NAME/stop`) or with the gateway

# A failed install is tried again on request (`POST /admin/servers/NAME/restart`), or after this long.
INSTALL_RETRY_SECONDS = 3600.0
# Upstream latencies kept per server for its percentiles (the most recent ones; a fixed bound).
LATENCY_SAMPLES = 1024


class _RawRequest(types.Request[dict[str, Any] | None, str]):
    """A request forwarded as it came, so unknown fields survive the trip."""

    params: dict[str, Any] | None = None


class _RawNotification(types.Notification[dict[str, Any] | None, str]):
    params: dict[str, Any] | None = None


class Upstream:
    """A supervised session with one upstream server; `run()` owns its whole life."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        state_dir: Path,
        on_notification: NotificationSink | None = None,
        snapshots: ToolSnapshots | None = None,
        raw_calls: bool = True,
        settings: GatewaySettings | None = None,
        exposure: Exposure | None = None,
        errlog_redactor: Any = None,
        replica: int | None = None,
    ) -> None:
        self.name = name
        self._replica = replica  # one of several gateway replicas: its own dirs (see sandboxes.workdir)
        self._use_raw_calls = raw_calls  # tool calls beside the session (see `raw_calls`); else through it
        self.config = config
        self._settings = settings or GatewaySettings()  # the gateway's limits: result size, stderr.log size
        self._state_dir = state_dir
        self._exposure = exposure  # what its sandbox must never show
        self._on_notification = on_notification
        self.state = UpstreamState.STARTING
        self.last_error: str | None = None
        self.restarts = 0
        self.consecutive_failures = 0
        self.initialize_result: types.InitializeResult | None = None
        self._snapshots = snapshots
        self.tools: list[dict[str, Any]] = snapshots.load_tools(name) if snapshots is not None else []
        self._session: ClientSession | None = None
        self._raw_calls: RawCalls | None = None  # tool calls beside the session, on the same transport
        self._lister: RawCalls | None = None  # the tool list is always read beside the session (`_list_tools`)
        self._changed = anyio.Event()  # set (and renewed) whenever the upstream comes up or goes down
        self._retry = anyio.Event()  # set to try a failed install again
        self._callers = Callers(name)  # client requests in flight: where request-scoped messages go back
        self._restart_now = anyio.Event()
        self._closed: anyio.Event | None = None  # set to end the current session (see `restart`)
        self._stale = False  # the config changed while the server was (re)starting
        self.errlog_redactor = errlog_redactor  # given when the server gets vault secrets: its stderr is redacted
        self.egress_decisions: Counter[str] = Counter()  # its network-allowlist proxy's, across restarts
        self.latencies: deque[float] = deque(maxlen=LATENCY_SAMPLES)  # seconds of its recent tool calls
        self._hold = False  # stopped on request: the supervisor waits for `start()` instead of restarting
        self._resume = anyio.Event()

    # ----------------------------------------------------------------- supervision

    async def run(self) -> None:
        """Keep the upstream running until cancelled."""
        dirs = prepare_server_dirs(self._state_dir, self.name, self._replica)
        from simgate.gateway.pipeline.redact import redacting_pipe  # here: the pipeline imports this package

        settings = self._settings
        with (rotating_errlog(dirs.run / "stderr.log", settings.stderr_log_bytes, settings.stderr_log_backups,
                              self.name) as log_file,
              redacting_pipe(log_file, self.errlog_redactor, self.name) as stderr):
            try:
                await self._supervise(dirs, stderr)
            finally:
                self.state = UpstreamState.STOPPED

    def restart(self, reason: str) -> None:
        """End the current session so the supervisor starts the server again with `self.config` as it is now."""
        self._stale = True
        self.last_error = reason
        if self._closed is not None:
            self._closed.set()

    def retry(self, reason: str = "restart requested") -> None:
        """Start again now: a failed install is tried once more, a running server is restarted."""
        if self._hold:
            self.start()
        elif self.state == UpstreamState.FAILED:
            self._retry.set()
        else:
            self.restart(reason)

    def stop(self, reason: str = "stopped on request") -> None:
        """Stop the server and keep it stopped (calls fail at once) until `start()`."""
        if self._hold:
            return  # stopped already (a new event would strand the supervisor waiting on the old one)
        self._hold = True
        self._resume = anyio.Event()
        if self.state == UpstreamState.FAILED:
            self._retry.set()  # leave the wait for a retry: the supervisor then waits for `start()`
        self.restart(reason)

    def start(self) -> None:
        """Start a server stopped with `stop()` (anything else: no change)."""
        if self._hold:
            self._hold = False
            self._resume.set()

    async def _held(self) -> None:
        """While stopped on request: report it, and wait to be started."""
        self.state = UpstreamState.STOPPED
        self.last_error = "stopped on request"
        self._signal_change()
        logger.info("upstream %s stopped on request", self.name)
        await self._resume.wait()
        self.last_error = None
        self.state = UpstreamState.STARTING
        self._signal_change()

    async def _supervise(self, dirs: ServerDirs, stderr: IO[str]) -> None:
        backoff = 0.5
        while True:
            if self._hold:
                await self._held()
                backoff = 0.5
            started = time.monotonic()
            install_failed = http_instead = False
            logged = log_size(dirs.run / "stderr.log")  # where this start's stderr begins
            try:
                await self._serve_once(dirs, stderr, logged)
                self.last_error = self.last_error or "the server closed its connection"
            except Exception as exc:  # anything an upstream does must not take the gateway down
                self.consecutive_failures += 1
                self.last_error = _describe(exc)
                if _raised(exc, TimeoutError):
                    listening = http_listener(written_since(dirs.run / "stderr.log", logged))
                    if listening is not None:
                        self.last_error = f"{self.last_error}: {serves_http_instead(listening)}"
                install_failed = isinstance(exc, InstallError)
                http_instead = _raised(exc, ServesHttpInstead)
                logger.warning("upstream %s failed: %s", self.name, self.last_error)
            finally:
                self._mark_down()
            if install_failed:
                self.state = UpstreamState.FAILED
                self._signal_change()
                self._retry = anyio.Event()
                logger.warning("upstream %s: its install failed; not retried until asked (POST "
                               "/admin/servers/%s/restart) or for %.0fs", self.name, self.name, INSTALL_RETRY_SECONDS)
                with anyio.move_on_after(INSTALL_RETRY_SECONDS):
                    await self._retry.wait()
                if not self._hold:
                    self.restarts += 1
                continue
            if self._hold:
                continue  # stopped on request: no back-off, no restart counted
            if time.monotonic() - started > 60:
                backoff = 0.5  # it ran well for a while: restart promptly
            logger.info("upstream %s: restarting in %.1fs (%s)", self.name, backoff, self.last_error)
            if http_instead:
                # It will most likely say so again: calls fail at once meanwhile (`wait_ready`), and a
                # restart on request (`retry`) tries at once. Retried still, as it may only have been slow.
                self.state = UpstreamState.FAILED
                self._retry = anyio.Event()
                self._signal_change()
                with anyio.move_on_after(backoff):
                    await self._retry.wait()
                if self._hold:
                    continue
            else:
                await anyio.sleep(backoff)
            backoff = min(backoff * 2, self.config.max_restart_backoff)
            self.restarts += 1

    async def _serve_once(self, dirs: ServerDirs, stderr: IO[str], logged: int) -> None:
        self._stale = False
        async with (
            open_transport(self.name, self.config, dirs, stderr, self.egress_decisions, self._callers,
                           self._settings.max_result_bytes, self._exposure) as (read, write),
            ClientSession(
                read,
                write,
                client_info=_CLIENT_INFO,
                sampling_callback=self._on_sampling,
                elicitation_callback=self._on_elicitation,
                list_roots_callback=self._on_list_roots,
                message_handler=self._on_message,
            ) as session,
        ):
            launched = anyio.current_time()  # the process is running (any install is done): its clock starts
            with anyio.fail_after(self.config.startup_timeout):
                self.initialize_result = await self._initialize(session, dirs.run / "stderr.log", logged)
                self._session = session
                self._raw_calls = read.raw_calls if self._use_raw_calls else None
                self._lister = read.raw_calls
                self.tools = await self._list_tools(read.raw_calls)
            if self._snapshots is not None:
                self._snapshots.save_tools(self.name, self.tools)
            self.state = UpstreamState.READY
            self.consecutive_failures = 0
            self.last_error = None
            self._signal_change()
            logger.info("upstream %s ready: %d tools", self.name, len(self.tools))
            closed = self._closed = read.closed
            if self._stale:
                closed.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_liveness, session, closed)
                wall_clock = self.config.sandbox.wall_clock if self.config.sandbox is not None else None
                if wall_clock is not None:
                    tg.start_soon(self._end_at_wall_clock, launched + wall_clock, wall_clock, closed, stderr)
                await closed.wait()
                tg.cancel_scope.cancel()
            self._closed = None
            # New calls wait for the restart instead of meeting this session while it is torn down.
            self._mark_down()

    async def _initialize(self, session: ClientSession, log: Path, logged: int) -> types.InitializeResult:
        """The handshake, given up `http_grace` seconds after this start's stderr (past `logged`) announced
        an HTTP listener: its default transport is HTTP, so no answer will come on stdio."""
        listening = ""

        async def give_up_when_http(scope: anyio.CancelScope) -> None:
            nonlocal listening
            listening = await announced_listener(log, logged)
            await anyio.sleep(self.config.http_grace)
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(give_up_when_http, tg.cancel_scope)
            result = await session.initialize()
            tg.cancel_scope.cancel()  # answered: the watcher ends
            return result
        raise ServesHttpInstead(serves_http_instead(listening))

    def _mark_down(self) -> None:
        self._session = self._raw_calls = self._lister = None
        self.state = UpstreamState.RESTARTING
        self._signal_change()

    def _signal_change(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _end_at_wall_clock(self, deadline: float, seconds: float, closed: anyio.Event, stderr: IO[str]) -> None:
        """The sandbox's wall-clock limit, the same for every backend: closing the transport stops the
        process (or container), and the supervisor starts a fresh one."""
        await anyio.sleep_until(deadline)
        self.last_error = f"wall-clock limit of {seconds:g}s reached"
        print(f"[simgate] {self.last_error}: stopping the server", file=stderr, flush=True)
        logger.info("upstream %s: %s; restarting it", self.name, self.last_error)
        closed.set()

    async def _watch_liveness(self, session: ClientSession, closed: anyio.Event) -> None:
        while True:
            with anyio.move_on_after(self.config.health_interval):
                await self._restart_now.wait()
            self._restart_now = anyio.Event()
            try:
                await session.send_request(_RawRequest(method="ping"), _RAW_RESULT,
                                           request_read_timeout_seconds=self.config.ping_timeout)
            except MCPError as exc:
                if exc.code == types.METHOD_NOT_FOUND:
                    continue  # a server without ping is still alive
                self.last_error = f"did not answer a liveness ping: {exc.message}"
                logger.warning("upstream %s %s", self.name, self.last_error)
                closed.set()
                return

    async def _list_tools(self, lister: RawCalls) -> list[dict[str, Any]]:
        """Every page of the upstream's tools, read raw (beside the session, which would refuse the whole
        list over one tool whose schema a lax server wrote loosely) and repaired tool by tool."""
        caps = self.initialize_result.capabilities if self.initialize_result else None
        if caps is not None and caps.tools is None:
            return []
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(1000):  # a bound against a server that pages forever
            params = {"cursor": cursor} if cursor else None
            page = await lister.request("tools/list", params, self.config.call_timeout)
            tools.extend(tool for tool in usable_tools(self.name, page.get("tools"))
                         if self.config.tools.permits(tool["name"]))
            cursor = page.get("nextCursor")
            if not cursor:
                break
        return tools

    # ----------------------------------------------------------------- requests

    async def wait_ready(self, timeout: float) -> ClientSession:
        """The live session, waiting up to `timeout` for a (re)start; a server that keeps failing to
        start is not waited for, so that callers (hybrid mode) move on at once."""
        deadline = anyio.current_time() + timeout
        while (self._session is None and self.consecutive_failures < 2 and not self._hold
               and self.state != UpstreamState.FAILED):
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            with anyio.move_on_after(remaining):
                await self._changed.wait()
        if self._session is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise UpstreamUnavailable(f"upstream server {self.name!r} is {self.state.value}{reason}",
                                      data={"server": self.name, "state": self.state.value})
        return self._session

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        timeout: float | None = None,
        origin: Origin | None = None,
    ) -> dict[str, Any]:
        """Forward one request and return the upstream's raw result; errors keep their code."""
        timeout = timeout or self.config.call_timeout
        session = await self.wait_ready(min(timeout, self.config.startup_timeout))
        raw_calls = self._raw_calls
        if raw_calls is not None and raw_calls.closed:
            # Its transport has just ended and the supervisor has yet to mark it down: this request was never
            # sent, so it waits for the restart instead of failing as if the server had dropped it.
            with anyio.move_on_after(min(timeout, self.config.startup_timeout)):
                while self._raw_calls is raw_calls:
                    await self._changed.wait()
            session = await self.wait_ready(min(timeout, self.config.startup_timeout))
            raw_calls = self._raw_calls
        closed = self._closed  # this session's end: set when its connection is really gone
        sent = anyio.current_time()  # the clock the timeouts below run on
        started = time.perf_counter()
        try:
            with self._callers.sending(origin):
                try:
                    if method == "tools/call" and raw_calls is not None and (origin is None
                                                                              or not origin.wants_progress()):
                        result = await raw_calls.request(method, _strip_modern_meta(params), timeout)
                    else:
                        result = await session.send_request(
                            _RawRequest(method=method, params=_strip_modern_meta(params)),
                            _RAW_RESULT,
                            request_read_timeout_seconds=timeout,
                            progress_callback=origin.progress if origin is not None else None,
                        )
                    if method == "tools/call":
                        return usable_result(self.name, (params or {}).get("name"), result)
                    return result
                finally:
                    if method == "tools/call":  # errors and timeouts too: they are part of what callers wait
                        self.latencies.append(time.perf_counter() - started)
        except MCPError as exc:
            # -32001 and -32000 are also the server's own errors (the implementation-defined range): a timeout
            # only once the time ran out, a closed connection only once it closed.
            if exc.code == types.REQUEST_TIMEOUT and anyio.current_time() - sent >= timeout:
                self._restart_now.set()  # check liveness now rather than at the next interval
                raise UpstreamTimeout(f"upstream server {self.name!r} did not answer {method} within {timeout:g}s",
                                      data={"server": self.name, "timeout": timeout}) from None
            if exc.code == RESULT_TOO_LARGE:
                raise ResultTooLarge(exc.error.message, data=exc.error.data) from None
            if exc.code == types.CONNECTION_CLOSED and (closed is None or closed.is_set()):
                reason = self.last_error or "it closed its connection"
                raise UpstreamUnavailable(
                    f"upstream server {self.name!r} failed during {method} ({reason}); it is being restarted",
                    data={"server": self.name}) from None
            raise

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        if self._session is not None:
            await self._session.send_notification(
                _RawNotification(method=method, params=dict(params) if params is not None else None))  # type: ignore[arg-type]

    # ------------------------------------------------- server-to-client, routed back

    async def _route_back(self, method: str, params: BaseModel | None, ctx: ClientRequestContext
                          ) -> dict[str, Any] | types.ErrorData:
        """Pass a server-to-client request to the client whose request it belongs to (see `correlation`)."""
        placement = self._callers.place(ctx.meta, unmarked_is_unsolicited=False)
        origin = placement.origin
        if origin is None or not origin.supports(method):
            reason = placement.reason if origin is None else "the client whose request it belongs to cannot answer it"
            return types.ErrorData(code=types.INVALID_REQUEST, message=f"simgate cannot pass {method} on: {reason}")
        dumped = params.model_dump(by_alias=True, mode="json", exclude_none=True) if params is not None else None
        try:
            return await origin.request(method, unmarked(dumped))
        except MCPError as exc:
            return exc.error

    async def _on_sampling(self, ctx: ClientRequestContext, params: types.CreateMessageRequestParams) -> Any:
        result = await self._route_back("sampling/createMessage", params, ctx)
        if isinstance(result, types.ErrorData):
            return result
        if isinstance(result.get("content"), list):  # tool-use results carry a list of blocks
            return types.CreateMessageResultWithTools.model_validate(result)
        return types.CreateMessageResult.model_validate(result)

    async def _on_elicitation(self, ctx: ClientRequestContext, params: types.ElicitRequestParams) -> Any:
        result = await self._route_back("elicitation/create", params, ctx)
        return result if isinstance(result, types.ErrorData) else types.ElicitResult.model_validate(result)

    async def _on_list_roots(self, ctx: ClientRequestContext) -> Any:
        result = await self._route_back("roots/list", None, ctx)
        return result if isinstance(result, types.ErrorData) else types.ListRootsResult.model_validate(result)

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, Exception):
            logger.warning("upstream %s: transport error: %s", self.name, message)
            return
        if isinstance(message, types.ToolListChangedNotification) and self._lister is not None:
            try:
                self.tools = await self._list_tools(self._lister)
            except MCPError as exc:
                logger.warning("upstream %s: re-listing tools failed: %s", self.name, exc.message)
        if isinstance(message, types.LoggingMessageNotification):
            # A log line of a request goes to that request's client alone; one of no request, to every
            # client that may see this server. Over HTTP an unmarked line came on no request's stream.
            placement = self._callers.place(message.params.meta,
                                            unmarked_is_unsolicited=self.config.transport != "stdio")
            message = types.LoggingMessageNotification(
                params=message.params.model_copy(update={"meta": without_mark(message.params.meta)}))
            if placement.origin is not None:
                await placement.origin.notify(message)
                return
            if placement.solicited:
                logger.debug("upstream %s: a log line not passed on: %s", self.name, placement.reason)
                return
        if self._on_notification is not None:
            await self._on_notification(self.name, message)


def _strip_modern_meta(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith(_MODERN_META_PREFIX)}
        if kept:
            out["_meta"] = kept
        else:
            out.pop("_meta")
    return out


def _raised(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(kind) is not None
    return isinstance(exc, kind)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ServesHttpInstead):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "did not start and initialize within its startup timeout"
    if isinstance(exc, MCPError):
        # -32000 with the SDK's own words is the pipe closing; with others, the server refusing in its own words
        if exc.code == types.CONNECTION_CLOSED and exc.message == "Connection closed":
            return "the server exited or closed its connection before it was initialized (see its stderr.log)"
        return f"error {exc.code}: {exc.message}"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename}"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
