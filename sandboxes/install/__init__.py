"""Install, then run offline: a server's package is installed once, with network, into its own tool
directory, and the installed entry point then runs without uvx/npx, offline and read-only."""

from simgate.sandboxes.install.installer import InstalledServer, InstallError, ensure_installed, installed, tools_dir
from simgate.sandboxes.install.isolation import InstallIsolation, isolation_for
from simgate.sandboxes.install.manifest import InstallManifest, ResolvedPackage
from simgate.sandboxes.install.spec import InstallRequest, PackageSpec, SpecError, install_request, parse_command

__all__ = [
    "InstallError", "InstallIsolation", "InstallManifest", "InstallRequest", "InstalledServer", "PackageSpec",
    "ResolvedPackage", "SpecError", "ensure_installed", "install_request", "installed", "isolation_for",
    "parse_command", "tools_dir",
]
