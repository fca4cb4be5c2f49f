"""What the parent tells each replica, and which replica a session id belongs to."""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simgate.gateway.errors import ConfigError

PLAN_ENV = "SIMGATE_REPLICA_PLAN"
REPLICA_HEADER = "x-simgate-replica"  # on every answer: the replica that made it
VIA_HEADER = "x-simgate-via"  # on an answer passed on from its owner: the replica the request came in to
# Set on a request one replica passes to another: the receiver never passes it on again.
FORWARDED_HEADER = "x-simgate-forwarded-by"

# The SDK's session ids are uuid4 hex; a replica's are prefixed with its index (see `sessions`).
_TAGGED = re.compile(r"r(\d{1,4})-[0-9a-f]{32}")


class ReplicaPlan(BaseModel):
    """One replica's place among its siblings. `private_ports[i]` (on 127.0.0.1) is how the siblings reach
    replica i; the parent made and keeps every listener (see `sockets`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    private_ports: list[int] = Field(min_length=1)
    public_fd: int = Field(ge=0, description="this replica's listener on the public address, inherited")
    private_fd: int = Field(ge=0, description="this replica's private listener, inherited")
    parent_pid: int
    restarted: bool = Field(False, description="started again after it died: it takes run-time state from a sibling")
    token: str = Field(min_length=32, description="proves a request comes from a sibling (the parent makes it)")

    @property
    def count(self) -> int:
        return len(self.private_ports)

    def session_prefix(self) -> str:
        return f"r{self.index}-"

    def owner_of(self, session_id: str) -> int | None:
        """The replica that holds `session_id`; None when no replica's tag is on it (then whoever got the
        request answers it: the SDK says 404 to an id it does not know)."""
        match = _TAGGED.fullmatch(session_id)
        if match is None:
            return None
        owner = int(match.group(1))
        return owner if owner < self.count else None


def plan_from_environment() -> ReplicaPlan | None:
    raw = os.environ.get(PLAN_ENV)
    if raw is None:
        return None
    try:
        return ReplicaPlan.model_validate_json(raw)
    except ValidationError as exc:
        raise ConfigError(f"{PLAN_ENV}: not a replica plan: {exc.errors(include_url=False)[0]['msg']}") from None
