"""Untrusted servers under Docker (a real, private engine): the hostile server's break-out attempts
of test_sandbox.py are contained here too, the gateway stays up, crashes and limits surface like a
process exit, real servers from PyPI and npm run offline with the answers they give directly, and no
container outlives the gateway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import real_servers as rs
from docker_engine import DockerEngine
from harness import REPO_ROOT, GatewayProcess, fixture_server, mcp_session, running_gateway, wait_until
from mcp.shared.exceptions import MCPError
from test_real_servers_gateway import _decline, _decline_roots, _direct, _session_transcript
from test_sandbox import (  # noqa: F401  (the same hostile-server tests, run here under docker)
    _friend_still_answers,
    _text,
    test_a_hang_times_out_and_the_gateway_stays_up,
    test_cannot_reach_a_loopback_port_outside,
    test_cannot_read_outside_its_directories,
    test_cannot_write_outside_its_directories,
    test_fork_bomb_is_capped,
    test_stdout_flood_is_skipped,
    test_the_wall_clock_restarts_the_server,
    test_two_gigabytes_are_refused,
)

from simgate.sandboxes.docker.container import GATEWAY_LABEL, SERVER_LABEL, STATE_LABEL, gateway_instance

pytestmark = pytest.mark.anyio

ROOT = rs.default_install_root()
LIMITS = {"memory_mb": 512, "processes": 48, "open_files": 256}
# Python (uv-installed venvs) and Node (npm prefixes) servers of the corpus.
PLANTED = "planted-token-7f3a9c"
REAL_SERVERS = ["calculator", "sqlite", "time", "memory", "everything"]


def _sandbox(engine: DockerEngine, **extra: Any) -> dict[str, Any]:
    return {"backend": "docker", "docker_host": engine.host, "limits": LIMITS, **extra}


def _containers(engine: DockerEngine, **labels: str) -> list[Any]:
    filters = [f"{key}={value}" for key, value in labels.items()] or [GATEWAY_LABEL]
    with engine.client() as client:
        return client.containers.list(all=True, filters={"label": filters})


@pytest.fixture(scope="module")
def gateway(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:  # noqa: F811
    work = tmp_path_factory.mktemp("docker-sandbox")
    servers: dict[str, Any] = {
        "hostile": {**fixture_server("hostile_server.py"), "sandbox": _sandbox(docker_engine), "call_timeout": 3,
                    "ping_timeout": 2, "env": {"PLANTED_TOKEN": PLANTED}},
        "friend": fixture_server("misbehaving_server.py"),
        "raw": {**fixture_server("raw_stdio_server.py"), "sandbox": _sandbox(docker_engine)},
        # Cut short by the wall clock, and by its memory cgroup (no address-space limit set).
        "brief": {**fixture_server("hostile_server.py"), "sandbox": _sandbox(docker_engine, wall_clock=4),
                  "max_restart_backoff": 1},
        "crashy": {**fixture_server("misbehaving_server.py"), "sandbox": _sandbox(docker_engine),
                   "max_restart_backoff": 1},
        "greedy": {**fixture_server("hostile_server.py"), "call_timeout": 20, "max_restart_backoff": 1,
                   "sandbox": {"backend": "docker", "docker_host": docker_engine.host,
                               "limits": {"processes": 64}}},
    }
    with running_gateway({"mcpServers": servers}, work, ready_timeout=180) as running:
        yield running


async def test_the_server_runs_hardened_and_labelled(gateway: GatewayProcess, docker_engine: DockerEngine) -> None:  # noqa: F811
    instance = gateway_instance(gateway.workdir / ".simgate")
    # Up (the hang test before may have had it restarted), so its one container is there.
    assert (await _call(gateway, "hostile", "allocate", {"megabytes": 1})).startswith("ALLOCATED")
    (container,) = _containers(docker_engine, **{GATEWAY_LABEL: instance, SERVER_LABEL: "hostile"})
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert config["User"] == "65534:65534" and config["StdinOnce"] is True
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["PidsLimit"] == 48 and host["Memory"] == 512 * 1024 * 1024 and host["NanoCpus"] == 10**9
    assert host["LogConfig"]["Type"] == "none"
    # What it runs as, seen from inside.
    assert (await _call(gateway, "hostile", "read_file", {"path": "/proc/self/status"})).count("65534") >= 2
    # Its environment came on its stdin: neither on its command line nor in the configuration the engine
    # stores (tests/test_sandbox_exposure.py checks the engine's files too); only what the policy allows.
    assert PLANTED not in json.dumps(config["Cmd"]) and PLANTED not in json.dumps(config["Env"])
    environ = (await _call(gateway, "hostile", "read_file", {"path": "/proc/self/environ"})).split("\0")
    assert f"PLANTED_TOKEN={PLANTED}" in environ
    assert not [item for item in environ if item.startswith("PYTEST_CURRENT_TEST=")]  # the gateway's own


async def _call(gateway: GatewayProcess, server: str, tool: str, arguments: dict[str, Any]) -> str:
    async with mcp_session(gateway.mcp_url(server)) as session:
        with anyio.fail_after(60):
            return _text(await session.call_tool(tool, arguments))


async def test_a_crash_fails_the_call_at_once_and_the_server_restarts(gateway: GatewayProcess) -> None:
    assert await _call(gateway, "crashy", "counter", {}) in ("1", "2", "3")
    started = anyio.current_time()
    async with mcp_session(gateway.mcp_url("crashy")) as session:
        with anyio.fail_after(30), pytest.raises(MCPError) as crashed:
            await session.call_tool("crash", {})
    assert anyio.current_time() - started < 10  # the container's exit ends the call, not its 60 s timeout
    assert crashed.value.error.code == -32001 and "crashy" in crashed.value.error.message
    log = gateway.workdir / ".simgate" / "servers" / "crashy" / "stderr.log"
    assert wait_until(lambda: "exited with status" in log.read_text(), timeout=10)
    assert wait_until(lambda: gateway.log_text().count("upstream crashy ready") >= 2, timeout=30)
    assert await _call(gateway, "crashy", "counter", {}) == "1"  # a fresh process
    await _friend_still_answers(gateway)


async def test_a_result_over_max_result_bytes_fails_at_once_and_the_container_stays(gateway: GatewayProcess) -> None:
    """The same framer and limit as for a child process (the gateway default, 32 MiB), over the attach stream."""
    async with mcp_session(gateway.mcp_url("crashy")) as session:
        before = _text(await session.call_tool("counter", {}))
        started = anyio.current_time()
        with anyio.fail_after(40), pytest.raises(MCPError) as too_large:
            await session.call_tool("huge", {"megabytes": 20})  # 40 MB: content and structuredContent
        assert anyio.current_time() - started < 20
        assert too_large.value.error.code == -32008 and "max_result_bytes" in too_large.value.error.message
        # The same container answers next (its counter goes on): it was not restarted.
        assert int(_text(await session.call_tool("counter", {}))) == int(before) + 1


async def test_out_of_memory_is_a_clear_error_and_a_restart(gateway: GatewayProcess) -> None:
    # No address-space limit here: 3 GB meets the 2 GB memory cgroup, and the kernel kills the server.
    async with mcp_session(gateway.mcp_url("greedy")) as session:
        with anyio.fail_after(60), pytest.raises(MCPError) as killed:
            await session.call_tool("allocate", {"megabytes": 3072})
    assert "greedy" in killed.value.error.message
    log = gateway.workdir / ".simgate" / "servers" / "greedy" / "stderr.log"
    assert wait_until(lambda: "out of memory" in log.read_text(), timeout=20), log.read_text()[-2000:]
    assert wait_until(lambda: gateway.log_text().count("upstream greedy ready") >= 2, timeout=30)
    assert (await _call(gateway, "greedy", "allocate", {"megabytes": 16})).startswith("ALLOCATED 16")
    assert (await _call(gateway, "friend", "echo", {"text": "still here"})) == "still here"


async def test_restarts_leave_no_container_behind(gateway: GatewayProcess, docker_engine: DockerEngine) -> None:  # noqa: F811
    # After the crashes, OOM kills, hangs and wall-clock stops above: at most one container per server.
    instance = gateway_instance(gateway.workdir / ".simgate")
    per_server: dict[str, int] = {}
    for container in _containers(docker_engine, **{GATEWAY_LABEL: instance}):
        server = container.labels[SERVER_LABEL]
        per_server[server] = per_server.get(server, 0) + 1
    assert per_server and max(per_server.values()) == 1, per_server
    assert "friend" not in per_server  # not sandboxed


@pytest.fixture(scope="module")
def real_gateway(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
                 ) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("docker-real") / "gw"
    servers: dict[str, Any] = {}
    for name in REAL_SERVERS:
        if not rs.installed(name, ROOT):
            continue
        # The server's own directories are the gateway's (STATE_DIR/servers/NAME/{home,tmp,work}).
        own = workdir / ".simgate" / "servers" / name
        work = rs.prepare_work_dir(name, own)
        command, args, env = rs.server_command(name, ROOT, own)
        servers[name] = {"command": command, "args": args, "env": env, "cwd": str(work),
                         "sandbox": {"backend": "docker", "docker_host": docker_engine.host}}
    with running_gateway({"mcpServers": servers}, workdir, ready_timeout=180) as running:
        yield running


@pytest.mark.parametrize("name", REAL_SERVERS)
async def test_real_servers_run_offline_under_docker_as_they_do_directly(
        name: str, real_gateway: GatewayProcess, tmp_path: Path) -> None:
    if not rs.installed(name, ROOT):
        pytest.skip(f"{name} not installed under {ROOT}: run .ci/install-servers")
    direct = await _direct(name, tmp_path / "direct")
    work = real_gateway.workdir / ".simgate" / "servers" / name / "work"
    async with mcp_session(real_gateway.mcp_url(name), sampling_callback=_decline, elicitation_callback=_decline,
                           list_roots_callback=_decline_roots) as session:
        via = await _session_transcript(session, name, work)
    assert via == direct


async def test_no_container_outlives_the_gateway_and_leftovers_are_swept(
        docker_engine: DockerEngine, tmp_path: Path) -> None:  # noqa: F811
    workdir = tmp_path / "gw"
    instance = gateway_instance(workdir / ".simgate")
    config = {"mcpServers": {name: {**fixture_server("hostile_server.py"), "sandbox": {
        "backend": "docker", "docker_host": docker_engine.host}} for name in ("one", "two")}}
    # A leftover of an earlier run of this gateway (killed before it could clean up), and another
    # gateway's container, which must be left alone.
    with running_gateway(config, workdir) as gateway:
        assert (await _call(gateway, "one", "allocate", {"megabytes": 1})).startswith("ALLOCATED")
        assert len(_containers(docker_engine, **{GATEWAY_LABEL: instance})) == 2
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
    leftovers = _containers(docker_engine, **{GATEWAY_LABEL: instance})
    assert len(leftovers) == 2  # SIGKILL leaves them: that is what the sweep is for
    with docker_engine.client() as client:
        other = client.containers.create(leftovers[0].image.id, ["/bin/sh", "-c", "exit 0"],
                                         labels={GATEWAY_LABEL: "another-gateway"})
    try:
        with running_gateway(config, workdir) as gateway:
            current = _containers(docker_engine, **{GATEWAY_LABEL: instance})
            assert {c.id for c in current}.isdisjoint({c.id for c in leftovers}) and len(current) == 2
            assert "removed 2 container(s) left by an earlier run" in gateway.log_text()
            assert gateway.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
        assert _containers(docker_engine, **{GATEWAY_LABEL: instance}) == []
        assert [c.id for c in _containers(docker_engine, **{GATEWAY_LABEL: "another-gateway"})] == [other.id]
    finally:
        other.remove(force=True)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found, then theirs), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


async def test_fewer_workers_sweep_the_containers_of_replicas_gone(
        docker_engine: DockerEngine, tmp_path: Path) -> None:  # noqa: F811
    # Three replicas, each with its own container, all killed at once (a host crash: nobody cleans up). The
    # gateway started again with two must not leave the third replica's container behind for ever.
    workdir = tmp_path / "gw"
    state = workdir / ".simgate"
    config = {"mcpServers": {"one": {**fixture_server("hostile_server.py"), "sandbox": {
        "backend": "docker", "docker_host": docker_engine.host}}}}
    every = {STATE_LABEL: gateway_instance(state)}
    with running_gateway(config, workdir, serve_args=("--workers", "3"), ready_timeout=180) as gateway:
        assert wait_until(lambda: len(_containers(docker_engine, **every)) == 3, timeout=120)
        for pid in [*reversed(_descendants(gateway.process.pid)), gateway.process.pid]:
            os.kill(pid, signal.SIGKILL)
        gateway.process.wait()
    leftovers = _containers(docker_engine, **every)
    assert sorted(c.labels[GATEWAY_LABEL] for c in leftovers) == sorted(gateway_instance(state, i) for i in range(3))
    with running_gateway(config, workdir, serve_args=("--workers", "2"), ready_timeout=180) as gateway:
        assert "removed 3 container(s) left by an earlier run" in gateway.log_text()
        assert wait_until(lambda: len(_containers(docker_engine, **every)) == 2, timeout=120)
        current = _containers(docker_engine, **every)
        assert {c.id for c in current}.isdisjoint({c.id for c in leftovers})
        assert sorted(c.labels[GATEWAY_LABEL] for c in current) == sorted(gateway_instance(state, i) for i in range(2))
        assert gateway.terminate() in (0, -signal.SIGTERM)
    assert _containers(docker_engine, **every) == []


def test_sandbox_check_reports_docker(docker_engine: DockerEngine) -> None:  # noqa: F811
    env = {**os.environ, "DOCKER_HOST": docker_engine.host}
    done = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "check"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, env=env)
    assert "docker: works" in done.stdout, done.stdout + done.stderr
    built = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "build-images"], capture_output=True,
                           text=True, cwd=REPO_ROOT, timeout=600, env=env)
    assert built.returncode == 0, built.stderr
    assert [line.split(":")[0] for line in built.stdout.splitlines()] == ["base", "python", "node"], built.stdout
    assert "images built" in subprocess.run([sys.executable, "-m", "simgate", "sandbox", "check"], capture_output=True,
                                            text=True, cwd=REPO_ROOT, timeout=120, env=env).stdout
    unreachable = {**env, "DOCKER_HOST": f"unix://{docker_engine.root}/nothing.sock"}
    done = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "check"], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120, env=unreachable)
    assert f"docker: no engine: the socket {docker_engine.root}/nothing.sock does not exist" in done.stdout, done.stdout


async def test_package_specs_install_on_the_host_and_run_offline_under_docker(
        docker_engine: DockerEngine, tmp_path: Path) -> None:  # noqa: F811
    """Install-then-run-offline and the docker backend together: a PyPI server that needs `mcp<2` and an
    npm server named the way client configs name them (uvx/npx), installed once on the host (with
    network), then run in hardened containers with no network, their tool directories read-only."""
    sandbox = {"backend": "docker", "docker_host": docker_engine.host}
    config = {"mcpServers": {
        "math": {"package": "pypi:mcp-server-math==0.1.0", "constraints": ["mcp<2"], "entry": "mcp-server-math",
                 "sandbox": sandbox},
        "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory@2026.8.31"],
                   "sandbox": sandbox},
    }}
    with running_gateway(config, tmp_path / "gw", ready_timeout=300) as gateway:
        async with mcp_session(gateway.mcp_url()) as session:
            total = await session.call_tool("math__sum", {"numbers": [1, 2, 3.5]})
            assert not total.is_error and '"result": "6.5"' in _text(total)
            graph = await session.call_tool("memory__read_graph", {})
            assert not graph.is_error and '"entities": []' in _text(graph)
            # Its default memory file lies in its own package directory: read-only in the container.
            write = await session.call_tool("memory__create_entities", {"entities": [
                {"name": "Alice", "entityType": "person", "observations": ["likes tea"]}]})
            assert write.is_error and ("EROFS" in _text(write) or "read-only" in _text(write)), _text(write)
        containers = _containers(docker_engine, **{GATEWAY_LABEL: gateway_instance(gateway.workdir / ".simgate")})
        assert {c.labels[SERVER_LABEL] for c in containers} == {"math", "memory"}
        for container in containers:
            assert container.attrs["HostConfig"]["NetworkMode"] == "none"


async def test_a_node_server_runs_behind_the_egress_forwarder(docker_engine: DockerEngine, tmp_path: Path  # noqa: F811
                                                              ) -> None:
    """With a network allowlist, a Node server's container starts the egress forwarder first, on the
    Python the Node image carries for it (tests/test_egress.py checks the allowlist itself)."""
    workdir = tmp_path / "gw"
    entry = rs.gateway_server("memory", workdir / ".simgate" / "servers" / "memory", ROOT)
    config = {"mcpServers": {"memory": {**entry, "sandbox": {
        "backend": "docker", "docker_host": docker_engine.host, "network": {"allow": ["127.0.0.1:9"]}}}}}
    with running_gateway(config, workdir, ready_timeout=180) as gateway:
        graph = await _call(gateway, "memory", "read_graph", {})
        assert '"entities"' in graph, graph
        [container] = _containers(docker_engine, **{GATEWAY_LABEL: gateway_instance(gateway.workdir / ".simgate")})
        command = container.attrs["Config"]["Cmd"]
        assert any(part.endswith("egress/forwarder.py") for part in command), command
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"


DEBIAN_PYTHON = "/usr/bin/python3.11"  # Debian's own interpreter: dist-packages, no site-packages


@pytest.mark.skipif(not Path(DEBIAN_PYTHON).exists(), reason=f"no distribution Python at {DEBIAN_PYTHON}")
def test_image_files_follow_a_distributions_python_layout() -> None:
    """Its package directories are the ones it names itself (dist-packages, some outside the standard
    library); none is made up, so listing and fingerprinting its files work."""
    from simgate.sandboxes.docker.host_runtime import python_files

    probe = "import json, site; print(json.dumps(site.getsitepackages()))"
    named = json.loads(subprocess.run([DEBIAN_PYTHON, "-I", "-S", "-c", probe], capture_output=True, text=True,
                                      check=True).stdout)
    files = python_files(DEBIAN_PYTHON)
    fingerprint = files.fingerprint()  # stats every entry: a made-up directory raised FileNotFoundError
    assert len(fingerprint) == len(files.entries)
    package_dirs = sorted(path for path in files.entries if path.endswith(("/site-packages", "/dist-packages")))
    assert package_dirs == sorted(path for path in named if Path(path).is_dir()) and package_dirs
    assert all(path.endswith("/dist-packages") for path in package_dirs)


@pytest.mark.skipif(not Path(DEBIAN_PYTHON).exists(), reason=f"no distribution Python at {DEBIAN_PYTHON}")
def test_build_images_with_a_distributions_python(docker_engine: DockerEngine) -> None:  # noqa: F811
    env = {**os.environ, "DOCKER_HOST": docker_engine.host}
    built = subprocess.run([sys.executable, "-m", "simgate", "sandbox", "build-images", "--python", DEBIAN_PYTHON,
                            "--node", ""], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600, env=env,
                           check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    python_line = next(line for line in built.stdout.splitlines() if line.startswith("python:"))
    tag = python_line.split(": ", 1)[1]
    assert tag.startswith("simgate-python:"), built.stdout
    with docker_engine.client() as client:  # the image's interpreter runs, with its standard library
        output = client.containers.run(tag, [DEBIAN_PYTHON, "-I", "-c", "import ssl, sqlite3, sys; print(sys.prefix)"],
                                       network_mode="none", remove=True)
    assert output.decode().strip() == "/usr"
