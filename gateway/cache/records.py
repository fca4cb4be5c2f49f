"""What a recording holds: the whole outcome of one live call, success or error."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from simgate.gateway.errors import CorruptRecording

logger = logging.getLogger("simgate.cache")


class RecordedError(BaseModel):
    code: int
    message: str
    data: Any = None


class Recording(BaseModel):
    """One recorded `tools/call`. Exactly one of `result` and `error` is set."""

    key: str
    server: str
    tool: str
    tool_fingerprint: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    error: RecordedError | None = None
    latency_ms: float
    recorded_at: str
    server_name: str | None = None
    server_version: str | None = None
    sequential: bool = Field(False, description="replayed in order per session (not by key alone)")
    episode: str = Field("", description="the session that recorded it (sequentially replayed tools)")
    position: int = Field(0, description="for sequentially replayed tools: the call's place in its episode")
    expires_at: float | None = Field(None, description="unix time after which the recording is stale")
    recorded_by: str | None = Field(None, description="the id of the client key that recorded it (none: no key)")
    task: str | None = Field(None, description="the task whose call recorded it (X-Simgate-Task): a simulator "
                             "evaluated on that task is not shown it (hold-out `task`)")

    @property
    def is_error(self) -> bool:
        return self.error is not None or bool(self.result and self.result.get("isError"))


def stored_recordings(key: str, raw: Any) -> list[Recording]:
    """A key's value as the store holds it (a list of JSON texts) read back; `CorruptRecording` naming the key
    and the first problem if it is anything else."""
    if not isinstance(raw, (list, tuple)):
        raise corrupt(key, f"not a list of recordings but a {type(raw).__name__}")
    try:
        return [Recording.model_validate_json(item) for item in raw]
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise corrupt(key, f"{where + ': ' if where else ''}{error['msg']}") from None


def corrupt(key: str, why: str) -> CorruptRecording:
    return CorruptRecording(f"the recording store's value at key {key} is corrupt ({why}); it was left as it is "
                            "(delete it from the page's Recordings view, or with `simgate cache prune --all`)",
                            {"key": key})


def corrupt_pruned(store: Any, key: str, expired_only: bool, server: str | None, tool: str | None) -> bool:
    """Whether `key` holds a corrupt value, which a prune passes over (its expiry and tool are unknown), or
    deletes when told to delete everything (`--all` with no filter). Either way the prune goes on."""
    try:
        store.get(key)
        return False
    except CorruptRecording as exc:
        if not expired_only and server is None and tool is None:
            store.delete(key)
        else:
            logger.warning(exc.message)
        return True
