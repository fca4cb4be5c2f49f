#!/usr/bin/env python
"""Start-up cost of each sandbox backend: the time from launching one server to its `initialize`
answer, through the gateway's own upstream transport (`gateway.upstream.transport.open_transport`).

Backends: none (a plain child process), bwrap (bubblewrap), docker (a hardened container on a
private engine started here exactly as shared/TESTING.md §4 says, unless --docker-host is given).
Servers: the real `calculator` (PyPI) and `memory` (npm) servers from tests/real_servers.py,
installed under $SIMGATE_SERVERS_DIR (`.ci/install-servers`). Runs are interleaved across backends
so drift lands on all alike; images are built (or found) before timing starts.

    .venv/bin/python benchmarks/sandbox_startup.py --runs 15 --out benchmarks/results/sandbox_startup.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import real_servers as rs  # noqa: E402
from docker_engine import private_engine  # noqa: E402

from simgate.gateway.config.models import ServerConfig  # noqa: E402
from simgate.gateway.upstream.transport import open_transport  # noqa: E402
from simgate.sandboxes.workdir import prepare_server_dirs  # noqa: E402

BACKENDS = ("none", "bwrap", "docker")


def _config(name: str, backend: str, docker_host: str | None, state: Path) -> tuple[ServerConfig, Any]:
    dirs = prepare_server_dirs(state, f"{name}-{backend}")
    rs.prepare_work_dir(name, dirs.root)
    command, args, env = rs.server_command(name, rs.default_install_root(), dirs.root)
    sandbox = None if backend == "none" else {"backend": backend, "docker_host": docker_host}
    return ServerConfig(command=command, args=args, env=env, cwd=str(dirs.work), sandbox=sandbox), dirs


async def _initialize_once(name: str, config: ServerConfig, dirs: Any) -> float:
    with open(dirs.root / "stderr.log", "a") as errlog:
        started = time.perf_counter()
        async with open_transport(name, config, dirs, errlog) as (read, write), ClientSession(read, write) as session:
            with anyio.fail_after(120):
                await session.initialize()
            return time.perf_counter() - started


async def _measure(servers: list[str], runs: int, docker_host: str | None, state: Path) -> dict[str, Any]:
    configs = {(name, backend): _config(name, backend, docker_host, state) for name in servers for backend in BACKENDS}
    for (name, _backend), (config, dirs) in configs.items():  # warm-up: image builds, page cache, .pyc
        await _initialize_once(name, config, dirs)
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in configs}
    for run in range(runs):
        order = list(configs)
        order = order[run % len(order):] + order[:run % len(order)]
        for key in order:
            samples[key].append(await _initialize_once(key[0], *configs[key]))
    results: dict[str, Any] = {}
    for name in servers:
        medians = {backend: statistics.median(samples[(name, backend)]) for backend in BACKENDS}
        results[name] = {
            "median_seconds": {backend: round(value, 4) for backend, value in medians.items()},
            "ratio_to_none": {backend: round(value / medians["none"], 2) for backend, value in medians.items()},
            "samples_seconds": {backend: [round(v, 4) for v in samples[(name, backend)]] for backend in BACKENDS},
        }
    return results


@contextlib.contextmanager
def _engine(docker_host: str | None) -> Iterator[str]:
    if docker_host:
        yield docker_host
        return
    with private_engine() as engine:
        yield engine.host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="timed initializes per server and backend")
    parser.add_argument("--servers", default="calculator,memory", help="real servers (tests/real_servers.py)")
    parser.add_argument("--docker-host", help="an engine to use instead of a private one started here")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    servers = [name for name in args.servers.split(",") if name]
    missing = [name for name in servers if not rs.installed(name, rs.default_install_root())]
    if missing:
        parser.error(f"not installed: {', '.join(missing)} (run .ci/install-servers)")
    with _engine(args.docker_host) as host, tempfile.TemporaryDirectory(prefix="simgate-bench-") as state:
        results = anyio.run(_measure, servers, args.runs, host, Path(state))
    report = {"benchmark": "sandbox_startup", "runs": args.runs, "machine": {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "servers": results}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for name, result in results.items():
        print(name, "median s:", result["median_seconds"], "ratio to none:", result["ratio_to_none"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
