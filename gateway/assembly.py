"""How a gateway's call path is assembled: the executor of every mode, and the stages in front of them.

The one place that says which stages run, in which order and why, and which executor answers which
mode. Adding a mode: a member of `gateway.config.execution.Mode` and its entry in `build_executors`
(`RouteByMode` refuses to start without one). Adding a stage: a class with `async __call__(call,
call_next)` and its line in `build_pipeline`, placed by the reasons written there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.execution import Mode, Source
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.executors.gated import GatedSimulator, gated_simulated_mode
from simgate.gateway.executors.hybrid import HybridExecutor
from simgate.gateway.executors.live import LiveExecutor
from simgate.gateway.executors.record import RecordingLive
from simgate.gateway.executors.replay import ReplayExecutor
from simgate.gateway.executors.shadow import ShadowExecutor
from simgate.gateway.executors.simulated import SimulatedExecutor
from simgate.gateway.fidelity.evidence import EvidenceBook, ShadowEstimate
from simgate.gateway.pipeline.authorize import Authorize
from simgate.gateway.pipeline.call import CallNext, Pipeline
from simgate.gateway.pipeline.faults import InjectFaults
from simgate.gateway.pipeline.keying import AssignCacheKey
from simgate.gateway.pipeline.modes import ChooseMode, ModeResolver, RouteByMode
from simgate.gateway.pipeline.observe import ObserveCalls
from simgate.gateway.pipeline.provenance import AttachProvenance
from simgate.gateway.pipeline.ratelimit import RateLimits, SharedCounters
from simgate.gateway.pipeline.redact import RedactingShadowLog, RedactingStore, Redactor, RedactSecrets
from simgate.gateway.pipeline.validate import ValidateArguments, unchecked_servers
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.sessions import Sessions
from simgate.gateway.ui.feed import CallFeed
from simgate.gateway.upstream.pool import UpstreamPool
from simgate.simulators.base import Simulator


@dataclass(frozen=True)
class Executors:
    """The executor of every mode, and the parts of them the gateway also needs by name."""

    by_mode: dict[Mode, CallNext]
    shadow: ShadowExecutor  # its background simulations run while the gateway does (`ShadowExecutor.running`)
    gate: GatedSimulator | None  # the fidelity gate, when `gateway.simulator.gate` is set


def build_executors(config: GatewayConfig, *, pool: UpstreamPool, store: CacheStore, sessions: Sessions,
                    simulator: Simulator | None, shadow_log: RedactingShadowLog, redactor: Redactor) -> Executors:
    """One executor per `Mode`. Recording wraps live (it is orthogonal to the mode, VCR.py's way), so
    every mode that reaches the upstream — live, hybrid's live source, shadow — records alike."""
    settings = config.gateway.simulator
    live = RecordingLive(LiveExecutor(pool), store, config, pool, redactor=redactor)
    replay = ReplayExecutor(store, config)
    # The simulator reads recordings as examples: through the redactor, should an old one hold a secret.
    simulated = SimulatedExecutor(simulator, RedactingStore(store, redactor), sessions, pool,
                                  examples=settings.examples if settings else 5)
    gate: GatedSimulator | None = None
    estimate: ShadowEstimate | None = None
    simulator_source: CallNext = simulated  # the simulator as `simulated` mode and as a source of `hybrid`
    simulated_mode: CallNext = simulated
    if settings is not None and settings.gate is not None:
        # Shadow pairs logged before this start count too (a bounded window per tool, read once).
        estimate = ShadowEstimate.from_pairs(shadow_log.pairs())
        gate = GatedSimulator(simulated, settings.gate, EvidenceBook(Path(config.gateway.cache_path), estimate),
                              settings.identity)
        simulator_source = gate
        simulated_mode = gated_simulated_mode(gate, settings.gate, {Source.CACHE: replay, Source.LIVE: live})
    shadow = ShadowExecutor(live, simulated, shadow_log, estimate=estimate)
    sources: dict[str, CallNext] = {Source.CACHE: replay, Source.LIVE: live, Source.SIMULATOR: simulator_source}
    by_mode: dict[Mode, CallNext] = {
        Mode.LIVE: live,
        Mode.REPLAY: replay,
        Mode.SIMULATED: simulated_mode,
        Mode.HYBRID: HybridExecutor(config.gateway.hybrid_order, sources),
        Mode.SHADOW: shadow,
    }
    return Executors(by_mode=by_mode, shadow=shadow, gate=gate)


def build_pipeline(config: GatewayConfig, executors: Executors, *, metrics: GatewayMetrics, redactor: Redactor,
                   sessions: Sessions, modes: ModeResolver, counters: SharedCounters | None = None,
                   feed: CallFeed | None = None) -> Pipeline:
    """The stages every `tools/call` passes, outermost first, then the executor of its mode. `counters`:
    rate-limit buckets shared by a cluster of gateways (Redis); None keeps them in this process. `feed`: where
    finished calls go for the pages watching them (`/ui`)."""
    return Pipeline(
        [
            # Outermost: counts and times every call, refusals by any stage below included.
            ObserveCalls(metrics, feed, redactor),
            # Everything that comes back from below (results, errors, a stage's own refusal) passes it.
            RedactSecrets(redactor),
            # Every answer and error says where it came from, and joins the session's history.
            AttachProvenance(sessions),
            # Before anything else learns of the call: the key may not allow the tool; names the client.
            Authorize(),
            # Bad arguments cost nothing further: no quota, no fault, no key, no upstream.
            ValidateArguments(unchecked_servers(config)),
            # Rate limits (upstream quotas apply to upstream modes only) and the cache key depend on it.
            ChooseMode(modes),
            # A refused call must not take a fault's draw or a replay position.
            RateLimits(config, metrics=metrics, shared=counters),
            # Before the executor, so the cache only ever holds real answers.
            InjectFaults(config, metrics=metrics),
            # Last: only calls about to execute count a sequential replay position.
            AssignCacheKey(config, sessions),
        ],
        RouteByMode(executors.by_mode),
    )
