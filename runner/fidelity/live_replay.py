"""Replay the tool calls a non-live run made against live: would the real servers have accepted
them? One live gateway session per trajectory, the calls in their order (state builds up as it
did in the run). A call is still valid when live answers it without an error (neither `isError`
nor a JSON-RPC error)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from simgate.runner.mcp_tools import gateway_session
from simgate.runner.trajectory import Trajectory


class ReplayedCall(BaseModel):
    id: str
    mode: str
    repeat: int
    step: int
    call_id: str
    name: str
    arguments: dict[str, Any]
    run_is_error: bool
    live_is_error: bool
    live_text: str


class LiveReplay(BaseModel):
    calls: int
    valid: int
    share_valid: float | None
    per_call: list[ReplayedCall]


async def replay_against_live(trajectories: list[Trajectory], gateway: str, *,
                              session_prefix: str = "live-replay/", timeout: float = 120.0) -> LiveReplay:
    replayed: list[ReplayedCall] = []
    for trajectory in trajectories:
        if trajectory.mode == "live" or not trajectory.tool_events:
            continue
        # the run's own tools only: a name the gateway does not offer answers as an error
        async with gateway_session(gateway, mode="live", session=f"{session_prefix}{trajectory.session}",
                                   timeout=timeout) as session:
            for event in trajectory.tool_events:
                outcome = await session.call(event.name, event.arguments, call_id=event.call_id, step=event.step)
                replayed.append(ReplayedCall(
                    id=trajectory.id, mode=trajectory.mode, repeat=trajectory.repeat, step=event.step,
                    call_id=event.call_id, name=event.name, arguments=event.arguments, run_is_error=event.is_error,
                    live_is_error=outcome.event.is_error, live_text=outcome.text[:2000]))
    valid = sum(1 for call in replayed if not call.live_is_error)
    return LiveReplay(calls=len(replayed), valid=valid, share_valid=valid / len(replayed) if replayed else None,
                      per_call=replayed)


def replays_by_trajectory(replay: LiveReplay) -> dict[str, list[dict[str, Any]]]:
    """The replays in the shape the trajectory report reads: `mode:id#repeat` -> [{call_id, is_error}]."""
    by_trajectory: dict[str, list[dict[str, Any]]] = {}
    for call in replay.per_call:
        by_trajectory.setdefault(f"{call.mode}:{call.id}#{call.repeat}", []).append(
            {"call_id": call.call_id, "is_error": call.live_is_error})
    return by_trajectory
