"""Load a config file (YAML or JSON) into `GatewayConfig`, with one clear message when it is wrong."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simgate import jsontext, yamltext
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file; raise `ConfigError` naming the file, server and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return parse_config(text, source=str(path), json_only=path.suffix.lower() == ".json")


def parse_config(text: str, *, source: str = "<config>", json_only: bool = False) -> GatewayConfig:
    raw = _parse_document(text, source, json_only)
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'mcpServers', got {type(raw).__name__}")
    # VS Code's mcp.json spells the section `servers`; accept it as it is.
    if "servers" in raw and "mcpServers" not in raw:
        raw = dict(raw)
        raw["mcpServers"] = raw.pop("servers")
    if "mcpServers" not in raw:
        raise ConfigError(f"{source}: no 'mcpServers' section")
    if not isinstance(raw["mcpServers"], dict):
        raise ConfigError(f"{source}: 'mcpServers' must be a mapping of server name to server, "
                          f"got {type(raw['mcpServers']).__name__}")
    raw["mcpServers"] = {
        name: _expand_env(server, source, f"server {name!r}") for name, server in raw["mcpServers"].items()
    }
    store = raw.get("gateway", {}).get("store") if isinstance(raw.get("gateway"), dict) else None
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        # A Redis password belongs in the environment, not in the config file.
        store["url"] = _expand_env(store["url"], source, "field 'gateway.store.url'")
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _parse_document(text: str, source: str, json_only: bool) -> Any:
    if json_only:
        try:
            return jsontext.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    try:
        return yamltext.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def _expand_env(value: Any, source: str, where: str) -> Any:
    """Expand `${VAR}` and `${VAR:-default}` in every string of a server entry."""
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{source}: {where}: environment variable {name} is not set (referenced as ${{{name}}})")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {key: _expand_env(item, source, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, source, where) for item in value]
    return value


def _describe(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc[:1] == ["mcpServers"] and len(loc) >= 2:
            where = f"server {loc[1]!r}"
            if len(loc) > 2:
                where += f", field '{'.'.join(str(part) for part in loc[2:])}'"
        elif loc:
            where = f"field '{'.'.join(str(part) for part in loc)}'"
        else:
            where = "config"
        lines.append(f"{source}: {where}: {message}")
    return "\n".join(lines)
