"""The page's views, in the order of its navigation: the ONE place a view is registered.

To add a view NAME:
1. write `gateway/ui/static/views/NAME.js`, an ES module exporting
   `async function render(root, api)`: fill `root` (an empty element); `api` is the page's client
   (`static/api.js`: `api.get(path)`, `api.post(path, body)`, `api.put(path, body)`,
   `api.del(path)`, `api.events(path, onEvent)`, paths relative to `/ui/api`). It may return a
   function, called when the user leaves the view (close streams, timers there);
2. if it needs API routes of its own, write them in a module here (`gateway/ui/NAME.py`, a function
   `routes(gateway) -> list[BaseRoute]`; paths are mounted under `/ui/api`, behind the page's auth);
3. add one `View(...)` line to `VIEWS` below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute

from simgate.gateway.ui import calls, data_api

RoutesFactory = Callable[[Any], list[BaseRoute]]


@dataclass(frozen=True)
class View:
    name: str  # its module is static/views/{name}.js; its address #/{name}
    title: str  # the navigation's label
    routes: RoutesFactory | None = None  # extra API routes under /ui/api, given the Gateway


VIEWS: tuple[View, ...] = (
    View("servers", "Servers"),
    View("calls", "Live calls", routes=calls.routes),
    View("modes", "Modes"),
    View("recordings", "Recordings", routes=data_api.recordings_routes),
    View("fidelity", "Fidelity", routes=data_api.fidelity_routes),
    View("trajectories", "Trajectories", routes=data_api.trajectories_routes),
)
