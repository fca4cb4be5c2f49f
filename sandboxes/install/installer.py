"""Install a server's package once, with network, into its own tool directory; reuse it after that.

Layout, per server (`<state>/servers/<server>/tools/`)::

    <key>/                      one finished install per spec hash (the entry point runs from here, read-only)
    <key>/simgate-install.json  its manifest, written before the directory gets its name
    .partial-<key>-*/           an install in progress; renamed to <key> on success, removed on failure

and `<state>/servers/<server>/.tools.lock` serializes installs of the server (gateway, `simgate sandbox install`).

Python: `uv venv --relocatable` + `uv pip install` (relocatable, so the finished directory may be renamed).
Node: `npm install --prefix`. Nothing here runs at server start but a manifest read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
from pydantic import BaseModel

from simgate.errors import SimgateError
from simgate.sandboxes.install.isolation import InstallIsolation
from simgate.sandboxes.install.manifest import InstallManifest, ResolvedPackage, read_manifest, write_manifest
from simgate.sandboxes.install.spec import PackageSpec
from simgate.sandboxes.policy import DEFAULT_ENV_ALLOW

logger = logging.getLogger("simgate.install")

_TAIL_LINES = 15
_CREDENTIALS_IN_URL = re.compile(r"(://)[^/@\s]+@")
# The installer runs third-party code (npm lifecycle scripts, sdist builds): it gets what a package manager
# needs — locale, proxies, certificates, registries, caches, its own settings — and nothing else of the
# gateway's environment (no vault key, no tokens of other tools).
_INSTALL_ENV_KEEP = (*DEFAULT_ENV_ALLOW, "HOME", "USER", "LOGNAME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
                     "ALL_PROXY", "all_proxy")
_INSTALL_ENV_PREFIXES = ("UV_", "PIP_", "npm_config_", "NPM_CONFIG_")
# ...except what would make it work offline or into another environment.
_INSTALL_ENV_DROP = ("UV_OFFLINE", "npm_config_offline", "NPM_CONFIG_OFFLINE", "PIP_NO_INDEX", "UV_PROJECT_ENVIRONMENT")
_INSTALL_ENV = {
    "UV_PYTHON_DOWNLOADS": "never",  # uv's managed Pythons come from outside the package registries
    "UV_NO_PROGRESS": "1",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
}
# Run inside the new environment: its Python version and the console scripts of the distribution.
_PROBE = (
    "import importlib.metadata as m, json, platform, sys\n"
    "d = m.distribution(sys.argv[1])\n"
    "print(json.dumps({'python': platform.python_version(), "
    "'scripts': sorted(e.name for e in d.entry_points if e.group == 'console_scripts')}))\n"
)


class InstallError(SimgateError):
    """An install that failed; the message names the server, the spec and the installer's last lines."""

    def __init__(self, server: str, spec: PackageSpec, reason: str, output: str = "") -> None:
        self.server = server
        self.spec = spec
        self.reason = reason
        self.output = output
        message = f"server {server!r}: cannot install {spec.describe()}: {reason}"
        if output:
            message += "\n" + output
        super().__init__(message)


class InstalledServer(BaseModel):
    directory: Path
    manifest: InstallManifest
    reused: bool

    def bin_dirs(self) -> list[Path]:
        """The install's own executables, put first on the server's PATH (as uvx and npx do): a server
        that runs a tool it depends on finds it."""
        found = [self.directory / "bin", self.directory / "node_modules" / ".bin"]
        return [path for path in found if path.is_dir()]

    def argv(self) -> list[str]:
        """The command that runs the entry point directly: no uvx/npx, no network."""
        entry = str(self.directory / self.manifest.entry)
        if self.manifest.runner == "python":
            # Through the environment's own interpreter: the script's shebang is not trusted to be valid.
            return [str(self.directory / "bin" / "python"), entry]
        if self.manifest.runner == "node":
            return [_node(), entry]
        return [entry]


def tools_dir(server_root: Path) -> Path:
    """Where a server's installs live, beside its home/tmp/work directories."""
    return server_root / "tools"


def installed(tools: Path, spec: PackageSpec) -> InstalledServer | None:
    """The finished install of this spec, if there is one (no lock, no process: a start-time check)."""
    directory = tools / spec.key()
    manifest = read_manifest(directory)
    if manifest is None or manifest.spec != spec:
        return None
    return InstalledServer(directory=directory, manifest=manifest, reused=True)


async def ensure_installed(tools: Path, server: str, spec: PackageSpec, *, timeout: float = 900,
                           isolation: InstallIsolation | None = None,
                           env: dict[str, str] | None = None) -> InstalledServer:
    """Reuse this spec's install, or install it now (once, even with several callers at the same time);
    under `isolation` (bubblewrap, see `isolation_for`) when the server runs sandboxed. `env`: the
    server's own variables (no secrets), which a package's install may need (e.g. to skip a download)."""
    found = installed(tools, spec)
    if found is not None:
        return found
    tools.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(tools.with_name(".tools.lock"), "a+b") as lock:  # noqa: ASYNC230 - an empty file, opened once
        await anyio.to_thread.run_sync(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
        found = installed(tools, spec)  # another process may have finished it while we waited
        if found is not None:
            return found
        # Installed code is not secret, and a docker sandbox runs the server as another user (nobody):
        # the tool directories must be readable and searchable by everyone (mkdtemp makes them 0700).
        tools.mkdir(exist_ok=True)
        tools.chmod(0o755)
        _sweep(tools, keep=spec.key())
        try:
            return await _install(tools, server, spec, timeout, isolation, env or {})
        finally:
            with contextlib.suppress(OSError):
                tools.rmdir()  # only when empty: a failed first install leaves no directory at all


async def _install(tools: Path, server: str, spec: PackageSpec, timeout: float,
                   isolation: InstallIsolation | None, env: dict[str, str]) -> InstalledServer:
    key = spec.key()
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{key}-", dir=tools))
    started = time.monotonic()
    logger.info("installing %s for server %s", spec.describe(), server)
    try:
        with anyio.fail_after(timeout):
            run = _Runner(server, spec, partial, isolation, env)
            manifest = await (_install_pypi(run) if spec.registry == "pypi" else _install_npm(run))
        manifest.seconds = round(time.monotonic() - started, 3)
        write_manifest(partial, manifest)
        final = tools / key
        partial.chmod(0o755)
        if final.exists():  # an unreadable leftover of an older format: replaced
            shutil.rmtree(final)
        os.rename(partial, final)
    except TimeoutError:
        shutil.rmtree(partial, ignore_errors=True)
        raise InstallError(server, spec, f"timed out after {timeout:g}s") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _sweep(tools, keep=key)
    logger.info("installed %s for server %s in %.1fs", spec.describe(), server, manifest.seconds)
    return InstalledServer(directory=final, manifest=manifest, reused=False)


async def _install_pypi(run: _Runner) -> InstallManifest:
    server, spec, directory = run.server, run.spec, run.directory
    uv = find_uv()
    if uv is None:
        raise InstallError(server, spec, "uv is not installed (pip install uv)")
    python = spec.python or sys.executable
    await run([uv, "venv", "--quiet", "--relocatable", "--python", python, str(directory)])
    interpreter = str(directory / "bin" / "python")
    # Bytecode now: at run time the directory is read-only, and every start would compile every import again.
    await run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", interpreter, spec.requirement,
               *spec.with_])
    listed = await run([uv, "pip", "list", "--python", interpreter, "--format", "json"])
    packages = [ResolvedPackage(name=item["name"], version=item["version"]) for item in json.loads(listed)]
    probe = json.loads(await run([interpreter, "-I", "-c", _PROBE, spec.name]))
    entry = _python_entry(directory, server, spec, probe["scripts"])
    version = (await run([uv, "--version"])).split()[1]
    return InstallManifest(server=server, key=spec.key(), spec=spec, installer=f"uv {version}",
                           installed_at=datetime.now(UTC), seconds=0.0, python=probe["python"], runner="python",
                           entry=f"bin/{entry}", packages=packages)


def _python_entry(directory: Path, server: str, spec: PackageSpec, scripts: list[str]) -> str:
    """The named command (uvx's `--from X CMD`: any executable of the environment), else the distribution's
    console script named like it, else its only one."""
    if spec.entry is not None:
        if (directory / "bin" / spec.entry).is_file():
            return spec.entry
        raise InstallError(server, spec, f"no command {spec.entry!r} in the installed environment; "
                           f"{spec.name} provides {', '.join(scripts) or 'no console script'}")
    if spec.name in scripts:
        return spec.name
    if len(scripts) == 1:
        return scripts[0]
    provides = f"several console scripts ({', '.join(scripts)})" if scripts else "no console script"
    raise InstallError(server, spec, f"{spec.name} provides {provides}; name one with 'entry'")


async def _install_npm(run: _Runner) -> InstallManifest:
    server, spec, directory = run.server, run.spec, run.directory
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError(server, spec, "npm is not installed (Node.js and npm are needed for npm packages)")
    # The package-lock is kept: with the manifest it records the whole resolved tree.
    await run([npm, "install", "--prefix", str(directory), "--no-audit", "--no-fund", "--loglevel=error",
               spec.requirement])
    lock = json.loads((directory / "package-lock.json").read_text())
    packages = [ResolvedPackage(name=path.rsplit("node_modules/", 1)[1], version=meta["version"])
                for path, meta in sorted(lock.get("packages", {}).items())
                if path.startswith("node_modules/") and "version" in meta]
    script = _npm_bin(directory, server, spec)
    version = (await run([npm, "--version"])).strip()
    return InstallManifest(server=server, key=spec.key(), spec=spec, installer=f"npm {version}",
                           installed_at=datetime.now(UTC), seconds=0.0, runner=_node_runner(script),
                           entry=str(script.relative_to(directory.resolve())), packages=packages)


def _npm_bin(directory: Path, server: str, spec: PackageSpec) -> Path:
    package_dir = directory / "node_modules" / spec.name
    meta = json.loads((package_dir / "package.json").read_text())
    bins = meta.get("bin")
    if isinstance(bins, str):
        bins = {spec.name.rsplit("/", 1)[-1]: bins}
    if not isinstance(bins, dict) or not bins:
        raise InstallError(server, spec, f"{spec.name} declares no bin to run")
    if spec.entry is not None:
        if spec.entry not in bins:
            raise InstallError(server, spec, f"{spec.name} has no bin {spec.entry!r}; it has {', '.join(bins)}")
        chosen = bins[spec.entry]
    elif len(bins) == 1:
        chosen = next(iter(bins.values()))
    elif (base := spec.name.rsplit("/", 1)[-1]) in bins:  # npx's rule: the bin named like the package
        chosen = bins[base]
    else:
        raise InstallError(server, spec, f"{spec.name} has several bins ({', '.join(bins)}); name one with 'entry'")
    script = (package_dir / chosen).resolve()
    if not script.is_file() or directory.resolve() not in script.parents:
        raise InstallError(server, spec, f"the bin {chosen!r} of {spec.name} is missing after install")
    return script


def _node_runner(script: Path) -> str:
    """JavaScript runs under node; anything else (a Go binary shipped in a package) runs itself."""
    if script.suffix in (".js", ".mjs", ".cjs"):
        return "node"
    with open(script, "rb") as handle:
        first = handle.readline(256)
    return "node" if first.startswith(b"#!") and b"node" in first else "exec"


class _Runner:
    """Runs one install's commands in its directory, with the installer's environment, isolated if asked."""

    def __init__(self, server: str, spec: PackageSpec, directory: Path, isolation: InstallIsolation | None,
                 env: dict[str, str] | None = None) -> None:
        self.server, self.spec, self.directory = server, spec, directory
        self._isolation = isolation
        self._env = _installer_env() | (env or {})

    async def __call__(self, argv: list[str]) -> str:
        command, env, cwd = argv, self._env, str(self.directory)
        if self._isolation is not None:
            launch = self._isolation.launch(argv, self._env, self.directory)
            command, env, cwd = [launch.command, *launch.args], launch.env, launch.cwd
        done = await anyio.run_process(command, env=env, cwd=cwd, check=False)
        if done.returncode != 0:
            output = (done.stderr or done.stdout).decode(errors="replace")
            tail = "\n".join(output.strip().splitlines()[-_TAIL_LINES:])
            program = os.path.basename(argv[0]) + " " + " ".join(argv[1:3])
            raise InstallError(self.server, self.spec, f"`{program}` exited with {done.returncode}",
                               _CREDENTIALS_IN_URL.sub(r"\1***@", tail))
        return done.stdout.decode(errors="replace")


def _installer_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if (key in _INSTALL_ENV_KEEP or key.startswith(_INSTALL_ENV_PREFIXES)) and key not in _INSTALL_ENV_DROP}
    return env | _INSTALL_ENV


def _sweep(tools: Path, keep: str) -> None:
    """Remove installs of older specs and partial installs a crash left (called under the lock)."""
    for child in tools.iterdir():
        if child.name != keep:
            shutil.rmtree(child, ignore_errors=True)


def find_uv() -> str | None:
    """uv: `$SIMGATE_UV`, the `uv` Python package beside this interpreter, or on PATH."""
    if explicit := os.environ.get("SIMGATE_UV"):
        return explicit
    try:
        import uv  # the PyPI package ships the binary

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is not installed: npm packages need Node.js to run")
    return node
