"""What to install for a server: a package spec, parsed from `package:` or from a `uvx`/`npx` command.

`pypi:NAME==VER` (any PEP 508 requirement) and `npm:NAME@VER`; `uvx [--from X] [--with Y] NAME[@VER] args…`
(or `uvx NAME==VER`, any requirement, as uv takes it)
and `npx [-y] [-p PKG] PKG[@VER] args…` as found in `mcpServers` client configs. The spec is what the
install is keyed on: the same spec reuses the install, a changed one reinstalls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field

from simgate.errors import SimgateError

Registry = Literal["pypi", "npm"]

# npm's own package-name rule (validate-npm-package-name), without the legacy upper-case names.
_NPM_NAME = re.compile(r"^(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*$")
_NPM_VERSION = re.compile(r"^[A-Za-z0-9.^~<>=*|+ -]+$")
_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# What `uvx --python` takes: a version or range (3.12, >=3.12), an implementation with one (cpython@3.12,
# pypy3.10, python3.12), or an interpreter's absolute path (uv cannot download one offline; a local one works).
_PYTHON = re.compile(r"^(?:(?:[<>=~!]=?)?\d+(?:\.\d+){0,2}(?:,(?:[<>=~!]=?)\d+(?:\.\d+){0,2})*"
                     r"|(?:c?python|pypy|graalpy)[@-]?\d+(?:\.\d+){0,2}|/[^\0]+)$")

# Options of uvx / npx that do not change what is installed, and so are dropped.
_UVX_FLAGS = {"-q", "--quiet", "--isolated", "--no-cache", "-n", "--refresh", "--offline", "--no-progress"}
_NPX_FLAGS = {"-y", "--yes", "-q", "--quiet", "--silent", "--no-install"}


class SpecError(SimgateError, ValueError):
    """A package spec or a uvx/npx command that cannot be installed; the message says what is wrong."""


class PackageSpec(BaseModel):
    """One server's install: what to install, from where, and which entry point runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: Registry
    name: str = Field(description="the distribution (pypi) or package (npm) name")
    requirement: str = Field(description="pypi: a PEP 508 requirement; npm: NAME@RANGE or NAME")
    with_: tuple[str, ...] = Field((), alias="with", description="extra requirements installed beside it (pypi), "
                                   "e.g. constraints such as 'mcp<2'")
    entry: str | None = Field(None, description="console script (pypi) or bin name (npm); default: the package's own")
    python: str | None = Field(None, description="Python for the environment (pypi): a version, range or "
                              "interpreter path as `uvx --python` takes; default: the gateway's")

    def key(self) -> str:
        """A short hash of everything that decides what gets installed."""
        canonical = json.dumps(self.model_dump(by_alias=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def describe(self) -> str:
        extra = "".join(f" --with {item!r}" for item in self.with_)
        entry = f" (entry {self.entry})" if self.entry else ""
        python = f" (python {self.python})" if self.python else ""
        return f"{self.registry}:{self.requirement}{extra}{entry}{python}"


class InstallRequest(BaseModel):
    """A spec plus the arguments the installed entry point is run with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: PackageSpec
    args: list[str] = Field(default_factory=list)


def parse_package(package: str, constraints: list[str] | None = None, entry: str | None = None) -> PackageSpec:
    """`pypi:NAME==VER` or `npm:NAME@VER`, plus extra requirements (pypi) and an entry point."""
    registry, sep, rest = package.partition(":")
    if not sep or registry not in ("pypi", "npm") or not rest.strip():
        raise SpecError(f"package must look like 'pypi:NAME==VERSION' or 'npm:NAME@VERSION', got {package!r}")
    constraints = list(constraints or [])
    if registry == "pypi":
        return _pypi(rest.strip(), constraints, entry, None)
    if constraints:
        raise SpecError("constraints apply to pypi packages only (an npm package resolves its own dependencies)")
    return _npm(rest.strip(), entry)


def parse_command(command: str, args: list[str]) -> InstallRequest | None:
    """The install behind a `uvx …` / `uv tool run …` / `npx …` command, or None for any other command."""
    program = os.path.basename(command)
    if program == "uvx":
        return _parse_uvx(list(args))
    if program == "uv" and args[:2] == ["tool", "run"]:
        return _parse_uvx(list(args[2:]))
    if program == "npx":
        return _parse_npx(list(args))
    return None


def _parse_uvx(args: list[str]) -> InstallRequest:
    source: str | None = None
    extras: list[str] = []
    python: str | None = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        name, eq, inline = option.partition("=")
        if option in _UVX_FLAGS:
            continue
        if name in ("--from", "--with", "--python", "-p"):
            if not eq:
                if not args:
                    raise SpecError(f"uvx: {option} needs a value")
                inline = args.pop(0)
            if name == "--from":
                source = inline
            elif name == "--with":
                extras += [item.strip() for item in inline.split(",") if item.strip()]
            else:
                python = inline
            continue
        raise SpecError(f"uvx option {option!r} is not supported by simgate's installer; "
                        "use 'package: pypi:NAME==VERSION' with 'constraints' instead")
    if not args:
        raise SpecError("uvx: no command to run")
    target = args.pop(0)
    if source is None:
        requirement, entry = _uvx_target(target)
    else:
        requirement = source
        entry = _entry_name(target)
    return InstallRequest(spec=_pypi(requirement, extras, entry, python), args=args)


def _uvx_target(target: str) -> tuple[str, str]:
    """The requirement and entry point of `uvx TARGET`: as uv reads it, `NAME[EXTRAS]@VER` (`@latest`: the newest)
    or any PEP 508 requirement (`NAME==VER`, `NAME>=1,<2`, `NAME[EXTRAS]`); the entry point is NAME."""
    head, at, version = target.partition("@")
    if at:
        try:
            named = Requirement(head)
        except InvalidRequirement:
            named = None
        if named is not None and not named.specifier and named.marker is None and named.url is None:
            if not version.strip():
                raise SpecError(f"uvx: no version after '@' in {target!r}")
            requirement = head if version == "latest" else f"{head}=={version}"
            return requirement, _entry_name(named.name)
    try:
        parsed = Requirement(target)
    except InvalidRequirement as exc:
        raise SpecError(f"not a valid Python requirement {target!r}: {exc}") from None
    return target, _entry_name(parsed.name)


def _parse_npx(args: list[str]) -> InstallRequest:
    packages: list[str] = []
    while args and args[0].startswith("-"):
        option = args.pop(0)
        name, eq, inline = option.partition("=")
        if option == "--":
            break
        if option in _NPX_FLAGS:
            continue
        if name in ("-p", "--package"):
            if not eq:
                if not args:
                    raise SpecError(f"npx: {option} needs a value")
                inline = args.pop(0)
            packages.append(inline)
            continue
        raise SpecError(f"npx option {option!r} is not supported by simgate's installer; "
                        "use 'package: npm:NAME@VERSION' instead")
    if not args:
        raise SpecError("npx: no package to run")
    target = args.pop(0)
    if len(packages) > 1:
        raise SpecError("npx: one --package only (simgate installs one package per server)")
    if packages:  # `npx -p PKG BIN args…`
        return InstallRequest(spec=_npm(packages[0], _entry_name(target)), args=args)
    return InstallRequest(spec=_npm(target, None), args=args)


def _pypi(requirement: str, extras: list[str], entry: str | None, python: str | None) -> PackageSpec:
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement as exc:
        raise SpecError(f"not a valid Python requirement {requirement!r}: {exc}") from None
    if parsed.url:
        raise SpecError(f"{requirement!r}: direct URLs are not installed; name a PyPI release")
    for extra in extras:
        try:
            Requirement(extra)
        except InvalidRequirement as exc:
            raise SpecError(f"not a valid Python requirement in constraints {extra!r}: {exc}") from None
    if python is not None and not _PYTHON.match(python):
        raise SpecError(f"python must be a version such as '3.12' or '>=3.12', an implementation such as "
                        f"'cpython@3.12', or an interpreter's absolute path, got {python!r}")
    return PackageSpec(registry="pypi", name=parsed.name, requirement=str(parsed), **{"with": tuple(extras)},
                       entry=_entry_name(entry) if entry else None, python=python)


def _npm(target: str, entry: str | None) -> PackageSpec:
    # The version separator is the last '@' that is not the scope's leading one.
    at = target.rfind("@")
    name, version = (target[:at], target[at + 1:]) if at > 0 else (target, "")
    if not _NPM_NAME.match(name):
        raise SpecError(f"not a valid npm package name {name!r} (in {target!r})")
    if at > 0 and (not version or not _NPM_VERSION.match(version)):
        raise SpecError(f"not a valid npm version {version!r} (in {target!r})")
    return PackageSpec(registry="npm", name=name, requirement=f"{name}@{version}" if version else name,
                       entry=_entry_name(entry) if entry else None)


def _entry_name(entry: str) -> str:
    if not _ENTRY.match(entry):
        raise SpecError(f"not a valid entry point name {entry!r}")
    return entry


def install_request(*, command: str | None, args: list[str], package: str | None, constraints: list[str],
                    entry: str | None) -> InstallRequest | None:
    """What a server config asks to install: `package` (+ constraints, entry), or its uvx/npx command; else None."""
    if package is not None:
        return InstallRequest(spec=parse_package(package, constraints, entry), args=list(args))
    if constraints or entry:
        raise SpecError("'constraints' and 'entry' need 'package'")
    if command is None:
        return None
    return parse_command(command, args)
