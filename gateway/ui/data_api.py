"""The data behind the page's Recordings, Fidelity and Trajectories views: their API routes, mounted
under `/ui/api` by `gateway.ui.views` (so the page's admin-key auth, the Host/Origin checks and response
redaction apply to them as to the rest of the page and the admin API)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from simgate.gateway.cache.store import CacheStore
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.pipeline.redact import Redactor
from simgate.gateway.ui.data_roots import DataRoots
from simgate.gateway.ui.fidelity_api import FidelityApi
from simgate.gateway.ui.recordings_api import RecordingsApi
from simgate.gateway.ui.trajectories_api import TrajectoriesApi


class DataApi:
    """Owned by the gateway (`Gateway.ui_data`), which closes it when it stops."""

    def __init__(self, config: GatewayConfig, store: CacheStore, redactor: Redactor) -> None:
        roots = DataRoots.from_settings(config.gateway)
        self.recordings = RecordingsApi(store, redactor)
        self.fidelity = FidelityApi(config, store, roots)
        self.trajectories = TrajectoriesApi(roots)

    def close(self) -> None:
        """Stop a fidelity run still going (at its next call)."""
        self.fidelity.close()


# The views' route factories (`View.routes`), given the Gateway.

def recordings_routes(gateway: Any) -> list[BaseRoute]:
    return list(gateway.ui_data.recordings.routes())


def fidelity_routes(gateway: Any) -> list[BaseRoute]:
    return list(gateway.ui_data.fidelity.routes())


def trajectories_routes(gateway: Any) -> list[BaseRoute]:
    return list(gateway.ui_data.trajectories.routes())
