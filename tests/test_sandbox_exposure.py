"""A sandboxed server never sees the gateway's own files, under bubblewrap and under Docker alike.

The hostile fixture server lies in the gateway's working directory, beside the state directory
(`.simgate/`: vault, vault key, client keys, the recording store, the other servers' directories)
and the gateway's log. It tries to read them, to list them, and (with its `cwd` set to the gateway's
directory) to rename the client keys file away, which would switch client authentication off. The
state files are made readable by others first, as a gateway with a lax umask (or, under Docker, a
non-root gateway whose uid the container shares) would leave them: only the sandbox stands between
the server and them. A config whose mounts would show them is refused, at load or at launch; the
server's environment is not stored by the engine; a disk cap ends writes with ENOSPC.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import mcp_types as types
import pytest
from docker_engine import DockerEngine
from harness import FIXTURES, REPO_ROOT, GatewayProcess, fixture_server, mcp_session, running_gateway, wait_until

from simgate.gateway.config import load_config
from simgate.gateway.errors import ConfigError
from simgate.sandboxes.diskcap import loop_mount_possible
from simgate.sandboxes.docker.container import GATEWAY_LABEL, SERVER_LABEL, gateway_instance

pytestmark = pytest.mark.anyio

OTHER_SECRET = "other-servers-secret-5d1e"
MINE_SECRET = "my-own-vault-secret-8b2c"
PLANTED = "planted-env-token-3f9a"
OTHER_FILE = "other-servers-private-data-77c1"
RECORDED = "an-answer-in-the-store-41aa"
BACKENDS = ["bwrap", "docker"]


@dataclass
class Setup:
    gateway: GatewayProcess
    key: str
    backend: str
    engine: DockerEngine | None

    @property
    def state(self) -> Path:
        return self.gateway.workdir / ".simgate"


def _cli(workdir: Path, *args: str, stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k != "SIMGATE_VAULT_KEY"} | {"PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "simgate", *args], cwd=workdir, input=stdin, text=True,
                          capture_output=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _sandbox(request: pytest.FixtureRequest, backend: str) -> tuple[dict[str, Any], DockerEngine | None]:
    if backend == "bwrap":
        if shutil.which("bwrap") is None:
            pytest.skip("bubblewrap is not installed on this machine")
        return {"backend": "bwrap"}, None
    engine: DockerEngine = request.getfixturevalue("docker_engine")
    return {"backend": "docker", "docker_host": engine.host}, engine


def _hostile(workdir: Path, sandbox: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The hostile server, run from a copy in the gateway's working directory."""
    script = workdir / "hostile_server.py"
    if not script.exists():
        shutil.copy(FIXTURES / "hostile_server.py", script)
    return {"command": sys.executable, "args": [str(script)], "sandbox": sandbox, "call_timeout": 30, **extra}


def _loosen(state: Path) -> None:
    """Let anyone read what the gateway keeps (but the vault's key, which the vault refuses to use then)."""
    for path in [state, *state.rglob("*")]:
        if path.is_symlink() or path.name.startswith("vault.key"):
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module", params=BACKENDS)
def exposed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    sandbox, engine = _sandbox(request, request.param)
    work = tmp_path_factory.mktemp(f"exposure-{request.param}")
    work.chmod(0o755)  # as a gateway's directory is: the container's user (nobody) may enter it
    config = {"gateway": {"record": "all"}, "mcpServers": {
        "hostile": _hostile(work, sandbox, env={"PLANTED_TOKEN": PLANTED, "MINE": "vault:mine"}),
        "cwdy": _hostile(work, sandbox, cwd=str(work)),
        "other": {**fixture_server("misbehaving_server.py"), "env": {"API_TOKEN": "vault:other_token"}},
    }}
    (work / "simgate.json").write_text(json.dumps(config))
    _cli(work, "vault", "set", "other_token", stdin=OTHER_SECRET + "\n")
    _cli(work, "vault", "set", "mine", stdin=MINE_SECRET + "\n")
    key = _cli(work, "keys", "create", "--config", "simgate.json", "tester", "--servers", "*")
    other_work = work / ".simgate" / "servers" / "other" / "work"
    other_work.mkdir(parents=True)
    (other_work / "private.txt").write_text(OTHER_FILE)
    with running_gateway(config, work, ready_timeout=180) as gateway:
        setup = Setup(gateway=gateway, key=key, backend=request.param, engine=engine)
        assert anyio.run(_call, setup, "other", "echo", {"text": RECORDED}) == RECORDED  # now in the store
        _loosen(setup.state)
        yield setup


async def _call(setup: Setup, server: str, tool: str, arguments: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {setup.key}"} if setup.key else None
    async with mcp_session(setup.gateway.mcp_url(server), headers=headers) as session:
        with anyio.fail_after(60):
            result = await session.call_tool(tool, arguments)
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def _gateway_files(setup: Setup) -> list[Path]:
    state = setup.state
    store = sorted(p for p in (state / "cache").rglob("*") if p.is_file())
    assert store, "the recording store holds nothing to steal"
    return [state / "vault.key", state / "vault.json", state / "keys.json", *store,
            state / "servers" / "other" / "work" / "private.txt", state / "servers" / "other" / "stderr.log",
            setup.gateway.workdir / "gateway.log"]


def _secrets(setup: Setup) -> list[str]:
    """What must never come back: the key and vault contents, the other server's data, the log, the store."""
    state = setup.state
    found = [(state / "vault.key").read_text().strip(), json.loads((state / "vault.json").read_text())["secrets"]
             ["other_token"]["ciphertext"], json.loads((state / "keys.json").read_text())["keys"][0]["sha256"],
             OTHER_FILE, RECORDED, "gateway started"]
    return [text for text in found if text]


@pytest.mark.parametrize("server", ["hostile", "cwdy"])
async def test_the_gateway_files_are_out_of_sight(exposed: Setup, server: str) -> None:
    secrets = _secrets(exposed)
    for path in _gateway_files(exposed):
        answer = await _call(exposed, server, "read_file", {"path": str(path)})
        # Absent (its code mounted alone), or masked: nothing, or /dev/null's nothing.
        assert answer.startswith("DENIED") or answer == "READ:", (path, answer[:300])
        assert not any(secret in answer for secret in secrets), (path, answer[:300])
    for directory in (exposed.state, exposed.state / "cache", exposed.state / "servers"):
        listed = await _call(exposed, server, "list_dir", {"path": str(directory)})
        # At most the way to its own directories is there.
        assert listed.startswith("DENIED") or listed in ("LISTED:", "LISTED:servers", f"LISTED:{server}"), listed
    own = exposed.state / "servers" / server / "work" / "note.txt"
    wrote = await _call(exposed, server, "write_file", {"path": str(own), "text": "mine"})
    assert wrote == "WROTE"
    assert own.read_text() == "mine"


async def test_a_cwd_outside_its_own_directories_is_read_only(exposed: Setup) -> None:
    keys = exposed.state / "keys.json"
    for source in (".simgate/keys.json", str(keys)):
        answer = await _call(exposed, "cwdy", "rename", {"source": source, "target": "keys.gone"})
        assert answer.startswith("DENIED"), answer
    for target in ("planted.txt", ".simgate/planted.txt", str(exposed.state / "servers" / "other" / "x")):
        assert (await _call(exposed, "cwdy", "write_file", {"path": target, "text": "pwned"})).startswith("DENIED")
    assert await _call(exposed, "cwdy", "rename", {"source": "simgate.json", "target": "gone.json"}) != "RENAMED"
    assert keys.exists() and not (exposed.gateway.workdir / "keys.gone").exists()
    assert not (exposed.gateway.workdir / "planted.txt").exists()
    # Client authentication is still on.
    response = httpx.post(exposed.gateway.mcp_url("other"), json={}, timeout=10, trust_env=False)
    assert response.status_code == 401


async def test_its_environment_is_not_stored_by_the_engine(exposed: Setup) -> None:
    environ = (await _call(exposed, "hostile", "read_file", {"path": "/proc/self/environ"})).split("\0")
    assert f"PLANTED_TOKEN={PLANTED}" in environ and any(item.startswith("MINE=") for item in environ)
    if exposed.engine is None:
        return
    instance = gateway_instance(exposed.state)
    with exposed.engine.client() as client:
        [container] = client.containers.list(filters={"label": [f"{GATEWAY_LABEL}={instance}",
                                                                 f"{SERVER_LABEL}=hostile"]})
        inspected = json.dumps(client.api.inspect_container(container.id))
    stored = (exposed.engine.root / "data" / "containers" / container.id / "config.v2.json").read_text()
    for text in (inspected, stored):
        assert PLANTED not in text and MINE_SECRET not in text and "PLANTED_TOKEN" not in text


@pytest.mark.parametrize("field, value, message", [
    ("cwd", ".simgate", "its cwd .simgate is the gateway's state directory"),
    ("cwd", ".simgate/servers/other/work", "its cwd .simgate/servers/other/work is inside the gateway's state"),
    ("read_only", [".simgate/cache"], "sandbox.read_only path .simgate/cache is the recording store"),
    ("read_write", ["."], "sandbox.read_write path . would be writable and holds the gateway's state directory"),
    ("args", "STATE/evil.py", "its argument STATE/evil.py is inside the gateway's state directory"),
    ("env_allow", ["PATH", "SIMGATE_VAULT_KEY"], "may not pass on SIMGATE_VAULT_KEY"),
])
def test_a_config_that_would_expose_them_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str,
                                                    value: Any, message: str) -> None:
    state = str(tmp_path / ".simgate")
    server: dict[str, Any] = {"command": sys.executable, "args": [str(FIXTURES / "hostile_server.py")],
                              "sandbox": {"backend": "bwrap"}}
    if field == "args":
        server["args"] = [value.replace("STATE", state)]
    elif field == "cwd":
        server["cwd"] = value
    else:
        server["sandbox"][field] = value
    config = {"mcpServers": {"hostile": server, "other": fixture_server("misbehaving_server.py")}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)  # relative paths are the gateway's working directory's
    with pytest.raises(ConfigError) as refused:
        load_config("simgate.json")
    assert "server 'hostile'" in str(refused.value) and message.replace("STATE", state) in str(refused.value)


def test_the_gateway_does_not_start_with_such_a_config(tmp_path: Path) -> None:
    config = {"mcpServers": {"hostile": {**fixture_server("hostile_server.py"), "cwd": ".simgate/servers/other/work",
                                         "sandbox": {"backend": "docker"}}}}
    (tmp_path / "simgate.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, "-m", "simgate", "serve", "simgate.json"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("simgate serve: simgate.json: config: server 'hostile': its cwd "
                                  ".simgate/servers/other/work is inside the gateway's state directory"), done.stderr


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_mount_found_at_launch_that_would_expose_them_is_refused(
        request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    """A script whose interpreter lies in another server's directory: only the launch reads its shebang."""
    sandbox, _ = _sandbox(request, backend)
    tools = tmp_path / ".simgate" / "servers" / "other" / "tools"
    (tools / "bin").mkdir(parents=True)
    (tools / "bin" / "python").symlink_to(os.path.realpath(sys.executable))
    script = tmp_path / "sneaky"
    script.write_text(f"#!{tools}/bin/python\n" + (FIXTURES / "hostile_server.py").read_text())
    script.chmod(0o755)
    config = {"mcpServers": {"sneaky": {"command": str(script), "sandbox": sandbox, "max_restart_backoff": 1},
                             "other": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path, wait_ready=False) as gateway:
        expected = f"its command's code {tools} is inside the gateway's state directory"
        assert wait_until(lambda: expected in gateway.log_text(), timeout=120), gateway.log_text()[-3000:]
        assert wait_until(lambda: "upstream other ready" in gateway.log_text(), timeout=60)
        setup = Setup(gateway=gateway, key="", backend=backend, engine=None)
        assert await _call(setup, "other", "echo", {"text": "still here"}) == "still here"  # the gateway keeps going


@pytest.mark.parametrize("backend", BACKENDS)
async def test_writes_past_the_disk_cap_fail_with_enospc(request: pytest.FixtureRequest, backend: str,
                                                          tmp_path: Path) -> None:
    sandbox, _ = _sandbox(request, backend)
    config = {"mcpServers": {"capped": _hostile(tmp_path, {**sandbox, "limits": {"disk_mb": 4}}),
                             "other": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path, ready_timeout=180) as gateway:
        setup = Setup(gateway=gateway, key="", backend=backend, engine=None)
        for directory in ("$TMPDIR", "$HOME", "/tmp"):
            answer = await _call(setup, "capped", "fill", {"directory": directory, "megabytes": 8})
            assert answer.startswith("DENIED after") and "errno 28" in answer, (directory, answer)
            assert int(answer.split()[2]) <= 4
        if loop_mount_possible():  # its work dir (its cwd) is an ext4 image of the cap's size
            answer = await _call(setup, "capped", "fill", {"directory": ".", "megabytes": 8})
            assert answer.startswith("DENIED after") and "errno 28" in answer, answer
            assert int(answer.split()[2]) <= 4
        # Space freed, the server and the gateway keep going.
        assert await _call(setup, "capped", "fill", {"directory": "$TMPDIR", "megabytes": 2}) == "FILLED 2 MB"
        assert await _call(setup, "other", "echo", {"text": "still here"}) == "still here"
    # The image is unmounted with the server, and what it held stays in the server's own directory.
    assert not any(Path(line.split()[4]).is_relative_to(tmp_path) for line in
                   Path("/proc/self/mountinfo").read_text().splitlines())


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_read_write_path_past_the_disk_cap_stops_the_server(request: pytest.FixtureRequest, backend: str,
                                                                    tmp_path: Path) -> None:
    """A `read_write` path is the user's own directory: no image over it; its size is watched."""
    sandbox, _ = _sandbox(request, backend)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # docker runs it as nobody
    config = {"mcpServers": {"capped": _hostile(tmp_path, {**sandbox, "read_write": [str(shared)],
                                                            "limits": {"disk_mb": 4}}, max_restart_backoff=60),
                             "other": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path, ready_timeout=180) as gateway:
        setup = Setup(gateway=gateway, key="", backend=backend, engine=None)
        assert await _call(setup, "capped", "fill", {"directory": str(shared), "megabytes": 2}) == "FILLED 2 MB"
        (shared / "kept.bin").write_bytes(os.urandom(6 * 1024 * 1024))  # what the server would have left there

        def capped() -> dict[str, Any]:
            servers = httpx.get(gateway.url + "/admin/servers", timeout=5).json()["servers"]
            return next(server for server in servers if server["name"] == "capped")

        assert wait_until(lambda: "limits.disk_mb=4 MB" in (capped().get("last_error") or ""), timeout=30), capped()
        assert str(shared) in capped()["last_error"]
        assert await _call(setup, "other", "echo", {"text": "still here"}) == "still here"
