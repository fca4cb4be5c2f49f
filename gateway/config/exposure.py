"""What a sandboxed server must never see, from the gateway's config: the state directory (servers'
directories, tools, logs), the vault and its key, the client keys, the recording store, the
gateway's own log files, and other servers' writable directories.

`exposure_for` feeds the sandbox at launch (masks, refusals); `check_sandboxed` refuses a config
whose explicit paths (cwd, sandbox.read_only/read_write, absolute command and arguments) would show
them, before anything starts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from simgate.gateway.vault.store import KEY_FILE_NAME
from simgate.sandboxes.exposure import Exposure, ExposureRefused, Protected, Wanted, check
from simgate.sandboxes.workdir import directory_name

if TYPE_CHECKING:
    from simgate.gateway.config.models import GatewaySettings, ServerConfig

def gateway_files(settings: GatewaySettings) -> list[Protected]:
    vault = Path(settings.vault_file)
    key = Path(settings.vault_key_file) if settings.vault_key_file else vault.parent / KEY_FILE_NAME
    found = [
        (Path(settings.state_dir), "the gateway's state directory"),
        (vault, "the vault"), (vault.with_name(vault.name + ".lock"), "the vault's lock file"),
        (key, "the vault key file"), (key.with_name(key.name + ".new"), "the vault key file"),
        (Path(settings.keys_file), "the client keys file"),
        (Path(settings.cache_path), "the recording store"),
    ]
    return [Protected(path=path.resolve(), what=what) for path, what in found]


def _gateway_logs() -> list[Protected]:
    """The files the gateway's stdout and stderr go to (its log), when they are files."""
    logs = []
    for fd in (1, 2):
        try:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if stat.S_ISREG(os.stat(path).st_mode):
                logs.append(Protected(path=path.resolve(), what="the gateway's log"))
        except OSError:
            continue
    return logs


def explicit_paths(server: ServerConfig) -> list[Wanted]:
    """The paths a server's config names itself (what the config check can judge without the file system)."""
    wanted = []
    if server.cwd:
        wanted.append(Wanted(path=Path(server.cwd), read_only=True, why="its cwd"))
    for token, why in [(server.command or "", "its command"), *((arg, "its argument") for arg in server.args)]:
        if token.startswith("/"):
            wanted.append(Wanted(path=Path(token), read_only=True, why=why))
    if server.sandbox is not None:
        wanted += [Wanted(path=Path(p), read_only=True, why="sandbox.read_only path") for p in server.sandbox.read_only]
        wanted += [Wanted(path=Path(p), read_only=False, why="sandbox.read_write path")
                   for p in server.sandbox.read_write]
    return wanted


def exposure_for(settings: GatewaySettings, servers: Mapping[str, ServerConfig], name: str,
                 *, with_logs: bool = True) -> Exposure:
    own = {w.path.resolve() for w in explicit_paths(servers[name])}
    protected = gateway_files(settings) + (_gateway_logs() if with_logs else [])
    for other_name, other in servers.items():
        if other_name == name or other.sandbox is None:
            continue
        # Another server's declared writable data; a path this server names too is shared on purpose.
        protected += [Protected(path=Path(p).resolve(), what=f"server {other_name!r}'s read_write path")
                      for p in other.sandbox.read_write if Path(p).resolve() not in own]
    own_root = (Path(settings.state_dir) / "servers" / directory_name(name)).resolve()
    return Exposure(protected=protected, own_root=own_root)


def check_sandboxed(settings: GatewaySettings, servers: Mapping[str, ServerConfig]) -> None:
    """Raise `ValueError` naming the server, the path and what it would expose."""
    for name, server in servers.items():
        if server.sandbox is None or server.sandbox.backend == "none" or not server.active:
            continue
        if "SIMGATE_VAULT_KEY" in server.sandbox.env_allow:
            raise ValueError(f"server {name!r}: sandbox.env_allow may not pass on SIMGATE_VAULT_KEY (the vault key)")
        exposure = exposure_for(settings, servers, name, with_logs=False)
        for wanted in explicit_paths(server):
            try:
                check(wanted, exposure)
            except ExposureRefused as exc:
                raise ValueError(f"server {name!r}: {exc}") from None
