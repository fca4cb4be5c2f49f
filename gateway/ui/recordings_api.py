"""The Recordings view's API: browse and search the store, see one key's recordings, delete or export a
selection as a cassette. Built on the functions `simgate cache ls|show|export` use, so the page shows
what the CLI shows.

    GET  /ui/api/recordings?server=&tool=&q=&offset=&limit=   keys as `cache ls --json` rows, and per-tool counts
    GET  /ui/api/recordings/{key}                              `cache show KEY` (a unique prefix works too)
    POST /ui/api/recordings/delete   {"keys": [...]}           deletes those keys (with all their recordings)
    POST /ui/api/recordings/export   {"keys": [...]}           the cassette (JSONL) of those keys, as a download

Store reads run in a worker thread: a large store never holds up the gateway's calls.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simgate.gateway.cache.cassette import collect, write_cassette
from simgate.gateway.cache.listing import iter_groups, ls_row, order, per_tool, show
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import CacheStore
from simgate.gateway.pipeline.redact import Redactor
from simgate.gateway.ui.data_http import ApiError, answers_errors, logger, query_int, read_body

MAX_SELECTION = 10_000
_MAX_QUERY = 200

CacheKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Selection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[CacheKey] = Field(..., min_length=1, max_length=MAX_SELECTION)


def _matches(row: dict[str, Any], query: str) -> bool:
    """`query` (lower case) occurs in the key or the arguments' JSON text."""
    text = json.dumps(row["arguments"], ensure_ascii=False, sort_keys=True, separators=(",", ":")).lower()
    return query in text or row["key"].startswith(query)


class RecordingsApi:
    def __init__(self, store: CacheStore, redactor: Redactor) -> None:
        self._store = store
        self._redactor = redactor

    def routes(self) -> list[Route]:
        return [
            Route("/recordings", answers_errors(self._list), methods=["GET"]),
            Route("/recordings/delete", answers_errors(self._delete), methods=["POST"]),
            Route("/recordings/export", answers_errors(self._export), methods=["POST"]),
            Route("/recordings/{key}", answers_errors(self._show), methods=["GET"]),
        ]

    async def _list(self, request: Request) -> Response:
        server = request.query_params.get("server") or None
        tool = request.query_params.get("tool") or None
        query = (request.query_params.get("q") or "").strip().lower()
        if len(query) > _MAX_QUERY:
            raise ApiError(f"q is longer than {_MAX_QUERY} characters", 400)
        offset = query_int(request, "offset", 0, low=0, high=10**9)
        limit = query_int(request, "limit", 100, low=1, high=1000)

        def read() -> dict[str, Any]:
            # One pass over the store, one key's recordings in memory at a time: a row holds no result.
            rows: list[dict[str, Any]] = []

            def listed() -> Iterator[list[Recording]]:
                for group in iter_groups(self._store):
                    if (server is None or group[0].server == server) and (tool is None or group[0].tool == tool):
                        row = ls_row(group)
                        if not query or _matches(row, query):
                            rows.append(row)
                    yield group

            tools = per_tool(listed(), time.time())
            rows.sort(key=lambda r: order(r["server"], r["tool"], r["recorded_at"], r["key"]))
            return {"total": len(rows), "offset": offset, "limit": limit, "rows": rows[offset:offset + limit],
                    "tools": tools}

        return JSONResponse(await anyio.to_thread.run_sync(read))

    async def _show(self, request: Request) -> Response:
        prefix = request.path_params["key"]
        return JSONResponse(await anyio.to_thread.run_sync(show, self._store, prefix))

    async def _delete(self, request: Request) -> Response:
        selection = await read_body(request, Selection)

        def delete() -> dict[str, Any]:
            deleted: list[str] = []
            missing: list[str] = []
            for key in dict.fromkeys(selection.keys):  # each delete is atomic, on either store backend
                (deleted if self._store.delete(key) else missing).append(key)
            return {"deleted": deleted, "missing": missing}

        outcome = await anyio.to_thread.run_sync(delete)
        logger.info("recordings deleted from the page", extra={"keys": len(outcome["deleted"])})
        return JSONResponse(outcome)

    async def _export(self, request: Request) -> Response:
        selection = await read_body(request, Selection)

        def export() -> tuple[bytes, int]:
            recordings, tools = collect(self._store, keys=selection.keys)
            if not recordings:
                raise ApiError("none of the selected keys is recorded (deleted meanwhile?)", 404)
            # The one cassette writer (redacted with this gateway's secrets), into a private temp dir.
            with tempfile.TemporaryDirectory(prefix="simgate-export-") as directory:
                path = Path(directory) / "cassette.jsonl"
                count = write_cassette(path, recordings, tools, {"server": None, "tool": None},
                                       redactor=self._redactor)
                return path.read_bytes(), count

        data, count = await anyio.to_thread.run_sync(export)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(data, media_type="application/x-ndjson", headers={
            "Content-Disposition": f'attachment; filename="simgate-cassette-{stamp}.jsonl"',
            "X-Simgate-Recordings": str(count)})
