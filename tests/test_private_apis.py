"""The private library details simgate relies on are listed, probed and read in one module
(`simgate/private_apis.py`): present on the installed versions, named when gone, and used nowhere else."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO_ROOT, fixture_server

from simgate import private_apis
from simgate.private_apis import DETAILS, PrivateApiChanged

PRODUCT = ("gateway", "runner", "simulators", "sandboxes", "simgate")


def test_every_detail_is_present_on_the_installed_versions() -> None:
    assert {detail.library for detail in DETAILS} <= set(private_apis.CHECKED)
    assert [detail.name for detail in DETAILS if not detail.present()] == []
    warnings = private_apis.check()
    unchecked = [lib for lib, prefixes in private_apis.CHECKED.items()
                 if not private_apis.installed(lib).startswith(prefixes)]
    assert len(warnings) == len(unchecked) and all("not a version simgate was checked against" in w for w in warnings)


def test_an_accessor_names_the_detail_that_is_gone() -> None:
    with pytest.raises(PrivateApiChanged) as gone:
        private_apis.session_transports(object())
    message = str(gone.value)
    assert message.startswith(f"mcp {private_apis.installed('mcp')} has no "
                              "StreamableHTTPSessionManager._server_instances")
    assert "checked against mcp 2.3.x" in message and "install a checked version" in message


def test_a_release_without_a_detail_stops_the_gateway_at_start_by_name(tmp_path: Path) -> None:
    """An `mcp` whose session manager no longer has the method a replica overrides (its sessions' ids would
    silently stay untagged): `simgate serve` refuses to start, in one line, before any server is started."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "from mcp.server.streamable_http_manager import StreamableHTTPSessionManager\n"
        "del StreamableHTTPSessionManager._admit_session\n")
    config = tmp_path / "simgate.json"
    config.write_text(json.dumps({"gateway": {"state_dir": str(tmp_path / "state")},
                                  "mcpServers": {"mis": fixture_server("misbehaving_server.py")}}))
    done = subprocess.run([sys.executable, "-m", "simgate", "serve", str(config), "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (f"mcp {private_apis.installed('mcp')} has no StreamableHTTPSessionManager._admit_session (used in "
            "gateway.replicas.sessions)") in done.stderr
    assert "checked against mcp 2.3.x: install a checked version" in done.stderr
    assert not (tmp_path / "state" / "servers").exists()  # stopped before any server was prepared


def _private_uses(path: Path) -> list[str]:
    """Imports of a library's private module outside `if TYPE_CHECKING:`, and `getattr(x, "_name")`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                   for node in ast.walk(block)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and id(node) not in typing_only:
            if any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")) or any(
                    alias.name.startswith("_") and not alias.name.startswith("__") for alias in node.names
                    if node.module.split(".")[0] in {"re", "mcp", "mcp_types", "anyio", "docker", "socket", "asyncio"}):
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
        if isinstance(node, ast.Import) and id(node) not in typing_only:
            found += [f"{path}:{node.lineno}: import {alias.name}" for alias in node.names
                      if any(part.startswith("_") and not part.startswith("__") for part in alias.name.split("."))]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str) and node.args[1].value.startswith("_")
                and not node.args[1].value.startswith("__")):
            found.append(f"{path}:{node.lineno}: getattr(..., {node.args[1].value!r})")
    return found


def test_no_module_but_the_one_reaches_for_a_private_detail() -> None:
    files = [path for package in PRODUCT[:-1] for path in sorted((REPO_ROOT / package).rglob("*.py"))]
    files += [path for path in sorted((REPO_ROOT / "simgate").glob("*.py")) if path.name != "private_apis.py"]
    assert len(files) > 200
    assert [use for path in files for use in _private_uses(path)] == []


def test_the_scan_finds_a_private_use(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from mcp.shared._stream_protocols import ReadStream\n"
                      "x = getattr(object(), '_server_instances', {})\n"
                      "from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from mcp.shared._stream_protocols import WriteStream\n")
    assert [use.split(": ", 1)[1] for use in _private_uses(sample)] == [
        "from mcp.shared._stream_protocols import ...", "getattr(..., '_server_instances')"]
