"""Executor: answer from a simulator of `simulators/`, given the tool, recorded examples and the session so far.

Credentials never reach a simulator: it sees the tool's description and recorded (redacted) answers only.

What it is shown: the k recorded calls of the tool nearest to the arguments, and the earlier calls of
the client's own session (its connection's, never another session's). When the simulator is evaluated,
a hold-out (`X-Simgate-Holdout` or `_meta["simgate/holdout"]`) keeps the answer it is judged against out
of both: `call` leaves out every recording of the call's own cache key (and any answer to the same call
in the session's history that the simulator did not itself produce); `task` also leaves out every
recording made for the call's task (`X-Simgate-Task`).
"""

from __future__ import annotations

import time

from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.execution import Source
from simgate.gateway.errors import InvalidHoldout, NoSimulator, SimulationFailed
from simgate.gateway.pipeline.call import CallResult, ToolCall
from simgate.gateway.sessions import Sessions
from simgate.gateway.upstream.pool import UpstreamPool
from simgate.simulators.base import Example, SimulationError, SimulationRequest, Simulator, ToolSpec
from simgate.simulators.similarity import nearest


class SimulatedExecutor:
    def __init__(self, simulator: Simulator | None, store: CacheStore, sessions: Sessions, pool: UpstreamPool,
                 examples: int = 5) -> None:
        self._simulator = simulator
        self._store = store
        self._sessions = sessions
        self._pool = pool
        self._examples = examples

    @property
    def backend(self) -> str:
        return self._simulator.backend if self._simulator is not None else "none"

    async def request_for(self, call: ToolCall, *, hold_out: str | None = None) -> SimulationRequest:
        held_keys = {key for key in (hold_out, call.cache_key if call.holdout else None) if key is not None}
        held_task = None
        if call.holdout == "task":
            if not call.task:
                raise InvalidHoldout("hold-out 'task' needs the call's task (the X-Simgate-Task header or "
                                     "_meta[\"simgate/task\"])",
                                     data={"tool": call.exposed_name})
            held_task = call.task
        recorded: list[Example] = []
        for key in self._store.tool_keys(call.server, call.tool):
            if key in held_keys:
                continue
            for recording in self._store.get(key):
                if held_task is not None and recording.task == held_task:
                    continue
                error = recording.error.model_dump() if recording.error else None
                recorded.append(Example(arguments=recording.arguments, result=recording.result, error=error))
        chosen = [recorded[i] for i in nearest(call.arguments, [e.arguments for e in recorded], self._examples)]
        history = [Example.model_validate(entry) for entry in await self._sessions.history(call.state_key)
                   if not (entry.get("key") in held_keys and entry.get("source") != "simulator")]
        if call.holdout or hold_out:
            call.provenance["holdout"] = call.holdout or "call"
        server = self._pool.upstreams.get(call.server)
        description = server.config.description if server is not None else None
        return SimulationRequest(server=call.server, server_description=description,
                                 tool=ToolSpec.from_mcp(call.tool_definition), arguments=call.arguments,
                                 examples=chosen, history=history, sample=call.session_id)

    async def __call__(self, call: ToolCall) -> CallResult:
        return await self.answer(call)

    async def answer(self, call: ToolCall, *, hold_out: str | None = None) -> CallResult:
        """Simulate; `hold_out` names a cache key whose recordings the simulator must not see."""
        if self._simulator is None:
            raise NoSimulator(f"tool {call.exposed_name!r} is in a simulated mode but no simulator is configured "
                              "(set gateway.simulator in the config)", data={"tool": call.exposed_name})
        started = time.perf_counter()
        try:
            simulated = await self._simulator.simulate(await self.request_for(call, hold_out=hold_out))
        except SimulationError as exc:
            raise SimulationFailed(f"the {self._simulator.backend} simulator could not answer "
                                   f"{call.exposed_name!r}: {exc}", data={"tool": call.exposed_name}) from None
        if simulated.prompt_version is not None:
            call.provenance["prompt_version"] = simulated.prompt_version
        call.provenance.update(source=Source.SIMULATOR, simulator=simulated.backend, model=simulated.model,
                               latency_ms=round((time.perf_counter() - started) * 1000, 3))
        return simulated.result
