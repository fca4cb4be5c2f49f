"""Install, then run offline: a server's package is installed once, with network, into its own tool
directory, and the installed entry point then runs without uvx/npx, offline and read-only."""

from sandboxes.install.installer import InstalledServer, InstallError, ensure_installed, installed, tools_dir
from sandboxes.install.isolation import InstallIsolation, isolation_for
from sandboxes.install.manifest import InstallManifest, ResolvedPackage
from sandboxes.install.spec import InstallRequest, PackageSpec, SpecError, install_request, parse_command

__all__ = [
    "InstallError", "InstallIsolation", "InstallManifest", "InstallRequest", "InstalledServer", "PackageSpec",
    "ResolvedPackage", "SpecError", "ensure_installed", "install_request", "installed", "isolation_for",
    "parse_command", "tools_dir",
]
