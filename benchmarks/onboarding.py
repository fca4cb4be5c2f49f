#!/usr/bin/env python
"""Servers onboarded per minute by `simgate onboard`, with `--jobs 1` and `--jobs 4`, on this machine.

The servers are the corpus of tests/onboard_corpus.json (real PyPI and npm servers of every kind:
pure, stateful, time-dependent, credential-gated, network-needing, broken). Installs are warmed
first by one untimed onboarding into the same state dir, so the timed runs measure the probing
itself: start under bubblewrap behind the closed egress proxy, list, call every tool twice per
argument set, classify, write the reports and the config. Each timed run onboards every server again
(`--force`, a fresh --out); the figure is the median over `--runs` runs.

    /work/main/.venv/bin/python benchmarks/onboarding.py --runs 3 --out benchmarks/results/onboarding.json

Every process the script starts runs in its own process group and is killed if the script stops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "onboard_corpus.json"
JOBS = (1, 4)


def onboard(specs: list[str], jobs: int, state: Path, workdir: Path) -> tuple[float, list[dict[str, Any]]]:
    """One onboarding of every spec: (wall-clock seconds, the reports)."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "simgate", "onboard", *specs, "--jobs", str(jobs), "--force", "--no-progress",
               "--state-dir", str(state), "--out", str(workdir / "reports"), "--config", str(workdir / "onboarded.yaml")]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=3600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"onboarding failed ({process.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    return seconds, json.loads((workdir / "reports" / "onboard.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed onboardings per --jobs value (the median is kept)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a JSON list of {\"spec\": ...}")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    specs = [entry["spec"] for entry in json.loads(args.corpus.read_text())]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="simgate-bench-onboard-") as scratch:
        state = Path(scratch) / "state"
        warm_seconds, reports = onboard(specs, max(JOBS), state, Path(scratch) / "warm")
        print(f"warm-up (installs included): {warm_seconds:.1f}s", flush=True)
        for jobs in JOBS:
            seconds = []
            for run in range(args.runs):
                elapsed, reports = onboard(specs, jobs, state, Path(scratch) / f"jobs{jobs}-{run}")
                seconds.append(round(elapsed, 2))
                print(f"--jobs {jobs} run {run + 1}: {elapsed:.1f}s", flush=True)
            median = statistics.median(seconds)
            results[f"jobs_{jobs}"] = {
                "jobs": jobs, "seconds": seconds, "median_seconds": round(median, 2),
                "servers_per_minute": round(len(specs) / (median / 60), 2),
                "tools_probed": sum(len(report["tools"]) for report in reports),
                "per_server_seconds_median": round(statistics.median(report["seconds"] for report in reports), 2)}
    report = {
        "benchmark": "onboarding", "servers": len(specs), "runs": args.runs,
        "what": "installs warmed first (one untimed onboarding into the same state dir): the timed runs measure "
                "probing, classification and reporting, not downloads",
        "warm_up_seconds_with_installs": round(warm_seconds, 2),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "results": results}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for key, result in results.items():
        print(key, "median s:", result["median_seconds"], "servers/min:", result["servers_per_minute"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
