"""Where the fidelity gate's evidence comes from: the latest `fidelity calls` report, kept beside the
recordings (`STORE/fidelity/evidence.json`), and shadow mode's running estimate (from the shadow log
at start, then from every new pair)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from simgate.files import atomic_write, exclusive_lock
from simgate.gateway.cache.shadow import ShadowPair
from simgate.simulators.fidelity import call_metrics as m
from simgate.simulators.fidelity.gate import EvidenceFile, ToolEvidence, evidence_from_report, simulator_identity

logger = logging.getLogger("simgate.fidelity")
EVIDENCE_FILE = Path("fidelity") / "evidence.json"
SHADOW_WINDOW = 200  # the running estimate covers a tool's latest pairs only: fidelity drifts
RELOAD_EVERY_S = 1.0


def evidence_path(store_dir: Path) -> Path:
    return store_dir / EVIDENCE_FILE


def read_evidence(store_dir: Path) -> EvidenceFile:
    """The evidence file of a store; empty when there is none, or when it is unreadable (logged)."""
    path = evidence_path(store_dir)
    try:
        return EvidenceFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return EvidenceFile()
    except (OSError, ValidationError, ValueError) as exc:
        logger.warning("ignoring the unreadable fidelity evidence %s: %s", path, str(exc).splitlines()[0])
        return EvidenceFile()


def write_evidence(store_dir: Path, report: object) -> Path:
    """Put a `CallFidelityReport`'s per-tool figures in place of older evidence of the same tools."""
    path = evidence_path(store_dir)
    with exclusive_lock(path.with_name(path.name + ".lock")):  # several runs on one store (onboard --jobs)
        merged = read_evidence(store_dir).merged(evidence_from_report(report))
        atomic_write(path, merged.model_dump_json(indent=2).encode())
    return path


class ShadowEstimate:
    """Per tool and simulator, the latest shadow pairs' outcome classes and value fidelity (no second
    live call in shadow mode, so the value fidelity is divided by 1: a conservative ratio)."""

    def __init__(self, window: int = SHADOW_WINDOW) -> None:
        self._window = window
        self._pairs: dict[tuple[str, str, str], deque[tuple[str, str, float | None]]] = {}
        self._last: dict[tuple[str, str, str], str] = {}

    @classmethod
    def from_pairs(cls, pairs: Iterable[ShadowPair], window: int = SHADOW_WINDOW) -> ShadowEstimate:
        estimate = cls(window)
        for pair in pairs:
            estimate.add(pair)
        return estimate

    def add(self, pair: ShadowPair) -> None:
        key = (pair.server, pair.tool, simulator_identity(pair.simulator, pair.model))
        row = (m.outcome_class(pair.live), m.outcome_class(pair.simulated), m.value_fidelity(pair.live, pair.simulated))
        self._pairs.setdefault(key, deque(maxlen=self._window)).append(row)
        self._last[key] = pair.created_at

    def evidence(self, server: str, tool: str, simulator: str) -> ToolEvidence | None:
        rows = self._pairs.get((server, tool, simulator))
        if not rows:
            return None
        outcomes = [(live, simulated) for live, simulated, _ in rows]
        values = [v for _, _, v in rows if v is not None]
        return ToolEvidence(
            server=server, tool=tool, simulator=simulator, source="shadow", measured_at=self._last[(server, tool,
                                                                                                    simulator)],
            calls=len(rows), outcome_agreement=sum(1 for a, b in outcomes if a == b) / len(outcomes),
            kappa=m.cohen_kappa(outcomes), kappa_undefined=m.kappa_undefined(outcomes),
            value_fidelity_ratio=sum(values) / len(values) if values else None,
            value_basis="shadow mode has no second live call: raw value fidelity (÷ 1)")

    def tools(self) -> set[tuple[str, str]]:
        return {(server, tool) for server, tool, _ in self._pairs}


def _newer(a: ToolEvidence, b: ToolEvidence) -> bool:
    def when(e: ToolEvidence) -> datetime:
        try:
            moment = datetime.fromisoformat(e.measured_at)
        except ValueError:
            return datetime.min.replace(tzinfo=UTC)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    return when(a) > when(b)


class EvidenceBook:
    """The latest evidence for a tool: the evidence file (re-read when it changes) and the shadow estimate."""

    def __init__(self, store_dir: Path, shadow: ShadowEstimate) -> None:
        self._store_dir = store_dir
        self.shadow = shadow
        self._file = EvidenceFile()
        self._mtime: float | None = None
        self._checked = float("-inf")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        try:
            mtime = evidence_path(self._store_dir).stat().st_mtime
        except OSError:
            mtime = None
        if mtime != self._mtime:
            self._mtime = mtime
            self._file = read_evidence(self._store_dir) if mtime is not None else EvidenceFile()

    def candidates(self, server: str, tool: str, simulator: str, setting: str) -> list[ToolEvidence]:
        self._refresh()
        found = [self._file.get(simulator, setting, server, tool), self.shadow.evidence(server, tool, simulator)]
        return [e for e in found if e is not None]

    def latest(self, server: str, tool: str, simulator: str, setting: str, min_calls: int) -> ToolEvidence | None:
        """The newest evidence on at least `min_calls` calls; else the newest there is (the gate then says
        it is too little)."""
        found = self.candidates(server, tool, simulator, setting)
        enough = [e for e in found if e.calls >= min_calls] or found
        best: ToolEvidence | None = None
        for evidence in enough:
            if best is None or _newer(evidence, best):
                best = evidence
        return best
