"""Drift: what changed in onboarded servers since they were onboarded (`simgate onboard --check`).

Servers are re-probed from the config's own entries and compared with the reports of the earlier
onboarding: tools that appeared or went away, tools whose schemas changed (their fingerprint), tools
that stopped (or started) working, and servers whose status changed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, Field

from simgate.runner.onboard.observations import ServerReport, ToolReport

# Keys `simgate onboard` adds to an entry, not part of how the server is started.
_ONBOARD_KEYS = {"onboarding", "tool_settings", "disabled", "enabled", "description"}


class ServerDrift(BaseModel):
    server: str
    status: tuple[str, str] | None = Field(None, description="(before, now) when the server's status changed")
    new_tools: list[str] = Field(default_factory=list)
    removed_tools: list[str] = Field(default_factory=list)
    changed_schemas: list[str] = Field(default_factory=list)
    stopped_working: list[str] = Field(default_factory=list)
    started_working: list[str] = Field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return bool(self.status or self.new_tools or self.removed_tools or self.changed_schemas
                    or self.stopped_working or self.started_working)


def probe_entry_of(entry: dict[str, Any]) -> dict[str, Any]:
    """An onboarded config entry as it was given (without what onboarding added)."""
    return {key: value for key, value in entry.items() if key not in _ONBOARD_KEYS}


def tool_fingerprint(tool: ToolReport) -> str:
    canonical = json.dumps({"input": tool.input_schema, "description": tool.description}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _works(tool: ToolReport) -> bool:
    return tool.classification is not None and tool.classification.status.value == "works"


def server_drift(before: ServerReport, now: ServerReport) -> ServerDrift:
    old = {tool.name: tool for tool in before.tools}
    new = {tool.name: tool for tool in now.tools}
    both = sorted(set(old) & set(new))
    return ServerDrift(
        server=now.name,
        status=(before.status.value, now.status.value) if before.status != now.status else None,
        new_tools=sorted(set(new) - set(old)),
        removed_tools=sorted(set(old) - set(new)),
        changed_schemas=[name for name in both if tool_fingerprint(old[name]) != tool_fingerprint(new[name])],
        stopped_working=[name for name in both if _works(old[name]) and not _works(new[name])],
        started_working=[name for name in both if not _works(old[name]) and _works(new[name])],
    )
