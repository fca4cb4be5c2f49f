"""Execution modes, record modes and answer sources: the one place their names are written.

A leaf module (no project imports), so every package above `simulators` may use it: the config
models, the pipeline, the CLI's choices and the runner's settings. `StrEnum`s, so a member is equal to
its name as a string (`Mode.LIVE == "live"`), serializes to it (JSON, pydantic) and is accepted as it by
pydantic fields; adding a mode here is what makes it valid everywhere (the executor table in
`gateway.pipeline.assembly` must then name its executor: a test checks the two agree).
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    """How a tool call is answered (DESIGN.md, "the call pipeline")."""

    LIVE = "live"  # the upstream server
    REPLAY = "replay"  # the recording store, strictly
    SIMULATED = "simulated"  # the simulator
    HYBRID = "hybrid"  # the sources of `gateway.hybrid_order`, first that answers
    SHADOW = "shadow"  # live answers; the simulator runs beside it for fidelity


class RecordMode(StrEnum):
    """Which live answers are written to the store (VCR.py's record modes)."""

    NONE = "none"
    ONCE = "once"
    NEW_EPISODES = "new_episodes"
    ALL = "all"


class Source(StrEnum):
    """Where an answer came from (provenance `source`, the entries of `gateway.hybrid_order`)."""

    CACHE = "cache"
    LIVE = "live"
    SIMULATOR = "simulator"


# Modes whose calls may reach the upstream (upstream quotas apply to them, not to replay or simulated).
UPSTREAM_MODES = frozenset({Mode.LIVE, Mode.SHADOW, Mode.HYBRID})
# Modes a trajectory run may use: shadow answers like live and is a gateway-side measurement, not a run setting.
RUN_MODES: tuple[Mode, ...] = (Mode.LIVE, Mode.REPLAY, Mode.SIMULATED, Mode.HYBRID)

# Run modes in which the simulator may answer a call, so a run's hold-out setting applies (shadow holds out itself).
SIMULATING_RUN_MODES = frozenset({Mode.SIMULATED, Mode.HYBRID})


def mode_names(modes: tuple[Mode, ...] | type[Mode] = Mode) -> str:
    """`live, replay, ...`: the modes as an error message or a help text lists them."""
    return ", ".join(mode.value for mode in modes)
