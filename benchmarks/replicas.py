#!/usr/bin/env python
"""Replay calls per second through `simgate serve --workers N`, for N = 1 and 2, on diskcache and
(with --redis) on a private redis-server.

Each run: the gateway in front of the `echo` of tests/fixtures/misbehaving_server.py records 64
distinct calls live (`record: all`), is switched to `replay` through the admin API (which every replica
applies), then C clients (each its own session, over its own connections) call recorded arguments for
a fixed time. Runs alternate over several rounds; medians are reported.

    /work/main/.venv/bin/python benchmarks/replicas.py --clients 8 --seconds 5 --rounds 3 [--redis] \
        --out benchmarks/results/replicas.json

Every process the script starts is stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "misbehaving_server.py"
TEXTS = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _process(argv: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s")


async def _session_calls(url: str, texts: list[str], until: float) -> int:
    done = 0
    async with httpx2.AsyncClient(timeout=30) as http, streamable_http_client(url, http_client=http) as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            while time.monotonic() < until:
                result = await session.call_tool("echo", {"text": texts[done % len(texts)]})
                assert not result.is_error, result
                done += 1
    return done


async def _throughput(url: str, clients: int, seconds: float) -> float:
    texts = [f"recorded {i}" for i in range(TEXTS)]
    counts: list[int] = []
    start = time.monotonic()

    async def client(offset: int) -> None:
        counts.append(await _session_calls(url, texts[offset:] + texts[:offset], start + seconds))

    async with anyio.create_task_group() as tg:
        for index in range(clients):
            tg.start_soon(client, index * 7 % TEXTS)
    return sum(counts) / (time.monotonic() - start)


async def _record(url: str) -> None:
    async with httpx2.AsyncClient(timeout=30) as http, streamable_http_client(url, http_client=http) as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            for index in range(TEXTS):
                await session.call_tool("echo", {"text": f"recorded {index}"})


def run_once(workdir: Path, workers: int, store: dict[str, Any] | None, clients: int, seconds: float) -> float:
    workdir.mkdir(parents=True)
    gateway: dict[str, Any] = {"record": "all", "state_dir": str(workdir / "state")}
    if store is not None:
        gateway["store"] = store
    config = {"gateway": gateway, "mcpServers": {"fx": {"command": sys.executable,
                                                        "args": [str(FIXTURE), "--banner", ""]}}}
    (workdir / "simgate.json").write_text(json.dumps(config))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "simgate", "serve", "simgate.json", "--port", str(port), "--workers", str(workers)]
    with _process(argv, workdir, workdir / "gateway.log") as process:
        for replica in range(workers):
            _wait(f"{base}/readyz" + (f"?replica={replica}" if workers > 1 else ""), process)
        url = f"{base}/servers/fx/mcp"
        anyio.run(_record, url)
        httpx.put(f"{base}/admin/modes", json={"mode": "replay"}, timeout=30).raise_for_status()
        return anyio.run(_throughput, url, clients, seconds)


@contextmanager
def _redis(directory: Path) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("--redis needs redis-server (apt-get install redis-server)")
    sock = directory / "redis.sock"
    with _process([server, "--port", "0", "--unixsocket", str(sock), "--dir", str(directory), "--save", "",
                   "--appendonly", "no"], directory, directory / "redis.log"):
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"unix://{sock}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also on a private redis-server (gateway.store)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simgate-bench-replicas-") as temp:
        root = Path(temp)
        (root / "redis").mkdir()
        with _redis(root / "redis") if args.redis else _nothing() as redis_url:
            stores: dict[str, dict[str, Any] | None] = {"diskcache": None}
            if redis_url is not None:
                stores["redis"] = {"backend": "redis", "url": redis_url}
            rates: dict[str, list[float]] = {}
            for round_ in range(args.rounds):
                for name, store in stores.items():
                    for workers in (1, 2):
                        label = f"{name}/workers={workers}"
                        if store is not None:  # each run its own world in the one Redis
                            store = {**store, "prefix": f"bench{round_}w{workers}:"}
                        rate = run_once(root / f"{round_}-{name}-{workers}", workers, store, args.clients,
                                        args.seconds)
                        rates.setdefault(label, []).append(rate)
                        print(f"round {round_ + 1}: {label}: {rate:.0f} replay calls/s", flush=True)
    result = {"clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count(),
              "median_calls_per_s": {label: statistics.median(values) for label, values in rates.items()},
              "runs": rates}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
