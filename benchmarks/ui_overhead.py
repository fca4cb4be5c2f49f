#!/usr/bin/env python
"""What the page's live-calls stream costs a tool call: with no page open, and with one streaming.

One `simgate serve` (tests/harness.py) in front of tests/fixtures/misbehaving_server.py (`echo`),
one long-lived `mcp` client session. Rounds alternate, in the same run, between

  unwatched  no page is open: the pipeline's ObserveCalls stage only checks that no one watches;
  watched    a page's stream is open (GET /ui/api/calls/stream, read as fast as it comes by another
             process, as a browser would), so every call is turned into an event, serialized,
             redacted, queued and sent;

with the order within a round alternated, so drift lands on both alike. Reported: the median and p95
latency of each, the ratio of medians, and how many events the watcher received (it must be every
watched call). Also, in process, what the feed adds to the ObserveCalls stage (ns per call): with an
unwatched feed, and with a watched one (the event built for every call), against no feed at all.

    .venv/bin/python benchmarks/ui_overhead.py [--rounds 10 --calls 100 --out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness import fixture_server, mcp_session, running_gateway  # noqa: E402  (tests/: the gateway harness)

from simgate.gateway.pipeline.call import ToolCall  # noqa: E402
from simgate.gateway.pipeline.observe import ObserveCalls  # noqa: E402
from simgate.gateway.prometheus import GatewayMetrics  # noqa: E402
from simgate.gateway.ui.feed import CallFeed  # noqa: E402


def watch(url: str, expect: int, timeout: float = 60) -> None:
    """Helper mode (its own process, as a browser would be): read the stream until `expect` calls came."""
    received = 0
    with httpx.Client(base_url=url, timeout=httpx.Timeout(timeout), trust_env=False) as http:
        with http.stream("GET", "/ui/api/calls/stream") as stream:
            for line in stream.iter_lines():
                if line.startswith("retry:"):
                    print("open", flush=True)
                elif line == "event: call":
                    received += 1
                    if received == expect:
                        break
    print(received, flush=True)


async def _block(session: Any, calls: int, tag: str) -> list[float]:
    times = []
    for index in range(calls):
        started = time.perf_counter()
        await session.call_tool("fx__echo", {"text": f"{tag}-{index}"})
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure(url: str, rounds: int, calls: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"unwatched": [], "watched": []}
    received = 0
    async with mcp_session(f"{url}/mcp") as session:
        await _block(session, 50, "warm-up")
        for round_number in range(rounds):
            order = ("unwatched", "watched") if round_number % 2 == 0 else ("watched", "unwatched")
            for kind in order:
                if kind == "unwatched":
                    samples[kind] += await _block(session, calls, f"u{round_number}")
                    continue
                watcher = subprocess.Popen([sys.executable, __file__, "--watch", url, "--expect", str(calls)],
                                           stdout=subprocess.PIPE, text=True)
                try:
                    assert watcher.stdout is not None
                    assert await anyio.to_thread.run_sync(watcher.stdout.readline) == "open\n"
                    samples[kind] += await _block(session, calls, f"w{round_number}")
                    seen = int(await anyio.to_thread.run_sync(watcher.stdout.readline))
                finally:
                    watcher.kill()
                    watcher.wait()
                assert seen == calls, f"the watcher saw {seen} of {calls} calls"
                received += seen
    summary = {kind: {"median_ms": round(statistics.median(values), 3),
                      "p95_ms": round(statistics.quantiles(values, n=20)[-1], 3), "calls": len(values)}
               for kind, values in samples.items()}
    summary["ratio_watched_to_unwatched"] = round(summary["watched"]["median_ms"] / summary["unwatched"]["median_ms"], 3)
    summary["events_received"] = received
    return summary


def stage_cost(iterations: int = 100_000) -> dict[str, float]:
    """ns per call of ObserveCalls without a feed and with an unwatched one (best of 9 runs each, alternated)."""
    call = ToolCall(server="fx", tool="echo", exposed_name="fx__echo")
    result = {"content": [], "isError": False}

    async def answer(_: ToolCall) -> dict[str, Any]:
        return result

    # One stage, its feed swapped between runs: two instances differ by more (memory layout) than the check.
    stage = ObserveCalls(GatewayMetrics())
    feeds = [("without_feed_ns", None), ("unwatched_feed_ns", CallFeed())]

    def per_call(feed: CallFeed | None) -> float:
        stage._feed = feed

        async def run() -> None:
            for _ in range(iterations):
                await stage(call, answer)

        started = time.perf_counter_ns()
        anyio.run(run)
        return (time.perf_counter_ns() - started) / iterations

    best = {"without_feed_ns": float("inf"), "unwatched_feed_ns": float("inf")}
    for repeat in range(9):
        for name, feed in feeds if repeat % 2 == 0 else feeds[::-1]:  # alternated: drift lands on both
            best[name] = min(best[name], per_call(feed))
    # Watched: each call's event is built (redacted, serialized) and offered (the queue is full after 128:
    # dropped, as for a viewer that does not keep up; the building is what the call pays).
    watched_feed = CallFeed()
    with watched_feed.subscribe():
        best["watched_feed_ns"] = min(per_call(watched_feed) for _ in range(3))
    return {**{k: round(v, 1) for k, v in best.items()},
            "unwatched_cost_ns": round(best["unwatched_feed_ns"] - best["without_feed_ns"], 1),
            "watched_cost_ns": round(best["watched_feed_ns"] - best["without_feed_ns"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100, help="calls per block")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--watch", metavar="URL", help=argparse.SUPPRESS)  # helper mode: the page's stream
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        watch(args.watch, args.expect)
        return
    fixture = fixture_server("misbehaving_server.py", "--banner", "")
    with tempfile.TemporaryDirectory(prefix="simgate-ui-bench-") as work:
        with running_gateway({"mcpServers": {"fx": fixture}}, Path(work)) as gateway:
            report = anyio.run(measure, gateway.url, args.rounds, args.calls)
    report["observe_stage_in_process"] = stage_cost()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
