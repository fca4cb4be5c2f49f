"""The official MCP conformance suite against the stdio fixture, directly and via the gateway.

Baseline: `tests/fixtures/conformance_server.py --http PORT` (the SDK's own streamable
HTTP in front of the fixture) must pass every check of the suite's default ("active")
server run. Then the same fixture, launched over stdio by the gateway, must produce
exactly the same per-check statuses at `/servers/conf/mcp`: with the gateway's fast paths
(the direct path downstream, raw calls upstream) and without them (`gateway.fast_paths: false`).

Needs Node 22 and `@modelcontextprotocol/conformance@0.1.16` under $SIMGATE_SERVERS_DIR
(see tests/conformance.py); skipped with the install command when they are missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conformance import (
    ACTIVE_SUITE_CHECKS_0_1_16,
    CONFORMANCE_VERSION,
    ConformanceResult,
    conformance_unavailable_reason,
    conformance_version,
    run_conformance,
    servers_dir,
)
from harness import FIXTURES, REPO_ROOT, free_port, http_ok, wait_for

FIXTURE = FIXTURES / "conformance_server.py"

# Every check of the active suite passes when the fixture is served directly.
EXPECTED_PASSED = ACTIVE_SUITE_CHECKS_0_1_16  # 40 on 0.1.16

FIXTURE_START_TIMEOUT = 30.0
GATEWAY_START_TIMEOUT = 60.0


# --------------------------------------------------------------------------- helpers


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<no log>"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with start_new_session=True, with its own children.

    Its process group id is its pid (it leads a new session), so signalling that
    group reaches exactly what it spawned (e.g. the gateway's stdio upstreams).
    """
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    # Leader gone (or hung): make sure nothing of its group survives.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not time out
        pass


@contextmanager
def started(
    argv: list[str],
    cwd: Path,
    log: Path,
    ready: Callable[[], bool],
    timeout: float,
    what: str,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` in `cwd`, wait until `ready()` is true, and always stop it afterwards.

    The repository is put on PYTHONPATH so `python -m gateway` works from any cwd
    (the gateway keeps per-server state under its cwd: never the work tree).
    """
    env = dict(os.environ)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(proc, ready, timeout, what, lambda: _log_tail(log))
            yield proc
        finally:
            _stop(proc)


def _http_answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (any status: the server is up)."""
    try:
        httpx.get(url, timeout=1.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return True


def _diff(expected: Mapping[str, str], actual: Mapping[str, str]) -> str:
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            lines.append(f"  {key}: direct={expected.get(key)} gateway={actual.get(key)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def conformance_root() -> Path:
    root = servers_dir()
    reason = conformance_unavailable_reason(root)
    if reason is not None:
        pytest.skip(f"conformance suite not installed: {reason}")
    version = conformance_version(root)
    assert version == CONFORMANCE_VERSION, (
        f"expected @modelcontextprotocol/conformance {CONFORMANCE_VERSION} under {root}, found {version}; "
        "the expected score is pinned to that version"
    )
    return root


@pytest.fixture(scope="module")
def direct_result(conformance_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ConformanceResult:
    """The suite against the fixture served by the SDK's own streamable HTTP."""
    work = tmp_path_factory.mktemp("conformance-direct")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with started(
        [sys.executable, str(FIXTURE), "--http", str(port)],
        work,
        work / "fixture.log",
        lambda: _http_answers(url),
        FIXTURE_START_TIMEOUT,
        "conformance fixture (--http)",
    ):
        return run_conformance(url, work / "results", conformance_root)


# --------------------------------------------------------------------------- tests


def test_fixture_scores_directly(direct_result: ConformanceResult) -> None:
    result = direct_result
    assert result.summary_passed == result.passed and result.summary_failed == result.failed, (
        f"parsed checks disagree with the CLI summary:\n{result.stdout[-3000:]}"
    )
    assert result.passed == EXPECTED_PASSED, result.describe()
    assert result.failed == 0, result.describe()
    assert result.all_passed, result.describe()
    assert result.returncode == 0, result.describe()


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast-paths", "sdk-only"])
def test_gateway_scores_same_as_direct(
    direct_result: ConformanceResult, conformance_root: Path, tmp_path: Path, fast_paths: bool
) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"gateway": {"fast_paths": fast_paths},
                                  "mcpServers": {"conf": {"command": sys.executable, "args": [str(FIXTURE)]}}},
                                 indent=2))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with started(
        [sys.executable, "-m", "simgate", "serve", str(config), "--host", "127.0.0.1", "--port", str(port)],
        tmp_path,
        tmp_path / "gateway.log",
        lambda: http_ok(f"{base}/readyz"),
        GATEWAY_START_TIMEOUT,
        "gateway",
    ):
        result = run_conformance(f"{base}/servers/conf/mcp", tmp_path / "results", conformance_root)

    assert result.checks == direct_result.checks, (
        f"gateway differs from direct:\n{_diff(direct_result.checks, result.checks)}\n\n"
        f"gateway: {result.describe()}\n\ndirect: {direct_result.describe()}\n\n"
        f"gateway log:\n{_log_tail(tmp_path / 'gateway.log')}"
    )
    assert (result.passed, result.failed, result.total) == (
        direct_result.passed,
        direct_result.failed,
        direct_result.total,
    )
