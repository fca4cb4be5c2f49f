"""Installs the real third-party MCP servers of the catalogue (`tests/real_servers.py`), plus Node 22, the MCP
conformance suite, the MCP Inspector and the clients the gateway is tested with (the TypeScript SDK, `mcp` 1.x),
so the tests can run them offline afterwards.

    python3 tests/install_servers.py install [ROOT] [--only NAME...] [--force] [--no-tools]

(`.ci/install-servers` calls it.) Stdlib only, so it runs on a bare machine before any project dependency
exists. The catalogue says what each server is and how it is started; this module only puts it on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the catalogue beside it
from real_servers import (  # noqa: E402
    MARKER,
    NODE22_PACKAGE,
    NODE22_VERSION,
    RESOLVE_BEFORE,
    SERVERS,
    _entry_argv,
    _node22_ok,
    _npm_tools_missing,
    _spec,
    _tool_specs,
    conformance_command,
    default_install_root,
    get,
    inspector_command,
    installed,
    mcp1_client_dir,
    mcp1_client_installed,
    mcp1_client_python,
    mcp1_client_spec,
    node22_path,
    sandbox_paths,
    server_command,
    server_dir,
    tools_installed,
)

# ---------------------------------------------------------------- install


@dataclass
class InstallResult:
    name: str
    status: Literal["installed", "cached", "skipped", "failed"]
    seconds: float
    detail: str = ""


def _run(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    proc = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-25:]
        raise RuntimeError(f"`{' '.join(argv)}` exited {proc.returncode}:\n" + "\n".join(tail))


def _uv() -> list[str]:
    """uv: ``$SIMGATE_UV`` (set by .ci/install-servers), on PATH, or ``python -m uv``."""
    exe = os.environ.get("SIMGATE_UV") or shutil.which("uv")
    if exe:
        return [exe]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    raise RuntimeError("uv not found: install it with `python3 -m pip install uv`")


def _python_version(exe: str) -> str | None:
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def find_python(version: str | None) -> str | None:
    """A local interpreter for ``version`` (major.minor), or the current one for None.

    Never downloads: uv's managed Pythons come from outside the reachable registries.
    pyenv shims that are not activated are skipped.
    """
    if version is None:
        return sys.executable
    candidates: list[str] = []
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}*/bin/python{version}"), reverse=True)
    for d in ("/usr/local/bin", "/usr/bin"):
        candidates.append(f"{d}/python{version}")
    which = shutil.which(f"python{version}")
    if which:
        candidates.append(which)
    for exe in candidates:
        if os.path.exists(exe) and _python_version(exe) == version:
            return exe
    try:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        out = subprocess.run(
            _uv() + ["python", "find", version], capture_output=True, text=True, env=env, check=False
        )
        exe = out.stdout.strip()
        if out.returncode == 0 and exe and _python_version(exe) == version:
            return exe
    except RuntimeError:
        pass
    return None


def _install_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("UV_OFFLINE", "npm_config_offline", "PIP_NO_INDEX", "VIRTUAL_ENV"):
        env.pop(k, None)
    env.update(
        {
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            # node-gyp builds (better-sqlite3 for dbhub: its prebuilt binary is not on a registry)
            "JOBS": env.get("JOBS", "max"),
        }
    )
    return env


def _npm_install(prefix: Path, packages: Sequence[str]) -> None:
    prefix.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "npm",
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--no-package-lock",
            f"--before={RESOLVE_BEFORE}",
            *packages,
        ],
        env=_install_env(),
        cwd=prefix,
    )


def _fresh_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


def _write_marker(d: Path, spec: dict[str, Any], **extra: Any) -> None:
    payload = {"spec": spec, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    tmp = d / (MARKER + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(d / MARKER)


def install_server(name: str, install_root: Path, force: bool = False) -> InstallResult:
    s = get(name)
    root = Path(install_root)
    t0 = time.monotonic()
    if not force and installed(name, root):
        return InstallResult(name, "cached", time.monotonic() - t0)
    d = server_dir(name, root)
    try:
        if s.registry == "pypi":
            python = find_python(s.python)
            if python is None:
                status: Literal["skipped", "failed"] = "skipped" if s.optional else "failed"
                return InstallResult(name, status, time.monotonic() - t0, f"no local Python {s.python}")
            _fresh_dir(d)
            env = _install_env()
            uv = _uv()
            _run(uv + ["venv", "--quiet", "--python", python, str(d)], env=env)
            _run(
                uv
                + [
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(d / "bin" / "python"),
                    "--exclude-newer",
                    RESOLVE_BEFORE,
                    f"{s.package}=={s.version}",
                    *s.constraints,
                ],
                env=env,
            )
            extra: dict[str, Any] = {"python": _python_version(str(d / "bin" / "python"))}
        else:
            _fresh_dir(d)
            _npm_install(d, [f"{s.package}@{s.version}"])
            extra = {}
        entry = _entry_argv(s, root)[-1]
        if not Path(entry).exists():
            raise RuntimeError(f"entry point {entry} missing after install")
        _write_marker(d, _spec(s), **extra)
    except Exception as exc:  # noqa: BLE001 - reported, and fatal for required servers
        return InstallResult(name, "failed", time.monotonic() - t0, str(exc))
    return InstallResult(name, "installed", time.monotonic() - t0)


def install_mcp1_client(install_root: Path, force: bool = False) -> InstallResult:
    """`mcp` 1.x (pinned) into its own venv, ``<root>/clients/mcp1``: the gateway's tests run a client on it."""
    root = Path(install_root)
    t0 = time.monotonic()
    if not force and mcp1_client_installed(root):
        return InstallResult("mcp1-client", "cached", time.monotonic() - t0)
    d = mcp1_client_dir(root)
    spec = mcp1_client_spec()
    try:
        _fresh_dir(d)
        env = _install_env()
        uv = _uv()
        _run(uv + ["venv", "--quiet", "--python", sys.executable, str(d)], env=env)
        _run(uv + ["pip", "install", "--quiet", "--python", str(mcp1_client_python(root)), "--exclude-newer",
                   RESOLVE_BEFORE, f"{spec['package']}=={spec['version']}"], env=env)
        _write_marker(d, spec)
    except Exception as exc:  # noqa: BLE001 - reported, and fatal
        return InstallResult("mcp1-client", "failed", time.monotonic() - t0, str(exc))
    return InstallResult("mcp1-client", "installed", time.monotonic() - t0)


def install_tools(install_root: Path, force: bool = False) -> list[InstallResult]:
    """Node 22 into ``<root>/node22``, conformance + inspector + the TypeScript SDK into ``<root>/npm-tools``,
    and the `mcp` 1.x client venv into ``<root>/clients/mcp1``."""
    root = Path(install_root)
    results: list[InstallResult] = []
    specs = _tool_specs()

    t0 = time.monotonic()
    d = root / "node22"
    if not force and _node22_ok(root):
        results.append(InstallResult("node22", "cached", time.monotonic() - t0))
    else:
        try:
            _fresh_dir(d)
            _npm_install(d, specs["node22"]["packages"])
            if not _node22_ok(root):
                raise RuntimeError(f"{node22_path(root)} does not report v{NODE22_VERSION}")
            _write_marker(d, specs["node22"])
            results.append(InstallResult("node22", "installed", time.monotonic() - t0))
        except Exception as exc:  # noqa: BLE001
            results.append(InstallResult("node22", "failed", time.monotonic() - t0, str(exc)))
    link = d / "bin" / "node"
    if node22_path(root).exists() and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            link.symlink_to(Path("..") / "node_modules" / NODE22_PACKAGE / "bin" / "node")

    # Additive (no wipe): the tools dir may be shared with other harnesses that installed into it.
    t0 = time.monotonic()
    d = root / "npm-tools"
    missing = _tool_specs()["npm-tools"]["packages"] if force else _npm_tools_missing(root)
    if not missing and tools_installed(root):
        results.append(InstallResult("npm-tools", "cached", time.monotonic() - t0))
    else:
        try:
            _npm_install(d, missing or specs["npm-tools"]["packages"])
            if _npm_tools_missing(root):
                raise RuntimeError(f"still missing after install: {_npm_tools_missing(root)}")
            for p in conformance_command(root)[1:] + inspector_command(root)[1:]:
                if not Path(p).exists():
                    raise RuntimeError(f"{p} missing after install")
            results.append(InstallResult("npm-tools", "installed", time.monotonic() - t0, " ".join(missing)))
        except Exception as exc:  # noqa: BLE001
            results.append(InstallResult("npm-tools", "failed", time.monotonic() - t0, str(exc)))
    results.append(install_mcp1_client(root, force=force))
    return results


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install(
    install_root: Path,
    names: Sequence[str] | None = None,
    force: bool = False,
    tools: bool = True,
    echo: bool = True,
) -> list[InstallResult]:
    """Install the catalog (or ``names``) and the npm tools; idempotent; one line per item."""
    root = Path(install_root)
    chosen = [get(n) for n in names] if names else list(SERVERS)
    results: list[InstallResult] = []
    with _lock(root):
        for s in chosen:
            r = install_server(s.name, root, force=force)
            results.append(r)
            if echo:
                _echo(r, f"{s.registry} {s.package}@{s.version}")
        if tools:
            for r in install_tools(root, force=force):
                results.append(r)
                if echo:
                    _echo(r, "tool")
    return results


def _echo(r: InstallResult, what: str) -> None:
    line = f"[install-servers] {r.name:<20} {r.status:<9} {r.seconds:6.1f}s  {what}"
    if r.detail:
        first, *rest = r.detail.splitlines() or [""]
        line += f"  ({first})"
        if r.status == "failed" and rest:
            line += "\n" + "\n".join("    " + x for x in rest)
    print(line, flush=True)


def _main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="install_servers", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="install the catalog into ROOT")
    p.add_argument("root", nargs="?", type=Path, default=None)
    p.add_argument("--only", nargs="*", default=None, help="server names (default: all)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-tools", action="store_true", help="skip node22/conformance/inspector/sdk and the mcp 1.x client")
    p = sub.add_parser("list", help="catalog and install state")
    p.add_argument("root", nargs="?", type=Path, default=None)
    p = sub.add_parser("command", help="print the offline launch command of NAME")
    p.add_argument("name")
    p.add_argument("root", nargs="?", type=Path, default=None)
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/WORKDIR"))
    a = ap.parse_args(argv)
    root = (a.root or default_install_root()).expanduser().absolute()

    if a.cmd == "install":
        t0 = time.monotonic()
        results = install(root, a.only, force=a.force, tools=not a.no_tools)
        failed = [r for r in results if r.status == "failed"]
        counts = {
            k: sum(r.status == k for r in results) for k in ("installed", "cached", "skipped", "failed")
        }
        print(
            f"[install-servers] root={root} {time.monotonic() - t0:.1f}s "
            + " ".join(f"{k}={v}" for k, v in counts.items()),
            flush=True,
        )
        return 1 if failed else 0
    if a.cmd == "list":
        for s in SERVERS:
            state = "installed" if installed(s.name, root) else "-"
            print(f"{s.name:<20} {s.registry:<4} {s.package + '@' + s.version:<58} {state}")
        print(
            f"{'npm-tools':<20} {'':<4} node22+conformance+inspector+sdk {'installed' if tools_installed(root) else '-'}"
        )
        print(f"{'mcp1-client':<20} {'':<4} mcp 1.x client venv {'installed' if mcp1_client_installed(root) else '-'}")
        return 0
    if a.cmd == "command":
        cmd, args, env = server_command(a.name, root, a.work_dir)
        print(
            json.dumps(
                {"command": cmd, "args": args, "env": env, "cwd": str(sandbox_paths(a.work_dir)["work"])},
                indent=1,
            )
        )
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(_main())
