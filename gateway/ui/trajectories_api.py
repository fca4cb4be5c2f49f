"""The Trajectories view's API: trajectory JSONL files under the page's directories, one trajectory as a
conversation, and two side by side with their first divergence marked.

    GET /ui/api/trajectories/files                                   JSONL files whose first line is a trajectory
    GET /ui/api/trajectories/list?root=&path=                        one line per trajectory, and tasks run in several modes
    GET /ui/api/trajectories/one?root=&path=&index=                  one trajectory as a conversation
    GET /ui/api/trajectories/compare?root=&path=&left=&right=[&right_root=&right_path=]
                                                                    two trajectories side by side

Files are read line by line (a line over MAX_LINE_BYTES is skipped and said so), in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simgate.gateway.ui.conversation import NotATrajectory, check, conversation, side_by_side, summary
from simgate.gateway.ui.data_http import ApiError, answers_errors, query_int
from simgate.gateway.ui.data_roots import DataRoots
from simgate.jsontext import loads

MAX_LINE_BYTES = 32 * 1024 * 1024
MAX_LISTED = 5000
_MAX_FILES = 500
_MAX_CHECKED = 5000
_READ = 1 << 16


def _lines(file: Path) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of every non-blank line; None for a line over MAX_LINE_BYTES (not held whole)."""
    with file.open("rb") as handle:
        number = 0
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := handle.readline(_READ)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the long line without keeping it
                yield number, None
                continue
            if line.strip():
                yield number, line


def _parse(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise NotATrajectory(f"the line is over {MAX_LINE_BYTES} bytes")
    try:
        return check(loads(raw, finite=True))
    except json.JSONDecodeError as exc:
        raise NotATrajectory(f"not valid JSON: {exc}") from None


def _is_trajectory_file(file: Path) -> bool:
    for _number, raw in _lines(file):
        try:
            _parse(raw)
        except NotATrajectory:
            return False
        return True
    return False


def read_index(file: Path, index: int) -> dict[str, Any]:
    """The trajectory at `index` (0-based among the file's non-blank lines)."""
    for position, (number, raw) in enumerate(_lines(file)):
        if position == index:
            try:
                return _parse(raw)
            except NotATrajectory as exc:
                raise ApiError(f"line {number} of {file.name}: {exc}", 422) from None
    raise ApiError(f"{file.name} has no trajectory {index} (it has fewer lines)", 404)


def list_file(file: Path) -> dict[str, Any]:
    rows, problems = [], []
    pairs: dict[str, dict[str, int]] = {}
    truncated = False
    for position, (number, raw) in enumerate(_lines(file)):
        if position >= MAX_LISTED:
            truncated = True
            break
        try:
            trajectory = _parse(raw)
        except NotATrajectory as exc:
            problems.append({"line": number, "index": position, "error": str(exc)})
            continue
        rows.append(summary(trajectory, position))
        task = f"{trajectory.get('id')}#{trajectory.get('repeat') or 0}"
        pairs.setdefault(task, {}).setdefault(str(trajectory.get("mode")), position)
    return {"trajectories": rows, "problems": problems[:100], "truncated": truncated,
            "tasks": [{"task": task, "modes": modes} for task, modes in pairs.items() if len(modes) > 1]}


class TrajectoriesApi:
    def __init__(self, roots: DataRoots) -> None:
        self._roots = roots
        # (file, size, time) -> holds trajectories: a listing reads the first line of new or changed files only
        self._checked: dict[tuple[str, int, float], bool] = {}

    def _holds_trajectories(self, file: Path, size: int, modified: float) -> bool:
        key = (str(file), size, modified)
        if key not in self._checked:
            if len(self._checked) >= _MAX_CHECKED:
                self._checked.clear()
            try:
                self._checked[key] = _is_trajectory_file(file)
            except OSError:
                return False
        return self._checked[key]

    def routes(self) -> list[Route]:
        return [
            Route("/trajectories/files", answers_errors(self._files), methods=["GET"]),
            Route("/trajectories/list", answers_errors(self._list), methods=["GET"]),
            Route("/trajectories/one", answers_errors(self._one), methods=["GET"]),
            Route("/trajectories/compare", answers_errors(self._compare), methods=["GET"]),
        ]

    def _file(self, request: Request, root: str = "root", path: str = "path") -> Path:
        return self._roots.resolve(request.query_params.get(root), request.query_params.get(path), suffix=".jsonl")

    async def _files(self, request: Request) -> Response:
        def find() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for item in self._roots.walk(".jsonl"):
                if self._holds_trajectories(item.file, item.size, item.modified):
                    found.append({"root": item.root, "path": item.path, "size": item.size, "modified": item.modified})
                    if len(found) >= _MAX_FILES:
                        break
            found.sort(key=lambda f: f["modified"], reverse=True)
            return found

        return JSONResponse({"roots": self._roots.describe(), "files": await anyio.to_thread.run_sync(find)})

    async def _list(self, request: Request) -> Response:
        file = self._file(request)
        return JSONResponse(await anyio.to_thread.run_sync(list_file, file))

    async def _one(self, request: Request) -> Response:
        file = self._file(request)
        index = query_int(request, "index", 0, low=0, high=10**9)
        trajectory = await anyio.to_thread.run_sync(read_index, file, index)
        return JSONResponse({"index": index, **conversation(trajectory)})

    async def _compare(self, request: Request) -> Response:
        left_file = self._file(request)
        right_file = self._file(request, "right_root", "right_path") \
            if request.query_params.get("right_path") else left_file
        left_index = query_int(request, "left", 0, low=0, high=10**9)
        right_index = query_int(request, "right", 1, low=0, high=10**9)

        def read() -> dict[str, Any]:
            return side_by_side(read_index(left_file, left_index), read_index(right_file, right_index))

        return JSONResponse(await anyio.to_thread.run_sync(read))
