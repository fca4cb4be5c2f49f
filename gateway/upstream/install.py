"""Which command starts a stdio upstream: its installed entry point when the config names a package
(or a uvx/npx command), installing it first if this spec was never installed; else its own command."""

from __future__ import annotations

import logging
import os

from simgate.gateway.config.models import ServerConfig
from simgate.sandboxes.install import ensure_installed, install_request, isolation_for, tools_dir
from simgate.sandboxes.workdir import ServerDirs

logger = logging.getLogger("simgate.upstream")


async def server_command(name: str, config: ServerConfig,
                         dirs: ServerDirs) -> tuple[str, list[str], dict[str, str]]:
    """(command, args, environment to add) to launch; raises `InstallError` (naming server, spec and the
    installer's output). An installed package's own bin directories go first on its PATH."""
    request = None
    if config.install == "auto":
        request = install_request(command=config.command, args=config.args, package=config.package,
                                  constraints=config.constraints, entry=config.entry)
    if request is None:
        assert config.command is not None  # the config model requires one or the other
        return config.command, list(config.args), {}
    install_env = {key: value for key, value in config.env.items() if key not in config.secret_env}
    installed = await ensure_installed(tools_dir(dirs.root), name, request.spec,
                                       isolation=isolation_for(config.sandbox, dirs, name), env=install_env)
    if not installed.reused:
        versions = ", ".join(f"{p.name}=={p.version}" for p in installed.manifest.packages
                             if p.name.lower() in (request.spec.name.lower(), "mcp", "@modelcontextprotocol/sdk"))
        logger.info("upstream %s: installed %s in %.1fs (%s)", name, request.spec.describe(),
                    installed.manifest.seconds, versions)
    argv = installed.argv()
    path = config.env.get("PATH") or os.environ.get("PATH") or os.defpath
    extra = {"PATH": os.pathsep.join([*map(str, installed.bin_dirs()), path])} if installed.bin_dirs() else {}
    return argv[0], argv[1:] + request.args, extra
