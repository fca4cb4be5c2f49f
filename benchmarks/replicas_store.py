#!/usr/bin/env python
"""Replay calls/s with one and two gateway processes, on the diskcache store and on Redis.

One world is recorded once (`echo` of tests/fixtures/misbehaving_server.py over REPLAY_TEXTS distinct
texts, a tool replayed by key), exported as a cassette and imported into both stores. Then four
configurations replay it with every upstream gone:

  disk-1   one gateway on the diskcache directory
  disk-2   two gateway processes on the same directory (SQLite across processes)
  redis-1  one gateway on a private redis-server (unix socket)
  redis-2  two gateway processes on that Redis

C concurrent clients (each its own handshake-era session, raw JSON-RPC over one HTTP/1.1 connection, so
the client costs little) call for a fixed time; with two gateways the clients are split evenly between
them. Configurations alternate over several rounds; the medians and their ratio to disk-1 (the one-
machine default, measured in the same run) are printed.

    /work/main/.venv/bin/python benchmarks/replicas_store.py --rounds 3 --seconds 5 --clients 16 \
        --out benchmarks/results/replicas_store.json

Every process the script starts is stopped on exit (gateways by the harness, redis-server by its pid).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import anyio
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness import GatewayProcess, fixture_server, running_gateway  # tests/: the gateway harness
from redis_server import private_redis

GONE = {"command": "/bin/false"}
REPLAY_TEXTS = 64
HANDSHAKE = "2025-06-18"
BOTH = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
CONFIGS = ("disk-1", "disk-2", "redis-1", "redis-2")


def _simgate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "simgate", *args], check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


async def _record(gateway: GatewayProcess) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        headers = await _open(http, gateway)
        for n in range(REPLAY_TEXTS):
            await _call(http, gateway, headers, n, 0)


async def _open(http: httpx.AsyncClient, gateway: GatewayProcess) -> dict[str, str]:
    url = gateway.mcp_url("fx")
    opened = await http.post(url, headers=BOTH, json={
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    opened.raise_for_status()
    headers = {**BOTH, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": HANDSHAKE}
    await http.post(url, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    await anyio.sleep(0.2)  # the SDK takes `initialized` after its 202: then calls go the direct path
    return headers


async def _call(http: httpx.AsyncClient, gateway: GatewayProcess, headers: dict[str, str], n: int, id_: int) -> None:
    text = f"text-{n % REPLAY_TEXTS}"
    response = await http.post(gateway.mcp_url("fx"), headers=headers, json={
        "jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}})
    body = response.text
    if response.status_code != 200 or text not in body or '"error"' in body:
        raise RuntimeError(f"unexpected answer {response.status_code}: {body[:300]}")


async def _measure(gateways: list[GatewayProcess], clients: int, seconds: float) -> float:
    done = 0
    go = anyio.Event()
    ready: list[int] = []
    deadline = 0.0

    async def client(index: int) -> None:
        nonlocal done
        gateway = gateways[index % len(gateways)]
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=1)) as http:
            headers = await _open(http, gateway)
            ready.append(index)
            await go.wait()
            n = index
            while time.perf_counter() < deadline:
                await _call(http, gateway, headers, n, n)
                n += clients
                done += 1

    async with anyio.create_task_group() as tg:
        for index in range(clients):
            tg.start_soon(client, index)
        while len(ready) < clients:
            await anyio.sleep(0.01)
        started = time.perf_counter()
        deadline = started + seconds
        go.set()
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed calls per configuration and round")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="simgate-bench-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        cache = base / "cache"
        with running_gateway({"gateway": {"record": "all", "cache_dir": str(cache)},
                              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}, base / "record") as rec:
            anyio.run(_record, rec)
        redis = stack.enter_context(private_redis())
        _simgate("cache", "export", "--cache-dir", str(cache), str(base / "world.jsonl"))
        _simgate("cache", "import", "--redis-url", redis.url, str(base / "world.jsonl"))
        stores = {"disk": {"cache_dir": str(cache)},
                  "redis": {"store": {"backend": "redis", "url": redis.url}}}
        gateways: dict[str, list[GatewayProcess]] = {}
        for name, store in stores.items():
            config = {"gateway": {"mode": "replay", **store}, "mcpServers": {"fx": GONE}}
            started = [stack.enter_context(running_gateway(config, base / f"{name}-{n}", wait_ready=False))
                       for n in range(2)]
            gateways[f"{name}-1"] = started[:1]
            gateways[f"{name}-2"] = started
        results: dict[str, list[float]] = {config: [] for config in CONFIGS}
        anyio.run(_measure, gateways["disk-1"], args.clients, 1.0)  # warm-up
        for number in range(args.rounds):
            order = CONFIGS[number % len(CONFIGS):] + CONFIGS[:number % len(CONFIGS)]
            for config in order:
                rate = anyio.run(_measure, gateways[config], args.clients, args.seconds)
                results[config].append(round(rate, 1))
                print(f"round {number} {config:8s} {rate:8.1f} calls/s", flush=True)

    medians = {config: statistics.median(rates) for config, rates in results.items()}
    baseline = medians["disk-1"]
    print("\nmedian over rounds (ratio to disk-1, the one-machine default):")
    for config, median in medians.items():
        print(f"  {config:8s} {median:8.1f} calls/s   x{median / baseline:.2f}")
    report = {"rounds": args.rounds, "seconds": args.seconds, "clients": args.clients, "texts": REPLAY_TEXTS,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
              "calls_per_second": results, "medians": medians,
              "ratio_to_disk_1": {config: round(median / baseline, 3) for config, median in medians.items()}}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
