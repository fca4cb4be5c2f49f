"""The installer's commands under bubblewrap, for a server that runs sandboxed.

An install runs third-party code (npm lifecycle scripts, sdist builds) with network. For a server
whose policy sandboxes it, that code gets the same jail as the server itself (`sandboxes.launch`)
except for the network, which an install needs: the system and the toolchains read-only, the
package managers' caches and settings, and writable only the install directory, the caches, the
server's own directories and a private /tmp. Nothing else of the host (other servers' state, the
vault, the gateway's files) is visible to it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pydantic import BaseModel

from simgate.sandboxes.launch import LaunchSpec, prepare_launch
from simgate.sandboxes.policy import SandboxPolicy
from simgate.sandboxes.workdir import ServerDirs


class InstallIsolation(BaseModel):
    """Where an isolated install runs: the server's directories, under bubblewrap with network."""

    dirs: ServerDirs
    server: str

    def launch(self, argv: list[str], env: dict[str, str], cwd: Path) -> LaunchSpec:
        # Temporary files go to the server's own tmp directory (mounted), not to wherever the host's point.
        env = {key: value for key, value in env.items() if key not in ("TMPDIR", "TMP", "TEMP")}
        # Writable: the install directory (its cwd; a cwd is read-only otherwise) and the caches.
        policy = SandboxPolicy(backend="bwrap", network="host", read_write=[str(cwd), *(str(p) for p in _caches(env))],
                               read_only=[str(p) for p in _settings(env)], env_allow=[])
        return prepare_launch(argv[0], argv[1:], env, str(cwd), self.dirs, policy, f"{self.server}-install")


def isolation_for(policy: SandboxPolicy | None, dirs: ServerDirs, server: str) -> InstallIsolation | None:
    """Isolate the install of a sandboxed server where bubblewrap is there (a docker-sandboxed server on a
    host without it installs as before: the install tools run on the host either way)."""
    if policy is None or policy.backend == "none" or shutil.which("bwrap") is None:
        return None
    return InstallIsolation(dirs=dirs, server=server)


_PATH_SETTINGS = (
    "UV_FIND_LINKS", "PIP_FIND_LINKS", "UV_INDEX", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_CONSTRAINT", "PIP_CONSTRAINT", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "npm_config_cafile", "NPM_CONFIG_CAFILE",
    "npm_config_userconfig", "NPM_CONFIG_USERCONFIG",
)


def _home(env: dict[str, str]) -> Path:
    return Path(env.get("HOME") or os.path.expanduser("~"))


def _caches(env: dict[str, str]) -> list[Path]:
    """uv's and npm's caches: shared by every install, as they are on the host."""
    home = _home(env)
    xdg_cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache")
    uv_cache = Path(env.get("UV_CACHE_DIR") or xdg_cache / "uv")
    npm_cache = Path(env.get("npm_config_cache") or env.get("NPM_CONFIG_CACHE") or home / ".npm")
    return [uv_cache.resolve(), npm_cache.resolve()]


def _settings(env: dict[str, str]) -> list[Path]:
    """The package managers' own settings (registries, credentials for private indexes), read-only."""
    home = _home(env)
    xdg_config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    candidates = [home / ".npmrc", xdg_config / "uv", xdg_config / "pip", home / ".pip", home / ".netrc"]
    for key in _PATH_SETTINGS:  # local wheelhouses, indexes and certificates the host's settings point at
        for value in re.split(r"[\s,]+", env.get(key, "")):
            value = value.removeprefix("file://")
            if value.startswith("/"):
                candidates.append(Path(value))
    resolv = Path("/etc/resolv.conf")
    if resolv.is_symlink():  # often into /run, which the sandbox does not have: name resolution needs it
        candidates.append(resolv.resolve().parent)
    return [path.resolve() for path in candidates if path.exists()]
