#!/usr/bin/env python
"""Latency and throughput of one `tools/call` through simgate, against its floor and a peer proxy.

Four ways of reaching the same tool (`echo` of tests/fixtures/misbehaving_server.py):

  stdio    the SDK client talking to the fixture over stdio (no HTTP at all)
  sdk-http the SDK's own streamable-HTTP server serving the fixture's MCPServer (the floor of any
           HTTP MCP server: every HTTP proxy pays at least this); SSE responses, like simgate
  sdk-http-json  (opt-in) the same with json_response=True, the response mode of `peer`
  simgate  `simgate serve` in front of the stdio fixture, client on /servers/NAME/mcp
  peer     PyPI `mcp-proxy` (pinned, in its own venv) in front of the same stdio fixture
  sdk-http-modern, simgate-modern  (opt-in) the same servers as sdk-http and simgate, reached by the
           SDK's `Client` speaking the sessionless 2026-07-28 protocol instead of the handshake era

Latency phase: one long-lived session per configuration; every iteration times one call on each
configuration, round-robin, with the starting configuration rotated, so drift and noise land on
all of them alike. Throughput phase: C concurrent clients (each its own session) call for a fixed
time; the HTTP configurations alternate over several rounds.

    /work/venv/bin/python benchmarks/gateway_latency.py --calls 300 --clients 16 \
        --out benchmarks/results/gateway_latency.json

Every process the script starts runs in its own process group and is killed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "misbehaving_server.py"
RESULTS = REPO / "benchmarks" / "results"
PEER_PACKAGE = "mcp-proxy==0.13.0"
PEER_VENV = RESULTS / ".venv-peer"  # benchmarks/results/ is gitignored
SERVER_NAME = "fx"
FIXTURE_ARGS = [str(FIXTURE), "--banner", ""]
MODERN = "-modern"  # a configuration's server, reached by a 2026-07-28 client
HTTP_CONFIGS = ("sdk-http", "sdk-http-json", "sdk-http-modern", "simgate", "simgate-modern", "simgate-replay", "peer")
ALL_CONFIGS = ("stdio", *HTTP_CONFIGS)
DEFAULT_CONFIGS = ("stdio", "sdk-http", "simgate", "simgate-replay", "peer")
REPLAY_TEXTS = 64  # simgate-replay answers from recordings of these many distinct calls


# --------------------------------------------------------------------------- helper mode: (b)


def serve_sdk_http(port: int, json_response: bool = False) -> None:
    """(b): the fixture's own MCPServer on the SDK's streamable-HTTP app, under uvicorn.

    `json_response=True` answers each POST with one JSON body instead of an SSE stream: that is
    the mode mcp-proxy 0.13.0 serves in (it drops progress notifications), hence `sdk-http-json`.
    """
    import uvicorn

    spec = importlib.util.spec_from_file_location("misbehaving_server", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.server.streamable_http_app(host="127.0.0.1", json_response=json_response)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- processes


class Processes:
    """Child processes, each the leader of its own process group; `close()` kills the groups."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.children.append((name, proc))
        return proc

    def close(self) -> None:
        # The SDK starts stdio servers in sessions of their own: note every descendant before
        # signalling, so that none outlives its parent.
        descendants = {pid for _, proc in self.children for pid in process_tree(proc.pid)}
        for _, proc in self.children:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in self.children:
            _signal_group(proc, signal.SIGKILL)  # whatever is left in the group (grandchildren too)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        time.sleep(0.2)
        for pid in descendants:
            if pid in _proc_table():  # still alive after its parent went
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.children.clear()


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, cpu seconds) for every live process."""
    table: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                rest = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] == "Z":
            continue
        table[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    return table


def process_tree(root: int, table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    table = table if table is not None else _proc_table()
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid in table:
            tree.append(pid)
            frontier.extend(child for child, (ppid, _) in table.items() if ppid == pid)
    return tree


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds used so far by the live processes under `roots` (servers and their stdio children)."""
    table = _proc_table()
    return sum(table[pid][1] for root in roots for pid in process_tree(root, table))


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the pid is the group id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_peer_venv(rebuild: bool = False) -> Path:
    """A venv of its own for mcp-proxy (it pins an older `mcp` than the gateway's)."""
    exe = PEER_VENV / "bin" / "mcp-proxy"
    marker = PEER_VENV / ".installed"
    if rebuild and PEER_VENV.exists():
        shutil.rmtree(PEER_VENV)
    if not (exe.exists() and marker.exists() and marker.read_text().strip() == PEER_PACKAGE):
        print(f"creating {PEER_VENV} with {PEER_PACKAGE} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", PEER_PACKAGE],
                       check=True)
        marker.write_text(PEER_PACKAGE)
    return exe


def peer_versions() -> dict[str, str]:
    out = subprocess.run([str(PEER_VENV / "bin" / "python"), "-c",
                          "import importlib.metadata as m;import json;"
                          "print(json.dumps({p: m.version(p) for p in ('mcp-proxy','mcp','uvicorn','starlette')}))"],
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], ok: tuple[int, ...] = (200,)) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            status = httpx.get(url, timeout=2).status_code
            if status in ok:
                return
            last = f"HTTP {status}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s ({last})")


# --------------------------------------------------------------------------- clients


@contextlib.asynccontextmanager
async def open_session(config: str, urls: dict[str, str]) -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if config == "stdio":
        params = StdioServerParameters(command=sys.executable, args=FIXTURE_ARGS)
        with open(os.devnull, "w") as devnull:
            async with stdio_client(params, errlog=devnull) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                yield session
    elif config.endswith(MODERN):
        from mcp import Client

        async with Client(urls[config], mode="2026-07-28") as client:
            yield client
    else:
        async with streamable_http_client(urls[config]) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def replay_text(text: str) -> str:
    return f"recorded {zlib.crc32(text.encode()) % REPLAY_TEXTS}"


async def call_once(session: Any, text: str, config: str = "") -> float:
    if config == "simgate-replay":
        text = replay_text(text)  # a recorded call: the gateway answers from its store
    started = time.perf_counter()
    result = await session.call_tool("echo", {"text": text})
    elapsed = time.perf_counter() - started
    if getattr(result, "is_error", False) or getattr(result, "isError", False):
        raise RuntimeError(f"echo failed: {result}")
    return elapsed


async def record_replay_set(url: str) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for index in range(REPLAY_TEXTS):
            await session.call_tool("echo", {"text": f"recorded {index}"})
    base = url.split("/servers/")[0]
    import httpx

    httpx.put(f"{base}/admin/modes", json={"mode": "replay"}, timeout=10).raise_for_status()


def summarize(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)

    def pct(p: float) -> float:
        # nearest-rank percentile
        k = max(0, min(len(ms) - 1, int(round(p / 100 * len(ms) + 0.5)) - 1))
        return ms[k]

    return {"n": len(ms), "median_ms": statistics.median(ms), "p90_ms": pct(90), "p99_ms": pct(99),
            "mean_ms": statistics.fmean(ms), "min_ms": ms[0], "max_ms": ms[-1]}


async def latency_phase(configs: list[str], urls: dict[str, str], roots: dict[str, list[int]], calls: int,
                        warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    samples: dict[str, list[float]] = {c: [] for c in configs}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {c: await stack.enter_async_context(open_session(c, urls)) for c in configs}
        if "stdio" in configs:  # the SDK's stdio child of this process is (a)'s server
            known = {pid for pids in roots.values() for pid in pids}
            roots = dict(roots, stdio=[pid for pid, (ppid, _) in _proc_table().items()
                                       if ppid == os.getpid() and pid not in known])
        for i in range(warmup):
            for c in configs:
                await call_once(sessions[c], f"warmup {i}", c)
        cpu_before = {c: tree_cpu(roots[c]) for c in configs}
        for i in range(calls):
            shift = i % len(configs)  # rotate the starting configuration every iteration
            for c in configs[shift:] + configs[:shift]:
                samples[c].append(await call_once(sessions[c], f"call {i}", c))
        # A server reached by two configurations (X and X-modern) spent its CPU on both: shared equally.
        sharing = Counter(tuple(roots[c]) for c in configs)
        cpu = {c: (tree_cpu(roots[c]) - cpu_before[c]) * 1000 / calls / sharing[tuple(roots[c])] for c in configs}
    return samples, cpu


@dataclass
class Throughput:
    seconds: float = 0.0
    calls: int = 0
    errors: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def throughput_round(config: str, urls: dict[str, str], roots: list[int], clients: int, seconds: float,
                           into: Throughput) -> None:
    import anyio

    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(open_session(config, urls)) for _ in range(clients)]
        for s in sessions:  # warm every session (first call per session pays one-off costs)
            await call_once(s, "warm", config)
        start = anyio.Event()
        deadline = 0.0
        counts = [0] * clients

        async def worker(index: int) -> None:
            await start.wait()
            session = sessions[index]
            n = 0
            while time.perf_counter() < deadline:
                try:
                    into.latencies.append(await call_once(session, f"c{index} {n}", config))
                    n += 1
                except Exception:
                    into.errors += 1
            counts[index] = n

        async with anyio.create_task_group() as tg:
            for index in range(clients):
                tg.start_soon(worker, index)
            await anyio.sleep(0.05)
            server_cpu, client_cpu = tree_cpu(roots), time.process_time()
            t0 = time.perf_counter()
            deadline = t0 + seconds
            start.set()
        into.seconds += time.perf_counter() - t0  # includes the last calls in flight at the deadline
        into.server_cpu += tree_cpu(roots) - server_cpu
        into.client_cpu += time.process_time() - client_cpu
        into.calls += sum(counts)


async def run_benchmark(args: argparse.Namespace, urls: dict[str, str], roots: dict[str, list[int]]) -> dict[str, Any]:
    configs = [c for c in ALL_CONFIGS if c in args.configs]
    print(f"latency: {args.calls} interleaved calls x {len(configs)} configurations ({', '.join(configs)})",
          file=sys.stderr)
    samples, cpu = await latency_phase(configs, urls, roots, args.calls, args.warmup)
    latency = {c: summarize(samples[c]) | {"server_cpu_ms_per_call": cpu[c]} for c in configs}

    throughput: dict[str, Any] = {}
    tp_configs = [c for c in HTTP_CONFIGS if c in configs]
    if args.tp_seconds > 0 and args.tp_rounds > 0:
        totals = {c: Throughput() for c in tp_configs}
        per_round: dict[str, list[float]] = {c: [] for c in tp_configs}
        for r in range(args.tp_rounds):
            order = tp_configs if r % 2 == 0 else list(reversed(tp_configs))
            for c in order:
                print(f"throughput round {r + 1}/{args.tp_rounds}: {c}, {args.clients} clients, {args.tp_seconds}s",
                      file=sys.stderr)
                before = (totals[c].calls, totals[c].seconds)
                await throughput_round(c, urls, roots[c], args.clients, args.tp_seconds, totals[c])
                per_round[c].append((totals[c].calls - before[0]) / (totals[c].seconds - before[1]))
        for c in tp_configs:
            t = totals[c]
            throughput[c] = {"clients": args.clients, "calls": t.calls, "errors": t.errors, "seconds": t.seconds,
                             "calls_per_s": t.calls / t.seconds if t.seconds else 0.0,
                             "calls_per_s_rounds": per_round[c],
                             "server_cpu_ms_per_call": t.server_cpu * 1000 / t.calls if t.calls else None,
                             "server_cores_busy": t.server_cpu / t.seconds if t.seconds else None,
                             "client_cpu_ms_per_call": t.client_cpu * 1000 / t.calls if t.calls else None,
                             "client_cores_busy": t.client_cpu / t.seconds if t.seconds else None, **{f"loaded_{k}": v for k, v in
                                                                    summarize(t.latencies).items() if k != "n"}}
    return {"latency": latency, "throughput": throughput}


# --------------------------------------------------------------------------- main


def derive(results: dict[str, Any]) -> dict[str, Any]:
    lat, tp = results["latency"], results["throughput"]
    out: dict[str, Any] = {}
    if "simgate" in lat and "sdk-http" in lat:
        out["simgate_minus_sdk_http_median_ms"] = lat["simgate"]["median_ms"] - lat["sdk-http"]["median_ms"]
        out["target_overhead_le_1ms"] = out["simgate_minus_sdk_http_median_ms"] <= 1.0
    if "simgate" in lat and "peer" in lat:
        out["simgate_over_peer_median_ratio"] = lat["simgate"]["median_ms"] / lat["peer"]["median_ms"]
        out["simgate_beats_peer_latency"] = lat["simgate"]["median_ms"] < lat["peer"]["median_ms"]
    if "simgate" in tp and "peer" in tp and tp["peer"]["calls_per_s"]:
        out["simgate_over_peer_throughput_ratio"] = tp["simgate"]["calls_per_s"] / tp["peer"]["calls_per_s"]
        out["simgate_beats_peer_throughput"] = tp["simgate"]["calls_per_s"] > tp["peer"]["calls_per_s"]
    if "simgate" in tp and "sdk-http" in tp and tp["sdk-http"]["calls_per_s"]:
        out["simgate_over_sdk_http_throughput_ratio"] = tp["simgate"]["calls_per_s"] / tp["sdk-http"]["calls_per_s"]
    if "simgate-modern" in lat and "sdk-http-modern" in lat:
        out["simgate_minus_sdk_http_modern_median_ms"] = (lat["simgate-modern"]["median_ms"]
                                                          - lat["sdk-http-modern"]["median_ms"])
    if "simgate-replay" in lat and "sdk-http" in lat:
        # Issue 3's targets: a replayed call costs no more than the SDK's own HTTP floor; >= 500 calls/s.
        out["replay_minus_sdk_http_median_ms"] = lat["simgate-replay"]["median_ms"] - lat["sdk-http"]["median_ms"]
        out["target_replay_le_sdk_http"] = out["replay_minus_sdk_http_median_ms"] <= 0.0
    if "simgate-replay" in lat and "simgate" in lat:
        out["replay_over_live_median_ratio"] = lat["simgate-replay"]["median_ms"] / lat["simgate"]["median_ms"]
    if "simgate-replay" in tp:
        out["replay_calls_per_s"] = tp["simgate-replay"]["calls_per_s"]
        out["target_replay_ge_500_calls_per_s"] = tp["simgate-replay"]["calls_per_s"] >= 500
    return out


def print_tables(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    lat = report["results"]["latency"]
    table = Table(title=f"tools/call echo latency, one session each, {report['params']['calls']} interleaved calls")
    for col in ("configuration", "median ms", "p90 ms", "p99 ms", "mean ms", "min ms", "server CPU ms/call"):
        table.add_column(col, justify="right" if col != "configuration" else "left")
    for c, s in lat.items():
        table.add_row(c, f"{s['median_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['mean_ms']:.2f}",
                      f"{s['min_ms']:.2f}", f"{s['server_cpu_ms_per_call']:.2f}")
    console.print(table)
    tp = report["results"]["throughput"]
    if tp:
        table = Table(title=f"throughput, {report['params']['clients']} concurrent sessions, "
                            f"{report['params']['tp_rounds']} x {report['params']['tp_seconds']}s each")
        for col in ("configuration", "calls/s", "per round", "errors", "loaded median ms", "loaded p99 ms",
                    "server CPU ms/call", "server cores", "client cores"):
            table.add_column(col, justify="right" if col != "configuration" else "left")
        for c, s in tp.items():
            table.add_row(c, f"{s['calls_per_s']:.0f}", " ".join(f"{x:.0f}" for x in s["calls_per_s_rounds"]),
                          str(s["errors"]), f"{s['loaded_median_ms']:.1f}", f"{s['loaded_p99_ms']:.1f}",
                          f"{s['server_cpu_ms_per_call']:.2f}", f"{s['server_cores_busy']:.2f}",
                          f"{s['client_cores_busy']:.2f}")
        console.print(table)
    d = report["derived"]
    if "simgate_minus_sdk_http_median_ms" in d:
        console.print(f"simgate - sdk-http median: {d['simgate_minus_sdk_http_median_ms']:+.2f} ms "
                      f"(target <= 1 ms: {'met' if d['target_overhead_le_1ms'] else 'MISSED'})")
    if "simgate_minus_sdk_http_modern_median_ms" in d:
        modern = d["simgate_minus_sdk_http_modern_median_ms"]
        console.print(f"simgate - sdk-http median, 2026-07-28 clients: {modern:+.2f} ms")
    if "simgate_over_peer_median_ratio" in d:
        console.print(f"simgate / peer median: {d['simgate_over_peer_median_ratio']:.2f}")
    if "simgate_over_peer_throughput_ratio" in d:
        console.print(f"simgate / peer throughput: {d['simgate_over_peer_throughput_ratio']:.2f}")
    if "replay_minus_sdk_http_median_ms" in d:
        console.print(f"replay - sdk-http median: {d['replay_minus_sdk_http_median_ms']:+.2f} ms "
                      f"(target <= 0: {'met' if d['target_replay_le_sdk_http'] else 'MISSED'})")
    if "replay_calls_per_s" in d:
        console.print(f"replay throughput: {d['replay_calls_per_s']:.0f} calls/s "
                      f"(target >= 500: {'met' if d['target_replay_ge_500_calls_per_s'] else 'MISSED'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="timed calls per configuration (latency phase)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed calls per configuration first")
    parser.add_argument("--clients", type=int, default=16, help="concurrent sessions in the throughput phase")
    parser.add_argument("--tp-seconds", type=float, default=5.0, help="seconds per throughput round (0: skip)")
    parser.add_argument("--tp-rounds", type=int, default=3, help="throughput rounds; the order alternates")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated, from {','.join(ALL_CONFIGS)} (default {','.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (their dir is printed)")
    parser.add_argument("--simgate", default=str(Path(sys.executable).with_name("simgate")),
                        help="the simgate executable")
    parser.add_argument("--serve-sdk-http", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal: run (b)
    parser.add_argument("--serve-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sdk_http:
        serve_sdk_http(args.serve_sdk_http, json_response=args.serve_json)
        return 0
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(ALL_CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {sorted(unknown)}")

    import anyio

    # SIGTERM/SIGHUP become SystemExit, SIGINT KeyboardInterrupt (even when started with SIGINT
    # ignored, as background jobs are), so that the finally below kills every child.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    workdir = Path(tempfile.mkdtemp(prefix="simgate-bench-"))
    procs = Processes(workdir)
    try:
        urls: dict[str, str] = {}
        started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        wanted = set(args.configs) | {c.removesuffix(MODERN) for c in args.configs}
        for name in ("sdk-http", "sdk-http-json"):
            if name in wanted:
                port = free_port()
                proc = procs.start(name, [sys.executable, str(Path(__file__).resolve()), "--serve-sdk-http", str(port),
                                          *(["--serve-json"] if name == "sdk-http-json" else [])])
                urls[name] = f"http://127.0.0.1:{port}/mcp"
                started[name] = (proc, f"http://127.0.0.1:{port}/")  # any HTTP answer means it is up
        if "simgate" in wanted:
            port = free_port()
            config_path = workdir / "simgate.json"
            config_path.write_text(json.dumps({"mcpServers": {SERVER_NAME: {"command": sys.executable,
                                                                           "args": FIXTURE_ARGS}}}))
            (workdir / "simgate").mkdir()
            proc = procs.start("simgate", [args.simgate, "serve", str(config_path), "--host", "127.0.0.1",
                                           "--port", str(port)], cwd=workdir / "simgate")  # state dir lands there
            urls["simgate"] = f"http://127.0.0.1:{port}/servers/{SERVER_NAME}/mcp"
            started["simgate"] = (proc, f"http://127.0.0.1:{port}/readyz")
        if "simgate-replay" in args.configs:
            # Recorded first (live, record all), then switched to replay through the admin API.
            port = free_port()
            config_path = workdir / "simgate-replay.json"
            config_path.write_text(json.dumps({
                "gateway": {"record": "all"},
                "mcpServers": {SERVER_NAME: {"command": sys.executable, "args": FIXTURE_ARGS}}}))
            (workdir / "simgate-replay").mkdir()
            proc = procs.start("simgate-replay", [args.simgate, "serve", str(config_path), "--host", "127.0.0.1",
                                                  "--port", str(port)], cwd=workdir / "simgate-replay")
            urls["simgate-replay"] = f"http://127.0.0.1:{port}/servers/{SERVER_NAME}/mcp"
            started["simgate-replay"] = (proc, f"http://127.0.0.1:{port}/readyz")
        if "peer" in args.configs:
            exe = ensure_peer_venv()
            port = free_port()
            proc = procs.start("peer", [str(exe), "--port", str(port), "--host", "127.0.0.1", "--log-level", "WARNING",
                                        "--", sys.executable, *FIXTURE_ARGS])
            urls["peer"] = f"http://127.0.0.1:{port}/mcp"
            started["peer"] = (proc, f"http://127.0.0.1:{port}/status")
        for name, (proc, url) in started.items():
            ok = (200,) if name.startswith("simgate") else tuple(range(200, 500))
            wait_http(url, 60, proc, ok)

        if "simgate-replay" in urls:
            anyio.run(record_replay_set, urls["simgate-replay"])
        roots = {name: [proc.pid] for name, (proc, _) in started.items()}
        for name in [c for c in args.configs if c.endswith(MODERN)]:  # the same server, another client
            urls[name], roots[name] = urls[name.removesuffix(MODERN)], roots[name.removesuffix(MODERN)]
        results = anyio.run(run_benchmark, args, urls, roots)
        from importlib.metadata import version

        import mcp  # noqa: F401

        report = {
            "benchmark": "gateway_latency",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "params": {"calls": args.calls, "warmup": args.warmup, "clients": args.clients,
                       "tp_seconds": args.tp_seconds, "tp_rounds": args.tp_rounds, "configs": args.configs},
            "environment": {
                "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                "loadavg_at_end": os.getloadavg(), "mcp": version("mcp"), "uvicorn": version("uvicorn"),
                "peer": peer_versions() if "peer" in args.configs else None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "urls": urls,
            "results": results,
        }
        report["derived"] = derive(results)
        print_tables(report)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.out}", file=sys.stderr)
        return 0
    finally:
        procs.close()
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
