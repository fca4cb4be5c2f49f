"""The record an install leaves in its directory: the spec, what was resolved, and how to run it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simgate.files import atomic_write
from simgate.sandboxes.install.spec import PackageSpec

MANIFEST = "simgate-install.json"


class ResolvedPackage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str


class InstallManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    server: str
    key: str
    spec: PackageSpec
    installer: str = Field(description="the installer and its version, e.g. 'uv 0.9.1'")
    installed_at: datetime
    seconds: float = Field(description="how long the install took")
    python: str | None = Field(None, description="the environment's Python version (pypi)")
    runner: Literal["python", "node", "exec"] = Field(description="how the entry is started")
    entry: str = Field(description="the entry point, relative to the install directory")
    packages: list[ResolvedPackage] = Field(description="every installed distribution/package, resolved")

    def version_of(self, name: str) -> str | None:
        wanted = name.lower().replace("_", "-")
        for package in self.packages:
            if package.name.lower().replace("_", "-") == wanted:
                return package.version
        return None


def write_manifest(directory: Path, manifest: InstallManifest) -> None:
    atomic_write(directory / MANIFEST, manifest.model_dump_json(indent=1, by_alias=True).encode() + b"\n")


def read_manifest(directory: Path) -> InstallManifest | None:
    """The manifest of a finished install, or None when there is none (or it is unreadable)."""
    try:
        return InstallManifest.model_validate_json((directory / MANIFEST).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None
