"""Install, then run offline: package specs and uvx/npx commands are installed once (with network) into a
per-server tool directory, recorded in a manifest, and then run offline and read-only under bubblewrap."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from harness import REPO_ROOT, GatewayProcess, mcp_session, running_gateway, wait_until

from simgate.gateway.config import parse_config
from simgate.gateway.errors import ConfigError
from simgate.sandboxes.install import InstallManifest, PackageSpec, SpecError, install_request, parse_command
from simgate.sandboxes.install.manifest import MANIFEST

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

MATH_UVX = ["--from", "mcp-server-math==0.1.0", "--with", "mcp<2", "mcp-server-math"]  # breaks under mcp 2.x
MEMORY = "@modelcontextprotocol/server-memory@2026.8.31"
TIME_UVX = ["--from", "mcp-server-time==2026.10.19", "mcp-server-time", "--local-timezone", "UTC"]


# ------------------------------------------------------------------ specs and config


@pytest.mark.parametrize(("command", "args", "describe", "rest"), [
    ("uvx", MATH_UVX + ["--x", "1"], "pypi:mcp-server-math==0.1.0 --with 'mcp<2' (entry mcp-server-math)",
     ["--x", "1"]),
    ("/usr/local/bin/uvx", ["mcp-server-time@2026.10.19", "--local-timezone", "UTC"],
     "pypi:mcp-server-time==2026.10.19 (entry mcp-server-time)", ["--local-timezone", "UTC"]),
    ("uvx", ["--python", "3.12", "--from", "mcp-text-editor==1.2.2", "mcp-text-editor"],
     "pypi:mcp-text-editor==1.2.2 (entry mcp-text-editor) (python 3.12)", []),
    ("uvx", ["--python", "/usr/bin/python3", "--from", "mcp-text-editor==1.2.2", "mcp-text-editor"],
     "pypi:mcp-text-editor==1.2.2 (entry mcp-text-editor) (python /usr/bin/python3)", []),  # a local interpreter
    ("uvx", ["-p", ">=3.12", "--from", "mcp-text-editor==1.2.2", "mcp-text-editor"],
     "pypi:mcp-text-editor==1.2.2 (entry mcp-text-editor) (python >=3.12)", []),
    # uvx takes a requirement as its command too (the entry point is the distribution's name), and @latest
    ("uvx", ["mcp-uuid-server==0.1.6"], "pypi:mcp-uuid-server==0.1.6 (entry mcp-uuid-server)", []),
    ("uvx", ["mcp-uuid-server>=0.1,<1", "--x"], "pypi:mcp-uuid-server<1,>=0.1 (entry mcp-uuid-server)", ["--x"]),
    ("uvx", ["mcp-uuid-server[cli]@0.1.6"], "pypi:mcp-uuid-server[cli]==0.1.6 (entry mcp-uuid-server)", []),
    ("uvx", ["mcp-uuid-server@latest"], "pypi:mcp-uuid-server (entry mcp-uuid-server)", []),
    ("uv", ["tool", "run", "--with=pydantic<2.12", "mcp-units"], ("pypi:mcp-units --with 'pydantic<2.12' "
                                                                        "(entry mcp-units)"), []),
    ("npx", ["-y", "@modelcontextprotocol/server-filesystem@2026.8.31", "/data"],
     "npm:@modelcontextprotocol/server-filesystem@2026.8.31", ["/data"]),
    ("npx", ["--yes", "-p", "@bytebase/dbhub@0.21.2", "dbhub", "--demo"], "npm:@bytebase/dbhub@0.21.2 (entry dbhub)",
     ["--demo"]),
    ("npx", ["mcp-echarts"], "npm:mcp-echarts", []),
])
def test_uvx_and_npx_commands_are_recognized(command: str, args: list[str], describe: str, rest: list[str]) -> None:
    request = parse_command(command, args)
    assert request is not None
    assert request.spec.describe() == describe
    assert request.args == rest


def test_other_commands_run_as_they_are() -> None:
    assert parse_command("node", ["server.js"]) is None
    assert parse_command(sys.executable, ["server.py"]) is None


def test_the_install_key_follows_the_spec() -> None:
    one = install_request(command=None, args=[], package="pypi:mcp-server-math==0.1.0", constraints=["mcp<2"],
                          entry="mcp-server-math")
    same = parse_command("uvx", MATH_UVX)
    other = install_request(command=None, args=[], package="pypi:mcp-server-math==0.1.0", constraints=["mcp<1.30"],
                            entry="mcp-server-math")
    assert one is not None and same is not None and other is not None
    assert one.spec == same.spec and one.spec.key() == same.spec.key()
    assert other.spec.key() != one.spec.key()
    assert PackageSpec.model_validate_json(one.spec.model_dump_json(by_alias=True)) == one.spec


@pytest.mark.parametrize(("package", "constraints", "message"), [
    ("mcp-server-math", [], "package must look like 'pypi:NAME==VERSION' or 'npm:NAME@VERSION'"),
    ("pip:x==1", [], "package must look like"),
    ("pypi:x>=<1", [], "not a valid Python requirement 'x>=<1'"),
    ("pypi:x==1", ["mcp<<2"], "not a valid Python requirement in constraints 'mcp<<2'"),
    ("pypi:x @ https://example.invalid/x.whl", [], "direct URLs are not installed"),
    ("npm:Bad_Name@1", [], "not a valid npm package name 'Bad_Name'"),
    ("npm:left-pad@", [], "not a valid npm version ''"),
    ("npm:left-pad@1.3.0", ["x<2"], "constraints apply to pypi packages only"),
])
def test_bad_package_specs_are_named(package: str, constraints: list[str], message: str) -> None:
    with pytest.raises(SpecError) as error:
        install_request(command=None, args=[], package=package, constraints=constraints, entry=None)
    assert message in str(error.value)


@pytest.mark.parametrize(("server", "message"), [
    ({"package": "pypi:x==1", "command": "x"},
     "server 'a': give either 'package' (installed, then run) or 'command'/'url', not both"),
    ({"package": "pypi:x==1", "url": "http://127.0.0.1:9/mcp"}, "server 'a': give either 'package'"),
    ({"package": "x==1"}, ("server 'a': package must look like 'pypi:NAME==VERSION' or 'npm:NAME@VERSION', "
                           "got 'x==1'")),
    ({"command": "x", "constraints": ["mcp<2"]}, "server 'a': 'constraints' and 'entry' need 'package'"),
    ({"command": "uvx", "args": ["--index", "https://example.invalid", "x"]},
     ("server 'a': uvx option '--index' is not supported by simgate's installer; use 'package: pypi:NAME==VERSION' "
      "with 'constraints' instead (or set install: never to run the command as it is)")),
    ({"command": "npx", "args": ["-y"]}, "server 'a': npx: no package to run"),
    ({"command": "uvx", "args": ["x@"]}, "server 'a': uvx: no version after '@' in 'x@'"),
    ({"command": "uvx", "args": ["x==1@2"]}, "server 'a': not a valid Python requirement 'x==1@2'"),
    ({"package": "pypi:x==1", "install": "never"}, "server 'a': 'package' needs install: auto"),
    ({"package": "pypi:x==1", "install": "sometimes"}, "field 'install'"),
])
def test_config_errors_are_precise(server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(json.dumps({"mcpServers": {"a": server}}), source="c.json", json_only=True)
    assert message in str(error.value), str(error.value)


def test_config_accepts_packages_and_keeps_uvx_as_is_when_asked() -> None:
    config = parse_config(json.dumps({"mcpServers": {
        "a": {"package": "pypi:mcp-server-math==0.1.0", "constraints": ["mcp<2"], "entry": "mcp-server-math"},
        "b": {"command": "uvx", "args": ["--weird-flag", "x"], "install": "never"},
    }}), json_only=True)
    assert config.servers["a"].transport == "stdio" and config.servers["a"].constraints == ["mcp<2"]
    assert config.servers["b"].install == "never"


# ------------------------------------------------------------------ real installs, run offline under bwrap


def _config(state_dir: Path) -> dict[str, Any]:
    return {
        "gateway": {"state_dir": str(state_dir)},
        "mcpServers": {
            # A package spec with the constraint this server needs (it breaks under mcp 2.x).
            "math": {"package": "pypi:mcp-server-math==0.1.0", "constraints": ["mcp<2"], "entry": "mcp-server-math",
                     "sandbox": {"backend": "bwrap"}},
            # Commands as client configs have them: rewritten to the installed entry points.
            "time": {"command": "uvx", "args": TIME_UVX, "sandbox": {"backend": "bwrap"}},
            # Without MEMORY_FILE_PATH it writes beside its own code: the read-only tool dir refuses.
            "memory": {"command": "npx", "args": ["-y", MEMORY], "sandbox": {"backend": "bwrap"}},
        },
    }


def _manifest(state_dir: Path, server: str) -> tuple[Path, InstallManifest]:
    tools = state_dir / "servers" / server / "tools"
    [directory] = [child for child in tools.iterdir()]
    return directory, InstallManifest.model_validate_json((directory / MANIFEST).read_text())


class Starts:
    def __init__(self, state_dir: Path, first: float, first_log: str) -> None:
        self.state_dir = state_dir
        self.first = first
        self.first_log = first_log


@pytest.fixture(scope="module")
def starts(tmp_path_factory: pytest.TempPathFactory) -> Starts:
    """A first start installs both servers (with network) before they answer."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    work = tmp_path_factory.mktemp("install")
    state_dir = work / "state"
    started = time.monotonic()
    with running_gateway(_config(state_dir), work / "first", ready_timeout=240) as gateway:
        first = time.monotonic() - started
        log = gateway.log_text()
    return Starts(state_dir, first, log)


@pytest.fixture(scope="module")
def gateway(starts: Starts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, float]]:
    """A second start on the same state dir: the installs are reused."""
    started = time.monotonic()
    with running_gateway(_config(starts.state_dir), tmp_path_factory.mktemp("second"), ready_timeout=120) as running:
        yield running, time.monotonic() - started


def _text(result: types.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


@needs_bwrap
@pytest.mark.anyio
async def test_installed_servers_answer_offline_in_bwrap(gateway: tuple[GatewayProcess, float]) -> None:
    running, _ = gateway
    async with mcp_session(running.mcp_url("math")) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"sum", "product", "power", "divide"} <= tools
        result = await session.call_tool("sum", {"numbers": [1, 2, 3.5]})
        assert not result.is_error and '"result": "6.5"' in _text(result)
    async with mcp_session(running.mcp_url("time")) as session:
        result = await session.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                          "target_timezone": "Asia/Tokyo"})
        assert not result.is_error and "T21:00:00+09:00" in _text(result)
    async with mcp_session(running.mcp_url("memory")) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"create_entities", "read_graph", "search_nodes"} <= tools
        graph = await session.call_tool("read_graph", {})
        assert not graph.is_error and '"entities": []' in _text(graph)
        # Its default memory file lies in its own package directory, which is mounted read-only.
        write = await session.call_tool("create_entities", {"entities": [
            {"name": "Alice", "entityType": "person", "observations": ["likes tea"]}]})
        assert write.is_error and "EROFS" in _text(write), _text(write)


def test_manifest_records_resolved_versions(starts: Starts) -> None:
    directory, math = _manifest(starts.state_dir, "math")
    assert directory.name == math.key == math.spec.key()
    assert math.spec.describe() == "pypi:mcp-server-math==0.1.0 --with 'mcp<2' (entry mcp-server-math)"
    _, time_server = _manifest(starts.state_dir, "time")
    assert time_server.version_of("mcp-server-time") == "2026.10.19" and time_server.entry == "bin/mcp-server-time"
    assert math.version_of("mcp-server-math") == "0.1.0"
    assert (math.version_of("mcp") or "").startswith("1.")  # the constraint held
    assert math.version_of("pydantic") and math.installer.startswith("uv ") and math.python
    assert math.entry == "bin/mcp-server-math" and math.runner == "python"
    directory, memory = _manifest(starts.state_dir, "memory")
    assert memory.version_of("@modelcontextprotocol/server-memory") == "2026.8.31"
    assert memory.version_of("@modelcontextprotocol/sdk") and memory.installer.startswith("npm ")
    assert memory.runner == "node" and (directory / memory.entry).is_file()
    assert len(memory.packages) > 10  # the whole tree, not just the top package


def test_runs_the_installed_entry_points_not_uvx_or_npx(gateway: tuple[GatewayProcess, float],
                                                       starts: Starts) -> None:
    commands = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(starts.state_dir).encode() in part for part in argv):
            commands.append([part.decode(errors="replace") for part in argv if part])
    for server in ("math", "time", "memory"):
        directory, manifest = _manifest(starts.state_dir, server)
        assert any(str(directory / manifest.entry) in command for command in commands), (server, commands)
    assert not any(os.path.basename(part) in ("uvx", "npx", "uv", "npm") for command in commands for part in command)


def test_second_start_reuses_the_install(starts: Starts, gateway: tuple[GatewayProcess, float]) -> None:
    running, second = gateway
    assert "installing pypi:mcp-server-math==0.1.0" in starts.first_log
    assert "installing npm:@modelcontextprotocol/server-memory@2026.8.31" in starts.first_log
    assert "installing pypi:mcp-server-time==2026.10.19" in starts.first_log
    assert "installing" not in running.log_text()
    for server in ("math", "time", "memory"):
        assert _manifest(starts.state_dir, server)[1].seconds > 0  # written once, by the first start
    print(f"first start (installs) {starts.first:.1f}s, second start (reuse) {second:.1f}s")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simgate", "sandbox", "install", *args], capture_output=True,
                          check=False, text=True, cwd=REPO_ROOT, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_cli_prints_resolved_versions(starts: Starts, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps(_config(starts.state_dir)))
    done = _cli(str(config), "--server", "math")
    assert done.returncode == 0, done.stderr
    assert "math: pypi:mcp-server-math==0.1.0 --with 'mcp<2' (entry mcp-server-math): already installed" in done.stdout
    everything = _cli(str(config))
    assert everything.returncode == 0 and "time: pypi:mcp-server-time==2026.10.19" in everything.stdout
    assert "memory: npm:@modelcontextprotocol/server-memory@2026.8.31: already installed (npm " in everything.stdout
    assert "  mcp-server-math==0.1.0\n" in done.stdout and "\n  mcp==1." in done.stdout
    assert "memory" not in done.stdout
    unknown = _cli(str(config), "--server", "nope")
    assert unknown.returncode == 2 and "no server 'nope'" in unknown.stderr


@pytest.mark.parametrize(("server", "message"), [
    ({"package": "pypi:simgate-no-such-package-zz==1.0"},
     ["server 'bad': cannot install pypi:simgate-no-such-package-zz==1.0: `uv pip install` exited with 1",
      "simgate-no-such-package-zz"]),
    ({"package": "pypi:mcp-server-math==0.1.0", "constraints": ["mcp<2"], "entry": "no-such-script"},
     [("server 'bad': cannot install pypi:mcp-server-math==0.1.0 --with 'mcp<2' (entry no-such-script): "
       "no command 'no-such-script' in the installed environment; mcp-server-math provides mcp-server-math")]),
    ({"package": "npm:@simgate-no-such-scope/no-such-package-zz@1.0.0"},
     [("server 'bad': cannot install npm:@simgate-no-such-scope/no-such-package-zz@1.0.0: `npm install --prefix` "
       "exited with 1"), "404"]),
])
def test_a_failed_install_is_named_and_leaves_no_directory(server: dict[str, Any], message: list[str],
                                                           tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {"bad": server}}))
    done = _cli(str(config))
    assert done.returncode == 1
    for part in message:
        assert part in done.stderr, done.stderr
    server_dir = tmp_path / "state" / "servers" / "bad"
    assert not (server_dir / "tools").exists()
    assert sorted(path.name for path in server_dir.iterdir()) == [".tools.lock", "home", "tmp", "work"]


def test_a_changed_spec_reinstalls_and_drops_the_old_install(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    state = tmp_path / "state"
    keys = []
    for constraint, mcp in (("mcp<2", "1."), ("mcp<1.20", "1.1")):
        config.write_text(json.dumps({"gateway": {"state_dir": str(state)}, "mcpServers": {"math": {
            "package": "pypi:mcp-server-math==0.1.0", "constraints": [constraint]}}}))
        done = _cli(str(config))
        assert done.returncode == 0, done.stderr
        assert "installed in" in done.stdout and f"\n  mcp=={mcp}" in done.stdout, done.stdout
        directory, manifest = _manifest(state, "math")  # exactly one install left
        assert manifest.spec.with_ == (constraint,)
        keys.append(directory.name)
    assert keys[0] != keys[1]


@needs_bwrap
def test_serve_reports_a_failed_install(tmp_path: Path) -> None:
    config = {"gateway": {"state_dir": str(tmp_path / "state")},
              "mcpServers": {"bad": {"package": "pypi:simgate-no-such-package-zz==1.0", "sandbox": {"backend": "bwrap"}}}}
    with running_gateway(config, tmp_path / "gw", wait_ready=False) as running:
        def status() -> dict[str, Any]:
            return httpx.get(running.url + "/admin/servers", timeout=5).json()["servers"][0]

        assert wait_until(lambda: status()["last_error"] is not None, timeout=60)
        error = status()["last_error"]
        assert error.startswith("InstallError: server 'bad': cannot install pypi:simgate-no-such-package-zz==1.0")
        assert "simgate-no-such-package-zz was not found" in error
        assert httpx.get(running.url + "/readyz", timeout=5).status_code == 503
        # A failed install is the server's state, not retried again and again (an install is long) ...
        assert wait_until(lambda: status()["state"] == "failed", timeout=30)
        time.sleep(3)
        assert status()["restarts"] == 0 and status()["state"] == "failed"
        # ... until asked: it is tried once more, and fails the same way.
        restarted = subprocess.run([sys.executable, "-m", "simgate", "servers", "--restart", "bad", "--url",
                                    running.url], capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert restarted.returncode == 0 and "bad: starting again (was failed)" in restarted.stdout, restarted.stderr
        assert wait_until(lambda: status()["restarts"] == 1 and status()["state"] == "failed", timeout=60)
    assert not (tmp_path / "state" / "servers" / "bad" / "tools").exists()


_PROBE_SETUP = '''
import pathlib
wrote = read = False
try:
    pathlib.Path({outside!r}).write_text("escaped")
    wrote = pathlib.Path({outside!r}).exists()
except OSError:
    pass
try:
    read = pathlib.Path({canary!r}).read_text() == "secret"
except OSError:
    pass
raise SystemExit(f"PROBE wrote={{wrote}} read={{read}}")  # the build stops here: what it could do is all we need
'''


@needs_bwrap
def test_the_install_of_a_sandboxed_server_is_jailed_too(tmp_path: Path) -> None:
    """An sdist's build runs third-party code with network: for a bwrap server it cannot write or read the
    host outside the install (the same package installed for an unsandboxed server shows it could)."""
    host = tmp_path / "host"
    host.mkdir()
    outside, canary = host / "escaped.txt", host / "canary.txt"
    canary.write_text("secret")
    source = tmp_path / "src" / "simgate-install-probe-0.1"
    source.mkdir(parents=True)
    (source / "setup.py").write_text(_PROBE_SETUP.format(outside=str(outside), canary=str(canary)))
    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.make_archive(str(dist / "simgate-install-probe-0.1"), "gztar", source.parent, source.name)
    server = {"package": "pypi:simgate-install-probe==0.1"}
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {
        "jailed": {**server, "sandbox": {"backend": "bwrap"}}, "free": server}}))
    env = {**os.environ, "UV_FIND_LINKS": str(dist)}

    def install(name: str) -> str:
        done = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "install", str(config), "--server", name],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        return done.stderr

    assert "PROBE wrote=False read=False" in install("jailed")
    assert not outside.exists()
    assert "PROBE wrote=True read=True" in install("free")  # the control: unjailed, it could
    assert outside.read_text() == "escaped"


_PATH_PROBE_SETUP = '''
import os
from setuptools import setup
if os.environ.get("PATH_PROBE_INSTALL") != "yes":  # as packages do that need a variable set to install
    raise SystemExit("set PATH_PROBE_INSTALL=yes to install this package")
setup(name="simgate-path-probe", version="0.1", py_modules=["path_probe"],
      entry_points={"console_scripts": ["simgate-path-probe=path_probe:serve",
                                        "simgate-path-helper=path_probe:helper"]})
'''
_PATH_PROBE_MODULE = '''
import json, subprocess, sys

def helper():
    print("helper ran from PATH")

def serve():
    for line in sys.stdin:
        request = json.loads(line)
        method, rid = request.get("method"), request.get("id")
        if rid is None:
            continue
        if method == "initialize":
            result = {"protocolVersion": request["params"]["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": "path-probe", "version": "0.1"}}
        elif method == "tools/list":
            result = {"tools": [{"name": "helper", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":  # the helper is found on PATH only (uvx puts the install's bin/ there)
            done = subprocess.run(["simgate-path-helper"], capture_output=True, text=True)
            result = {"content": [{"type": "text", "text": done.stdout.strip()}]}
        else:
            result = {}
        print(json.dumps({"jsonrpc": "2.0", "id": rid, "result": result}), flush=True)
'''


@needs_bwrap
def test_an_install_gets_the_servers_env_and_the_server_its_own_bin_on_path(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "src" / "simgate-path-probe-0.1"
    source.mkdir(parents=True)
    (source / "setup.py").write_text(_PATH_PROBE_SETUP)
    (source / "path_probe.py").write_text(_PATH_PROBE_MODULE)
    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.make_archive(str(dist / "simgate-path-probe-0.1"), "gztar", source.parent, source.name)
    config = {"gateway": {"state_dir": str(tmp_path / "state")}, "mcpServers": {"probe": {
        "package": "pypi:simgate-path-probe==0.1", "env": {"PATH_PROBE_INSTALL": "yes"},
        "sandbox": {"backend": "bwrap"}}}}
    monkeypatch.setenv("UV_FIND_LINKS", str(dist))  # the gateway process inherits it (a local wheelhouse)
    with running_gateway(config, tmp_path / "gw", ready_timeout=300) as running:
        async def call() -> str:
            async with mcp_session(running.mcp_url("probe")) as session:
                return _text(await session.call_tool("helper", {}))

        assert anyio.run(call) == "helper ran from PATH"
