#!/usr/bin/env python
"""Soak: a bounded run of mixed good and bad traffic while the upstream crashes and restarts.

One `simgate serve` (tests/harness.py) in front of tests/fixtures/misbehaving_server.py, whose `crash`
tool exits the process; the gateway restarts it (max_restart_backoff 2 s, call_timeout 10 s).

  SDK clients   real `mcp` clients (ClientSession over streamable HTTP), half on /mcp, half on
                /servers/fx/mcp, a new session every --calls-per-session calls. Each cycle of ten calls:
                5 echo, 2 add (answers checked), 1 unknown tool, 1 invalid arguments (both must be
                answered -32602), 1 tool error (`fail`: must be answered isError).
  bad clients   raw httpx on /mcp with a session of their own (ended with DELETE and made anew every
                50 requests): malformed JSON, unknown tool, invalid arguments, an oversized body,
                an unknown session, a wrong Content-Type, an aborted call (the client hangs up while
                `sleep` runs), and a good echo.
  crasher       every --crash-every seconds calls `crash`, then waits for /readyz: the crash window
                runs from the crash to the upstream being ready again, plus --grace seconds.

Every call is classified when it ends:
  ok            the expected answer (a result, or the expected error for bad input)
  error         an error answer instead (upstream down, restarting, or timed out): split by whether
                the call overlapped a crash window
  wrong         an answer, but not the expected one (e.g. another call's text)
  lost          no answer within --call-deadline, a broken connection, or an HTTP 5xx
  aborted       hung up on purpose by the client (not a call that could be lost)
Gateway RSS and open fds are sampled every --sample-interval s. `start` is the median over the first
--window seconds after --warmup, `end` the median over the last --window seconds.

Exit status 0 only if no call is lost, none is wrong, RSS end/start <= --max-rss-growth, and the gateway
has exactly its one upstream process left; 1 otherwise.

    .venv/bin/python benchmarks/soak.py --seconds 600 --out benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests")]

from harness import fixture_server, running_gateway  # noqa: E402  (tests/: the gateway harness)

SERVER = "fx"
MAX_BODY = 65536
CALL_TIMEOUT = 10.0
INVALID_PARAMS = -32602
UPSTREAM_DOWN, UPSTREAM_TIMEOUT = -32001, -32002
ACCEPT = "application/json, text/event-stream"
EXAMPLES = 20  # lost and wrong calls described in the report, at most


# --------------------------------------------------------------------------- bookkeeping


class CrashWindows:
    """When the upstream was down on purpose: [crash sent, ready again + grace]."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.windows: list[list[float | None]] = []

    def begin(self) -> None:
        self.windows.append([time.monotonic(), None])

    def end(self) -> None:
        self.windows[-1][1] = time.monotonic() + self.grace

    def overlaps(self, start: float, end: float) -> bool:
        for begun, ended in reversed(self.windows):
            assert begun is not None
            if begun <= end and (ended is None or ended >= start):
                return True
            if ended is not None and ended < start:
                return False  # windows are in time order: none earlier can overlap
        return False

    def durations(self) -> list[float]:
        return [ended - self.grace - begun for begun, ended in self.windows if begun is not None and ended is not None]


@dataclass
class Tally:
    windows: CrashWindows
    outcomes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    sent: int = 0

    def record(self, kind: str, outcome: str, started: float, detail: str = "") -> None:
        if outcome == "error":
            outcome = "error_in_crash_window" if self.windows.overlaps(started, time.monotonic()) else \
                "error_outside_crash_window"
        self.outcomes[outcome] += 1
        self.by_kind[(kind, outcome)] += 1
        if outcome in ("lost", "wrong") and len(self.examples) < EXAMPLES:
            self.examples.append(f"{outcome} {kind} at +{started - T0:.1f}s: {detail[:300]}")


T0 = time.monotonic()


# --------------------------------------------------------------------------- SDK clients


@dataclass
class Http5xx:
    count: int = 0

    async def hook(self, response: httpx2.Response) -> None:
        if response.status_code >= 500:
            self.count += 1


@contextlib.asynccontextmanager
async def sdk_session(url: str, seen: Http5xx, deadline: float = 60) -> AsyncIterator[ClientSession]:
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120), event_hooks={"response": [seen.hook]}) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(deadline):
                    await session.initialize()
                yield session


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def sdk_call(session: ClientSession, prefix: str, kind: str, n: int) -> tuple[str, str]:
    """One call of `kind`: (outcome, detail) with outcome ok, error or wrong."""
    text = f"{prefix}-{n}"
    try:
        if kind == "echo":
            result = await session.call_tool(prefix + "echo", {"text": text})
            good = not result.is_error and _text(result) == text
        elif kind == "add":
            numbers = [n, 0.5, -3]
            result = await session.call_tool(prefix + "add", {"numbers": numbers})
            good = not result.is_error and (result.structured_content or {}).get("total") == sum(numbers)
        elif kind == "tool_error":
            result = await session.call_tool(prefix + "fail", {"reason": text})
            good = bool(result.is_error) and text in _text(result)
        elif kind == "unknown_tool":
            result = await session.call_tool(prefix + "no_such_tool", {})
            good = False
        else:  # invalid_args
            result = await session.call_tool(prefix + "echo", {"text": n})
            good = False
    except MCPError as exc:
        if kind in ("unknown_tool", "invalid_args") and exc.code == INVALID_PARAMS:
            return "ok", ""
        if exc.code in (UPSTREAM_DOWN, UPSTREAM_TIMEOUT):
            return "error", f"{exc.code} {exc.message}"
        return "wrong", f"{exc.code} {exc.message}"
    if good:
        return "ok", ""
    if result.is_error and kind in ("echo", "add"):
        return "error", _text(result)
    return "wrong", repr(result)[:300]


SDK_CYCLE = ("echo", "add", "echo", "unknown_tool", "echo", "tool_error", "add", "echo", "invalid_args", "echo")


async def sdk_client(index: int, url: str, prefix: str, args: argparse.Namespace, tally: Tally, stop: anyio.Event,
                     seen: Http5xx) -> int:
    """Sessions opened, one after another, until `stop`."""
    n = sessions = 0
    while not stop.is_set():
        started, opened = time.monotonic(), False
        tally.sent += 1
        try:
            async with sdk_session(url, seen, args.call_deadline) as session:
                opened = True
                tally.record("initialize", "ok", started)
                sessions += 1
                for _ in range(args.calls_per_session):
                    if stop.is_set():
                        break
                    kind = SDK_CYCLE[n % len(SDK_CYCLE)]
                    n += 1
                    if not await _timed_call(session, prefix, kind, n, index, args, tally, seen):
                        break  # the session is broken: a new one
                    await anyio.sleep(args.think)
        except Exception as exc:  # noqa: BLE001  (failing to open is a lost initialize; closing may fail too)
            if not opened:
                tally.record("initialize", "lost", started, f"{type(exc).__name__}: {exc}")
                await anyio.sleep(args.think)
    return sessions


async def _timed_call(session: ClientSession, prefix: str, kind: str, n: int, index: int, args: argparse.Namespace,
                      tally: Tally, seen: Http5xx) -> bool:
    """Make and classify one call; False when the session is no longer usable."""
    before, started = seen.count, time.monotonic()
    tally.sent += 1
    usable = True
    try:
        with anyio.fail_after(args.call_deadline):
            outcome, detail = await sdk_call(session, prefix, kind, n)
    except TimeoutError:
        outcome, detail, usable = "lost", f"no answer within {args.call_deadline:g}s", False
    except Exception as exc:  # noqa: BLE001  (a transport failure: the call got no answer)
        outcome, detail, usable = "lost", f"{type(exc).__name__}: {exc}", False
    if seen.count > before:
        outcome, detail = "lost", f"HTTP 5xx during the call ({detail})"
    tally.record(kind, outcome, started, f"client {index}: {detail}")
    return usable


# --------------------------------------------------------------------------- raw bad traffic


def jsonrpc_messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, a JSON body or an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")
                and line[5:].strip()]
    with contextlib.suppress(ValueError):
        body = response.json()
        return body if isinstance(body, list) else [body]
    return []


class RawSession:
    """A downstream session made by hand, for requests the SDK would never send."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url = http, url
        self.id: str | None = None
        self.next_id = 0

    def headers(self, **extra: str) -> dict[str, str]:
        return {"accept": ACCEPT, "content-type": "application/json",
                **({"mcp-session-id": self.id} if self.id else {}), **extra}

    def body(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    async def open(self) -> None:
        self.id = None
        response = await self.http.post(self.url, headers=self.headers(), json=self.body("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak-raw", "version": "1"}}))
        response.raise_for_status()
        self.id = response.headers["mcp-session-id"]
        done = await self.http.post(self.url, headers=self.headers(),
                                    json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        done.raise_for_status()

    async def close(self) -> None:
        if self.id is not None:
            with contextlib.suppress(httpx.HTTPError):
                await self.http.delete(self.url, headers=self.headers())
            self.id = None


def _call(raw: RawSession, tool: str, arguments: Any) -> dict[str, Any]:
    return raw.body("tools/call", {"name": f"{SERVER}__{tool}", "arguments": arguments})


def _error_code(response: httpx.Response) -> int | None:
    for message in jsonrpc_messages(response):
        if "error" in message:
            return int(message["error"].get("code", 0))
    return None


async def raw_request(raw: RawSession, kind: str, n: int) -> tuple[str, str]:
    """One bad (or good) raw request: (outcome, detail). Transport errors propagate (lost)."""
    http, url = raw.http, raw.url
    if kind == "malformed_json":
        response = await http.post(url, headers=raw.headers(), content=b'{"jsonrpc": "2.0", "id": 1, "method": ')
        expected = response.status_code == 400 and _error_code(response) == -32700
    elif kind == "unknown_tool_raw":
        response = await http.post(url, headers=raw.headers(), json=_call(raw, "no_such_tool", {}))
        expected = response.status_code == 200 and _error_code(response) == INVALID_PARAMS
    elif kind == "invalid_args_raw":
        response = await http.post(url, headers=raw.headers(), json=_call(raw, "add", {"numbers": "not a list"}))
        expected = response.status_code == 200 and _error_code(response) == INVALID_PARAMS
    elif kind == "oversized":
        response = await http.post(url, headers=raw.headers(), json=_call(raw, "echo", {"text": "x" * (MAX_BODY * 2)}))
        expected = response.status_code == 413
    elif kind == "unknown_session":
        response = await http.post(url, headers=raw.headers(**{"mcp-session-id": "no-such-session"}),
                                   json=_call(raw, "echo", {"text": "x"}))
        expected = response.status_code in (400, 404)
    elif kind == "wrong_content_type":
        response = await http.post(url, headers=raw.headers(**{"content-type": "text/plain"}),
                                   content=json.dumps(_call(raw, "echo", {"text": "x"})))
        expected = response.status_code in (400, 415)
    elif kind == "aborted":
        try:  # hang up while the upstream sleeps; the gateway must carry on
            response = await http.post(url, headers=raw.headers(), json=_call(raw, "sleep", {"seconds": 0.5}),
                                       timeout=0.1)
        except httpx.TimeoutException:
            return "aborted", ""
        expected = response.status_code == 200
    else:  # echo_raw
        text = f"raw-{n}"
        response = await http.post(url, headers=raw.headers(), json=_call(raw, "echo", {"text": text}))
        messages = [m for m in jsonrpc_messages(response) if "result" in m or "error" in m]
        if response.status_code == 200 and messages and "error" in messages[-1]:
            code = messages[-1]["error"].get("code")
            return ("error" if code in (UPSTREAM_DOWN, UPSTREAM_TIMEOUT) else "wrong"), str(messages[-1]["error"])
        content = messages[-1]["result"].get("content", []) if messages else []
        expected = response.status_code == 200 and "".join(b.get("text", "") for b in content) == text
    if response.status_code >= 500:
        return "lost", f"HTTP {response.status_code}: {response.text[:200]}"
    return ("ok", "") if expected else ("wrong", f"HTTP {response.status_code}: {response.text[:200]}")


RAW_CYCLE = ("malformed_json", "unknown_tool_raw", "echo_raw", "invalid_args_raw", "oversized", "unknown_session",
             "wrong_content_type", "aborted")
RAW_PER_SESSION = 50


async def raw_client(index: int, url: str, args: argparse.Namespace, tally: Tally, stop: anyio.Event) -> None:
    n = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=120), trust_env=False) as http:
        raw = RawSession(http, url)
        while not stop.is_set():
            if raw.id is None or n % RAW_PER_SESSION == 0:
                await raw.close()
                started = time.monotonic()
                tally.sent += 1
                try:
                    with anyio.fail_after(args.call_deadline):
                        await raw.open()
                    tally.record("initialize_raw", "ok", started)
                except Exception as exc:  # noqa: BLE001
                    tally.record("initialize_raw", "lost", started, f"{type(exc).__name__}: {exc}")
                    await anyio.sleep(args.think)
                    continue
            kind = RAW_CYCLE[n % len(RAW_CYCLE)]
            n += 1
            started = time.monotonic()
            tally.sent += 1
            try:
                with anyio.fail_after(args.call_deadline):
                    outcome, detail = await raw_request(raw, kind, n)
            except TimeoutError:
                outcome, detail = "lost", f"no answer within {args.call_deadline:g}s"
            except httpx.HTTPError as exc:
                outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
            tally.record(kind, outcome, started, f"raw client {index}: {detail}")
            await anyio.sleep(args.think)
        await raw.close()


# --------------------------------------------------------------------------- crasher and sampler


async def crasher(url: str, base: str, args: argparse.Namespace, windows: CrashWindows, stop: anyio.Event) -> int:
    crashes = 0
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        while True:
            with anyio.move_on_after(args.crash_every):
                await stop.wait()
            if stop.is_set():
                return crashes
            windows.begin()
            try:
                async with sdk_session(url, Http5xx()) as session:
                    try:
                        with anyio.fail_after(30):
                            await session.call_tool("crash", {})
                    except MCPError:
                        pass  # the expected answer: the upstream died during the call
            except Exception as exc:  # noqa: BLE001  (reported; the soak goes on)
                print(f"crasher: {type(exc).__name__}: {exc}", file=sys.stderr)
            crashes += 1
            await anyio.sleep(0.2)  # let the gateway notice before asking whether it is ready
            with anyio.move_on_after(args.call_deadline):  # a gateway that never recovers shows in the calls
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{base}/readyz")).status_code == 200:
                            break
                    await anyio.sleep(0.1)
            windows.end()


def read_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        rest = stat.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root: int) -> list[int]:
    """Live (non-zombie) processes under `root`."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    rest = stat.read().rsplit(")", 1)[1].split()
                if rest[0] != "Z":
                    parents[int(entry)] = int(rest[1])
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found.extend(children)
        frontier.extend(children)
    return found


async def sampler(pid: int, interval: float, samples: list[tuple[float, int, int]], stop: anyio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic() - T0, read_rss_kb(pid), open_fds(pid)))
        with anyio.move_on_after(interval):
            await stop.wait()


# --------------------------------------------------------------------------- the run


def _median_between(samples: list[tuple[float, int, int]], start: float, end: float, column: int) -> float:
    chosen = [sample[column] for sample in samples if start <= sample[0] <= end]
    return statistics.median(chosen) if chosen else float("nan")


async def soak(args: argparse.Namespace, base: str, pid: int) -> dict[str, Any]:
    windows = CrashWindows(args.grace)
    tally = Tally(windows)
    stop = anyio.Event()
    samples: list[tuple[float, int, int]] = []
    seen = Http5xx()
    sessions: list[int] = []
    crashes: list[int] = []
    single, aggregate = f"{base}/servers/{SERVER}/mcp", f"{base}/mcp"
    rss_at_ready = read_rss_kb(pid)
    cpu_before = cpu_seconds(pid)
    started = time.monotonic()

    async def run_sdk(index: int) -> None:
        url, prefix = (aggregate, f"{SERVER}__") if index % 2 == 0 else (single, "")
        sessions.append(await sdk_client(index, url, prefix, args, tally, stop, seen))

    async def run_crasher() -> None:
        crashes.append(await crasher(single, base, args, windows, stop))

    async def timer() -> None:
        await anyio.sleep(args.seconds)
        stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(sampler, pid, args.sample_interval, samples, stop)
        tg.start_soon(timer)
        tg.start_soon(run_crasher)
        for index in range(args.clients - args.bad_clients):
            tg.start_soon(run_sdk, index)
        for index in range(args.bad_clients):
            tg.start_soon(raw_client, index, aggregate, args, tally, stop)
    elapsed = time.monotonic() - started
    samples.append((time.monotonic() - T0, read_rss_kb(pid), open_fds(pid)))
    await anyio.sleep(1)  # the last crash's restart, if any, settles
    leftover = descendants(pid)

    t_start = started - T0 + args.warmup
    t_end = samples[-1][0]
    rss_start = _median_between(samples, t_start, t_start + args.window, 1)
    rss_end = _median_between(samples, t_end - args.window, t_end, 1)
    measured = [(t, rss) for t, rss, _ in samples if t >= t_start]
    slope = statistics.linear_regression([t for t, _ in measured], [rss for _, rss in measured]).slope \
        if len(measured) >= 2 else float("nan")
    outcomes = dict(tally.outcomes)
    answered = sum(count for outcome, count in outcomes.items() if outcome not in ("lost", "aborted"))
    return {
        "seconds": elapsed,
        "calls": {"sent": tally.sent, "answered": answered, "lost": outcomes.get("lost", 0),
                  "aborted_by_client": outcomes.get("aborted", 0), "ok": outcomes.get("ok", 0),
                  "wrong": outcomes.get("wrong", 0),
                  "error_in_crash_window": outcomes.get("error_in_crash_window", 0),
                  "error_outside_crash_window": outcomes.get("error_outside_crash_window", 0),
                  "per_s": tally.sent / elapsed,
                  "by_kind": {f"{kind}/{outcome}": count for (kind, outcome), count in sorted(tally.by_kind.items())},
                  "http_5xx_seen_by_sdk_clients": seen.count, "sdk_sessions_opened": sum(sessions),
                  # RSS per session matters: the gateway keeps some state per session id after it ends
                  "sessions_opened": sum(sessions) + tally.by_kind[("initialize_raw", "ok")],
                  "examples": tally.examples},
        "crashes": {"count": sum(crashes), "window_seconds": [round(d, 2) for d in windows.durations()]},
        "gateway": {
            "rss_kb_at_ready": rss_at_ready, "rss_kb_start": rss_start, "rss_kb_end": rss_end,
            "rss_kb_max": max(rss for _, rss, _ in samples), "rss_growth": rss_end / rss_start,
            "rss_kb_per_min_after_warmup": slope * 60,
            "fds_start": _median_between(samples, t_start, t_start + args.window, 2),
            "fds_end": _median_between(samples, t_end - args.window, t_end, 2),
            "cpu_seconds": cpu_seconds(pid) - cpu_before,
            "processes_left": len(leftover),
        },
        "samples": [{"t": round(t, 1), "rss_kb": rss, "fds": fds} for t, rss, fds in samples],
    }


def verdict(results: dict[str, Any], max_growth: float) -> dict[str, bool]:
    gateway, calls = results["gateway"], results["calls"]
    return {"nothing_lost": calls["lost"] == 0, "nothing_wrong": calls["wrong"] == 0,
            "rss_flat": gateway["rss_growth"] <= max_growth,
            "one_upstream_process_left": gateway["processes_left"] == 1}


def print_summary(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    results, params = report["results"], report["params"]
    calls, gateway = results["calls"], results["gateway"]
    table = Table(title=f"soak: {results['seconds']:.0f}s, {params['clients']} clients ({params['bad_clients']} raw "
                        f"bad-traffic), {results['crashes']['count']} upstream crashes")
    for column in ("sent", "answered", "ok", "error in crash window", "error outside", "wrong", "lost", "aborted",
                   "calls/s"):
        table.add_column(column, justify="right")
    table.add_row(*(str(calls[key]) for key in ("sent", "answered", "ok", "error_in_crash_window",
                                                "error_outside_crash_window", "wrong", "lost", "aborted_by_client")),
                  f"{calls['per_s']:.0f}")
    console.print(table)

    def mb(kb: float) -> str:
        return f"{kb / 1024:.1f}"

    console.print(f"gateway RSS MB: at ready {mb(gateway['rss_kb_at_ready'])}, start {mb(gateway['rss_kb_start'])}, "
                  f"end {mb(gateway['rss_kb_end'])}, max {mb(gateway['rss_kb_max'])}; end/start "
                  f"{gateway['rss_growth']:.3f} (limit {params['max_rss_growth']}); slope after warm-up "
                  f"{gateway['rss_kb_per_min_after_warmup'] / 1024:+.2f} MB/min; fds {gateway['fds_start']:.0f} -> "
                  f"{gateway['fds_end']:.0f}; processes left {gateway['processes_left']}; sessions opened "
                  f"{calls['sessions_opened']}")
    windows = results["crashes"]["window_seconds"]
    if windows:
        console.print(f"crash to ready: median {statistics.median(windows):.2f}s, max {max(windows):.2f}s")
    for example in calls["examples"]:
        console.print(f"  {example}")
    failed = [name for name, passed in report["verdict"].items() if not passed]
    console.print("PASS" if not failed else f"FAIL: {', '.join(failed)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="how long the traffic runs")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in all")
    parser.add_argument("--bad-clients", type=int, default=4, help="of which raw-HTTP bad-traffic clients")
    parser.add_argument("--calls-per-session", type=int, default=200, help="SDK calls before a new session")
    parser.add_argument("--think", type=float, default=0.01, help="seconds each client waits between calls")
    parser.add_argument("--crash-every", type=float, default=30, help="seconds between upstream crashes")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds a crash window lasts past readiness")
    parser.add_argument("--call-deadline", type=float, default=60, help="no answer after this long: lost")
    parser.add_argument("--warmup", type=float, default=30, help="seconds before the RSS baseline is taken")
    parser.add_argument("--window", type=float, default=10, help="seconds of samples for the start and end RSS")
    parser.add_argument("--sample-interval", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--max-rss-growth", type=float, default=1.25, help="RSS end/start above this fails")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gateway's directory (its path is printed)")
    args = parser.parse_args()
    if not 0 <= args.bad_clients < args.clients:
        parser.error("--bad-clients must be at least 0 and fewer than --clients")
    if args.seconds < args.warmup + 2 * args.window:
        parser.error("--seconds must cover --warmup and two --window spans")

    # SIGTERM/SIGHUP become SystemExit, so that the gateway and its upstream are stopped on the way out.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="simgate-soak-"))
    config = {"gateway": {"max_body_bytes": MAX_BODY, "log_level": "warning"},
              "mcpServers": {SERVER: {**fixture_server("misbehaving_server.py", "--banner", ""),
                                      "call_timeout": CALL_TIMEOUT, "max_restart_backoff": 2}}}
    print(f"soak: {args.seconds:g}s, {args.clients} clients, a crash every {args.crash_every:g}s; gateway in "
          f"{workdir}", file=sys.stderr)
    try:
        with running_gateway(config, workdir) as gateway:
            results = anyio.run(soak, args, gateway.url, gateway.process.pid)
            from importlib.metadata import version

            report = {
                "benchmark": "soak",
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "params": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
                | {"max_body_bytes": MAX_BODY, "call_timeout": CALL_TIMEOUT, "max_restart_backoff": 2},
                "environment": {"python": platform.python_version(), "platform": platform.platform(),
                                "cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "mcp": version("mcp"),
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
                "results": results,
            }
    finally:
        if args.keep_logs:
            print(f"gateway directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["verdict"] = verdict(results, args.max_rss_growth)
    print_summary(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0 if all(report["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
