"""The data behind the page's Recordings, Fidelity and Trajectories views, as admin API routes (so the
admin key, Host/Origin checks and response redaction apply to them as to every admin route)."""

from __future__ import annotations

from starlette.routing import Route

from gateway.cache.store import DiskStore
from gateway.config.models import GatewayConfig
from gateway.pipeline.redact import Redactor
from gateway.ui.data_roots import DataRoots
from gateway.ui.fidelity_api import FidelityApi
from gateway.ui.recordings_api import RecordingsApi
from gateway.ui.trajectories_api import TrajectoriesApi


class DataApi:
    def __init__(self, config: GatewayConfig, store: DiskStore, redactor: Redactor) -> None:
        roots = DataRoots.from_settings(config.gateway)
        self.recordings = RecordingsApi(store, redactor)
        self.fidelity = FidelityApi(config, store, roots)
        self.trajectories = TrajectoriesApi(roots)

    def routes(self) -> list[Route]:
        return [*self.recordings.routes(), *self.fidelity.routes(), *self.trajectories.routes()]

    def close(self) -> None:
        """Stop a fidelity run still going (at its next call)."""
        self.fidelity.close()
