"""Shared by the fidelity tests: record real servers through a real gateway, run simgate as a
subprocess, and render an HTML report in headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import real_servers as rs
from harness import REPO_ROOT, mcp_session, running_gateway

ROOT = rs.default_install_root()
CHROMIUM = "/usr/bin/chromium"
RECORDED_SERVERS = ("calculator", "time", "sqlite", "memory")
# Beyond each server's catalogued calls (which include an isError, a soft error, a stateful sequence),
# a few more calls of the same tools, so the few-shot setting has neighbours to show.
EXTRA_CALLS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "calculator": [("calculate", {"expression": "7*6"}), ("calculate", {"expression": "2**10 + 1"}),
                   ("calculate", {"expression": "1/0"})],
    "time": [("get_current_time", {"timezone": "Europe/Paris"}), ("get_current_time", {"timezone": "Asia/Tokyo"}),
             ("convert_time", {"source_timezone": "UTC", "time": "08:30", "target_timezone": "Europe/Paris"})],
    "sqlite": [("read_query", {"query": "SELECT count(*) AS n FROM sales"}), ("list_tables", {})],
    "memory": [("search_nodes", {"query": "coffee"}), ("read_graph", {})],
}


def real_server(name: str, work_dir: Path) -> dict[str, Any]:
    return rs.gateway_server(name, work_dir, ROOT)


def calls_of(name: str, work_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    server = rs.get(name)
    catalogued = [(c.tool, rs.expand(c.arguments, work_dir)) for c in server.calls]
    return catalogued + EXTRA_CALLS.get(name, [])


async def record_real_servers(tmp: Path, names: tuple[str, ...] = RECORDED_SERVERS) -> tuple[Path, int]:
    """Record every call of `names` through a real gateway (record: all); returns (store, calls made)."""
    store = tmp / "store"
    servers = {name: real_server(name, tmp / "rec" / name) for name in names}
    made = 0
    with running_gateway({"gateway": {"record": "all", "cache_dir": str(store), "state_dir": str(tmp / "state")},
                          "mcpServers": servers}, tmp / "gw-record") as gateway:
        async with mcp_session(gateway.mcp_url(), headers={"X-Simgate-Session": "fidelity"}) as session:
            for name in names:
                for tool, arguments in calls_of(name, tmp / "rec" / name):
                    await session.call_tool(f"{name}__{tool}", arguments)
                    made += 1
    return store, made


def fresh_config(tmp: Path, store: Path, names: tuple[str, ...] = RECORDED_SERVERS,
                 simulator: dict[str, Any] | None = None) -> Path:
    """A config whose servers start from fresh working directories (a faithful second live call)."""
    import json

    again = tmp / "again"
    n = 0
    while again.exists():  # never a directory an earlier run left its state in
        n += 1
        again = tmp / f"again-{n}"
    servers = {name: real_server(name, again / name) for name in names}
    gateway: dict[str, Any] = {"cache_dir": str(store), "state_dir": str(again.with_name(again.name + "-state"))}
    if simulator:
        gateway["simulator"] = simulator
    path = again.with_suffix(".json")
    path.write_text(json.dumps({"gateway": gateway, "mcpServers": servers}))
    return path


def simgate(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "simgate", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def chromium_or_skip() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI (scripts/test.sh installs Debian's chromium)")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")


def render_in_chromium(html: Path, out_dir: Path) -> tuple[str, Path]:
    """(the DOM after rendering, a full-page screenshot PNG) from headless Chromium."""
    chromium = chromium_or_skip()
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=out_dir))
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    try:
        dom = subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120,
                             check=False)
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = out_dir / "report.png"
        result = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars",
                                 html.as_uri()], capture_output=True, text=True, timeout=120,
                             check=False)
        assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return dom.stdout, shot


def assert_rendered(dom: str, screenshot: Path, *, min_tables: int) -> None:
    """Tables with rows, SVG charts with drawn bars, and a screenshot that is not one flat colour."""
    from html.parser import HTMLParser

    from PIL import Image

    counts = {"table": 0, "tr": 0, "svg": 0, "rect": 0, "td": 0}

    class Counter(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag in counts:
                counts[tag] += 1

    Counter().feed(dom)
    assert counts["table"] >= min_tables and counts["tr"] > counts["table"] and counts["td"] > 0, counts
    assert counts["svg"] >= 1 and counts["rect"] >= 3, counts
    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert image.size[0] >= 800
    assert colours is None or len(colours) > 10, "the screenshot is (nearly) one flat colour"
