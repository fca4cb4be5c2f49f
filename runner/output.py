"""The output JSONL: resumable, and safe against a kill at any moment.

Every trajectory is one line written by one `write` of the whole line, then flushed and fsynced,
under a lock; so a kill loses no finished trajectory. A kill during that write may leave a
partial last line: on resume it is detected (no final newline) and truncated away before anything
is appended, so it is neither kept nor duplicated.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio

from runner.errors import OutputFileError
from runner.trajectory import Trajectory

DoneKey = tuple[str, str, int]  # (id, mode, repeat)


def done_key(record: dict[str, Any]) -> DoneKey:
    return (str(record["id"]), str(record.get("mode", "")), int(record.get("repeat", 0)))


def repair_and_read(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an existing output file; a partial last line is cut off the file."""
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:  # the tail of a write a kill cut short
            handle.truncate(end)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done_key(record)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise OutputFileError(f"{path}:{number}: not a trajectory line; is this the right output file?") from None
        records.append(record)
    return records


class TrajectoryWriter:
    """Appends whole lines; one instance per output file and run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = anyio.Lock()
        self._fd: int | None = None

    def open(self) -> list[dict[str, Any]]:
        """Repair the file, open it for appending and return the trajectories already in it."""
        records = repair_and_read(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputFileError(f"{self.path}: cannot be written ({exc.strerror or exc})") from None
        return records

    async def write(self, trajectory: Trajectory) -> None:
        assert self._fd is not None, "open() first"
        line = (trajectory.to_line() + "\n").encode("utf-8")
        async with self._lock:
            fd = self._fd
            await anyio.to_thread.run_sync(_write_whole, fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_whole(fd: int, line: bytes) -> None:
    written = os.write(fd, line)
    while written < len(line):  # a short write (a full disk, a signal): finish the line
        written += os.write(fd, line[written:])
    os.fsync(fd)
