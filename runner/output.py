"""The output JSONL: resumable, and safe against a kill at any moment.

Every trajectory is one line written by one `write` of the whole line, then flushed and fsynced,
under a lock; so a kill loses no finished trajectory. A kill during that write may leave a
partial last line: on resume it is detected (no final newline) and truncated away before anything
is appended, so it is neither kept nor duplicated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from simgate import jsontext
from simgate.runner.errors import OutputFileError
from simgate.runner.trajectory import Trajectory

DoneKey = tuple[str, str, int]  # (id, mode, repeat)
Item = TypeVar("Item")
_CHUNK = 1 << 16


def done_key(record: dict[str, Any]) -> DoneKey:
    return (str(record["id"]), str(record.get("mode", "")), int(record.get("repeat", 0)))


def _complete_length(path: Path) -> tuple[int, int]:
    """(size, length up to and including the last newline), reading backwards from the end."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        position = size
        while position > 0:
            step = min(_CHUNK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                return size, position + newline + 1
        return size, 0


def repair(path: Path) -> None:
    """Cut off a partial last line (the tail of a write a kill cut short)."""
    try:
        size, end = _complete_length(path)
        if end < size:
            with open(path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot be read or repaired ({exc.strerror or exc})") from None


def read_records(path: Path, key: Callable[[dict[str, Any]], Any] = done_key,
                 what: str = "trajectory") -> Iterator[dict[str, Any]]:
    """The records of a repaired output file, one at a time (files can be large); `key` checks each
    (the pipeline's stages read their own kinds of lines through it)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below; a generator holds it)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = jsontext.loads(line)
                key(record)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                raise OutputFileError(
                    f"{path}:{number}: not a {what} line; is this the right file?") from None
            yield record


def read_file(path: Path, what: str) -> list[dict[str, Any]]:
    """Every record of a stage's JSONL (tasks, trajectories, judged records), a kill's partial last line
    cut off; a missing file is an error that names it."""
    if not path.exists():
        raise OutputFileError(f"{path}: no such file")
    repair(path)
    return list(read_records(path, done_key, what))


def repair_and_read(path: Path) -> list[dict[str, Any]]:
    """The complete lines of an existing output file; a partial last line is cut off the file."""
    repair(path)
    return list(read_records(path))


class JsonlWriter:
    """Appends whole lines (trajectories, tasks, scores); one instance per output file and run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = anyio.Lock()
        self._fd: int | None = None

    def open(self, key: Callable[[dict[str, Any]], Any] = done_key,
             what: str = "trajectory") -> Iterator[dict[str, Any]]:
        """Repair the file, open it for appending and return the records already in it (lazily)."""
        repair(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputFileError(f"{self.path}: cannot be written ({exc.strerror or exc})") from None
        return read_records(self.path, key, what)

    async def write(self, trajectory: Trajectory) -> None:
        await self.write_line(trajectory.to_line())

    async def write_record(self, record: dict[str, Any]) -> None:
        await self.write_line(json.dumps(record, ensure_ascii=False, separators=(",", ":")))

    async def write_line(self, text: str) -> None:
        assert self._fd is not None, "open() first"
        line = (text + "\n").encode("utf-8")
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


async def write_each(writer: JsonlWriter, items: Sequence[Item],
                     one: Callable[[int, Item], Coroutine[Any, Any, None]]) -> None:
    """`one(index, item)` for every item at once (each bounds its own concurrency and writes its own
    lines), then the writer closed, however the run ended."""
    try:
        async with anyio.create_task_group() as group:
            for index, item in enumerate(items):
                group.start_soon(one, index, item)
    finally:
        writer.close()
