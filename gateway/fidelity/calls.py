"""Run a call-level fidelity evaluation: recorded live calls → simulated (few-shot and zero-shot) →
optional second live call → scores → `CallFidelityReport`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.fidelity.source import FidelityInputError, RecordedWorld, live_answer, load_world
from simgate.simulators.base import SimulationError, SimulationRequest, Simulator
from simgate.simulators.config import SimulatorConfig, build_simulator
from simgate.simulators.fidelity.embedding import load_embedder
from simgate.simulators.fidelity.report import SETTINGS, CallFidelityReport, SettingReport
from simgate.simulators.fidelity.scoring import CallScore, aggregate, group, score_call


@dataclass
class CallsOptions:
    store: Path
    simulator: SimulatorConfig
    server: str | None = None
    second_live: bool = False
    config: GatewayConfig | None = None
    settings: tuple[str, ...] = SETTINGS
    tools: frozenset[tuple[str, str]] | None = None  # only these (server, tool) are scored; all by default
    progress: Callable[[int, int], None] | None = None  # (calls scored, calls to score), after each one
    recordings: CacheStore | None = None  # where the recordings are when not in the diskcache at `store` (Redis)


def _request(world: RecordedWorld, index: int, setting: str, k: int,
             descriptions: dict[str, str | None]) -> SimulationRequest:
    """What the simulator is shown. Both settings show the session's earlier calls (the world's state) and
    never the recorded answer being scored: few-shot adds the k nearest recordings of the tool with other
    arguments, and its history leaves out earlier answers to the same call; zero-shot shows no recording of
    the tool at all (no examples, and the history keeps other tools' calls only)."""
    recording = world.recordings[index]
    few_shot = setting == "few_shot"
    return SimulationRequest(server=recording.server, server_description=descriptions.get(recording.server),
                             tool=world.spec(recording), arguments=recording.arguments,
                             examples=world.examples(recording, k) if few_shot else [],
                             history=world.history(recording, hold_out="call" if few_shot else "tool"))


async def _simulate(simulator: Simulator, request: SimulationRequest) -> tuple[dict[str, Any] | None, str | None,
                                                                                 float, str | None]:
    started = time.perf_counter()
    try:
        simulated = await simulator.simulate(request)
    except SimulationError as exc:
        return None, str(exc), (time.perf_counter() - started) * 1000, None
    return simulated.result, None, (time.perf_counter() - started) * 1000, simulated.model


async def evaluate_calls(options: CallsOptions) -> CallFidelityReport:
    world = load_world(options.store, options.server, store=options.recordings)
    # The world stays whole (examples and history are drawn from it); only the chosen tools are scored.
    scored = [index for index, r in enumerate(world.recordings)
              if options.tools is None or (r.server, r.tool) in options.tools]
    if not scored:
        known = sorted({f"{r.server}/{r.tool}" for r in world.recordings})
        raise FidelityInputError(f"nothing recorded for the chosen tool(s) in {options.store} "
                                 f"(recorded: {', '.join(known)})")
    descriptions: dict[str, str | None] = {}
    if options.config is not None:
        descriptions = {name: server.description for name, server in options.config.servers.items()}
    second: dict[int, dict[str, Any]] = {}
    if options.second_live:
        if options.config is None:
            raise FidelityInputError("--second-live needs --config FILE: the upstreams to call a second time")
        from simgate.gateway.fidelity.second_live import second_live_answers

        second = await second_live_answers(options.config, world.recordings)
    embed, embedding_note = load_embedder()
    simulator = build_simulator(options.simulator)
    model: str | None = None
    scores: list[CallScore] = []
    try:
        total = len(scored) * len(options.settings)
        for setting in options.settings:
            for index in scored:
                recording = world.recordings[index]
                request = _request(world, index, setting, options.simulator.examples, descriptions)
                result, problem, latency, used_model = await _simulate(simulator, request)
                model = model or used_model
                scores.append(score_call(
                    server=recording.server, tool=recording.tool, key=recording.key, setting=setting,
                    arguments=recording.arguments, live=live_answer(recording), simulated=result,
                    output_schema=request.tool.output_schema, second_live=second.get(index),
                    simulator_error=problem, latency_ms=round(latency, 3), embed=embed))
                if options.progress is not None:
                    options.progress(len(scores), total)
    finally:
        close = getattr(simulator, "aclose", None)
        if close is not None:
            await close()
    settings = {}
    for setting in options.settings:
        chosen = [s for s in scores if s.setting == setting]
        settings[setting] = SettingReport(overall=aggregate(chosen), per_server=group(chosen, lambda s: s.server),
                                          per_tool=group(chosen, lambda s: f"{s.server}/{s.tool}"))
    return CallFidelityReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), store=world.store,
        backend=options.simulator.backend, model=model, examples=options.simulator.examples,
        second_live=bool(second), embedding=embedding_note,
        servers=sorted({world.recordings[index].server for index in scored}),
        settings=settings, calls=scores)
