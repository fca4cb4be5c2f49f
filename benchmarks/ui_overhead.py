#!/usr/bin/env python
"""What the page's live-calls stream costs a tool call: with no page open, and with one streaming.

One `simgate serve` (tests/harness.py) in front of tests/fixtures/misbehaving_server.py (`echo`),
one long-lived `mcp` client session. Rounds alternate, in the same run, between

  unwatched  no page is open: the pipeline's ObserveCalls stage only checks that no one watches;
  watched    a page's stream is open (GET /ui/api/calls/stream, read as fast as it comes), so every
             call is turned into an event, queued, serialized, redacted and sent;

with the order within a round alternated, so drift lands on both alike. Reported: the median and p95
latency of each, the ratio of medians, and how many events the watcher received (it must be every
watched call). Also, in process, what the feed adds to the ObserveCalls stage when no one watches
(ns per call): the stage with an unwatched feed against the stage without any feed.

    .venv/bin/python benchmarks/ui_overhead.py [--rounds 10 --calls 100 --out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
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

from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.pipeline.call import ToolCall  # noqa: E402
from gateway.pipeline.observe import ObserveCalls  # noqa: E402
from gateway.ui.feed import CallFeed  # noqa: E402


async def _watch(url: str, received: list[int], opened: anyio.Event, done: anyio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30, read=None), trust_env=False) as http:
        async with http.stream("GET", "/ui/api/calls/stream") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("retry:"):
                    opened.set()
                elif line == "event: call":
                    received[0] += 1
                if done.is_set():
                    return


async def _block(session: Any, calls: int, tag: str) -> list[float]:
    times = []
    for index in range(calls):
        started = time.perf_counter()
        await session.call_tool("fx__echo", {"text": f"{tag}-{index}"})
        times.append((time.perf_counter() - started) * 1000)
    return times


async def measure(url: str, rounds: int, calls: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"unwatched": [], "watched": []}
    received = [0]
    async with mcp_session(f"{url}/mcp") as session:
        await _block(session, 50, "warm-up")
        for round_number in range(rounds):
            order = ("unwatched", "watched") if round_number % 2 == 0 else ("watched", "unwatched")
            for kind in order:
                if kind == "unwatched":
                    samples[kind] += await _block(session, calls, f"u{round_number}")
                    continue
                opened, done = anyio.Event(), anyio.Event()
                before = received[0]
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_watch, url, received, opened, done)
                    await opened.wait()
                    samples[kind] += await _block(session, calls, f"w{round_number}")
                    with anyio.move_on_after(5):
                        while received[0] - before < calls:
                            await anyio.sleep(0.01)
                    done.set()
                    tg.cancel_scope.cancel()
                assert received[0] - before == calls, f"the watcher saw {received[0] - before} of {calls} calls"
    summary = {kind: {"median_ms": round(statistics.median(values), 3),
                      "p95_ms": round(statistics.quantiles(values, n=20)[-1], 3), "calls": len(values)}
               for kind, values in samples.items()}
    summary["ratio_watched_to_unwatched"] = round(summary["watched"]["median_ms"] / summary["unwatched"]["median_ms"], 3)
    summary["events_received"] = received[0]
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
    return {**{k: round(v, 1) for k, v in best.items()},
            "feed_cost_ns": round(best["unwatched_feed_ns"] - best["without_feed_ns"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100, help="calls per block")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
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
