"""What `simgate onboard` is given, turned into candidate server entries.

A SPEC is `pypi:NAME[==V]`, `npm:NAME[@V]`, a `uvx …`/`npx …` command line, an `mcpServers` JSON
file (Claude, Cursor; VS Code's `servers`), or an MCP registry `server.json` (its `packages`).
Each candidate keeps the spec it came from: a re-run skips candidates already onboarded from the
same spec.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from simgate import jsontext, yamltext
from simgate.runner.errors import RunnerError

_UNSAFE_NAME = re.compile(r"[^a-z0-9_-]+")


class OnboardSpecError(RunnerError):
    """A SPEC that cannot be read; the message names it and says what is wrong."""


class EnvVarNeed(BaseModel):
    """An environment variable a server's metadata says it needs (registry `environmentVariables`)."""

    name: str
    required: bool = False
    secret: bool = False
    description: str | None = None


class Candidate(BaseModel):
    """One server to onboard: a config entry (the `mcpServers` shape) and where it came from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    entry: dict[str, Any]
    spec: str = Field(description="the SPEC (and, for a file, the server's key in it) this came from")
    description: str | None = None
    declared_env: list[EnvVarNeed] = Field(default_factory=list)

    def spec_hash(self) -> str:
        """Decides whether an earlier onboarding of this server still applies."""
        canonical = json.dumps({"spec": self.spec, "entry": self.entry}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def server_name(package: str) -> str:
    """A short config name from a package name: its last path segment, lower case, safe characters."""
    base = package.rsplit("/", 1)[-1]
    base = re.split(r"[=<>~!@\[ ;]", base, maxsplit=1)[0] or package
    return _UNSAFE_NAME.sub("-", base.lower()).strip("-_") or "server"


def candidates_from(spec: str) -> list[Candidate]:
    """The candidates one SPEC names; raises `OnboardSpecError` with the reason."""
    text = spec.strip()
    if not text:
        raise OnboardSpecError("an empty SPEC")
    if text.startswith(("pypi:", "npm:")):
        registry, _, name = text.partition(":")
        if not name.strip():
            raise OnboardSpecError(f"{spec!r}: no package name after '{registry}:'")
        return [Candidate(name=server_name(name), entry={"package": text}, spec=text)]
    words = _split(text)
    if words and words[0] in ("uvx", "npx"):
        package = _package_of_command(words)
        return [Candidate(name=server_name(package), entry={"command": words[0], "args": words[1:]}, spec=text)]
    path = Path(text)
    if path.is_file():
        return _from_file(path)
    if path.exists():
        raise OnboardSpecError(f"{spec!r} is not a file")
    raise OnboardSpecError(f"{spec!r}: expected pypi:NAME[==V], npm:NAME[@V], a uvx/npx command line, an "
                           "mcpServers JSON file or a registry server.json")


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise OnboardSpecError(f"{text!r}: {exc}") from None


def _package_of_command(words: list[str]) -> str:
    """The package a uvx/npx command line runs (for its name only; the installer parses it for real)."""
    rest = words[1:]
    for flag in ("--from", "-p", "--package"):
        if flag in rest and rest.index(flag) + 1 < len(rest):
            return rest[rest.index(flag) + 1]
    positional = [word for word in rest if not word.startswith("-")]
    if not positional:
        raise OnboardSpecError(f"{' '.join(words)!r}: no package to run")
    return positional[0]


def _from_file(path: Path) -> list[Candidate]:
    try:
        text = path.read_text()
        data = jsontext.loads(text) if path.suffix == ".json" else yamltext.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise OnboardSpecError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise OnboardSpecError(f"{path}: expected a JSON object")
    if isinstance(data.get("packages"), list) or isinstance(data.get("remotes"), list):
        return _from_registry(path, data)
    servers = data.get("mcpServers", data.get("servers"))
    if not isinstance(servers, dict) or not servers:
        raise OnboardSpecError(f"{path}: no 'mcpServers' (or 'servers') object, and no registry 'packages'")
    found = []
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            raise OnboardSpecError(f"{path}: server {name!r} is not an object")
        found.append(Candidate(name=str(name), entry=dict(entry), spec=f"{path.resolve()}#{name}",
                               description=entry.get("description")))
    return found


def _from_registry(path: Path, data: dict[str, Any]) -> list[Candidate]:
    """An MCP registry `server.json`: one candidate per stdio package of a registry simgate installs from."""
    base = server_name(str(data.get("name") or path.stem))
    found: list[Candidate] = []
    skipped: list[str] = []
    for index, package in enumerate(data.get("packages") or []):
        if not isinstance(package, dict):
            continue
        registry = str(package.get("registryType") or package.get("registry_type") or
                       package.get("registry_name") or "").lower()
        identifier = package.get("identifier") or package.get("name")
        version = package.get("version") or data.get("version")
        transport = (package.get("transport") or {}).get("type", "stdio")
        if registry not in ("pypi", "npm") or not identifier or transport != "stdio":
            skipped.append(f"{registry or '?'}:{identifier or '?'} ({transport})")
            continue
        pin = f"=={version}" if registry == "pypi" else f"@{version}"
        spec_text = f"{registry}:{identifier}{pin if version else ''}"
        entry: dict[str, Any] = {"package": spec_text, "args": _registry_arguments(package)}
        needs = [EnvVarNeed(name=str(var["name"]), required=bool(var.get("isRequired", var.get("is_required"))),
                            secret=bool(var.get("isSecret", var.get("is_secret"))), description=var.get("description"))
                 for var in package.get("environmentVariables") or package.get("environment_variables") or []
                 if isinstance(var, dict) and var.get("name")]
        name = base if index == 0 else f"{base}-{registry}"
        found.append(Candidate(name=name, entry=entry, spec=f"{path.resolve()}#{spec_text}",
                               description=data.get("description"), declared_env=needs))
    if not found:
        why = f" (only {', '.join(skipped)})" if skipped else ""
        raise OnboardSpecError(f"{path}: no stdio pypi or npm package to install{why}")
    return found


def _registry_arguments(package: dict[str, Any]) -> list[str]:
    """The package's fixed arguments (those with a value or default); arguments left to the user are not guessed."""
    argv: list[str] = []
    for argument in package.get("packageArguments") or package.get("package_arguments") or []:
        if not isinstance(argument, dict):
            continue
        value = argument.get("value", argument.get("default"))
        if value is None:
            continue
        if argument.get("type") == "named" and argument.get("name"):
            argv += [str(argument["name"]), str(value)]
        else:
            argv.append(str(value))
    return argv
