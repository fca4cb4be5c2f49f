"""Cassettes: recordings exported to, and imported from, JSONL files, so a recorded world can be shared.

The format (version 1), one JSON object per line, UTF-8:

- line 1, the header: `{"simgate_cassette": 1, "exported_at": "<ISO time>", "count": N,
  "filter": {"server": ..., "tool": ...}, "tools": {"<server>": [<tool definitions>]}}`.
  `tools` is the last `tools/list` the store kept of each exported server (restricted to the
  exported tool with a tool filter), so a gateway can replay the cassette with the servers gone.
  Unknown header fields are ignored.
- lines 2..N+1: one `Recording` each, exactly as the store holds it.

Import is all or nothing, in two passes over the file, so that its memory stays a fraction of the file's
size whatever that is: pass 1 checks every line (JSON, the header, the `Recording` model with strict
types and no unknown fields, exactly one of `result`/`error`, a key's recordings agreeing on server,
tool and fingerprint, its positions contiguous from 0, the header's count), keeping only where each
key's positions are; any problem raises `CassetteError` naming the file, the line and the field, and
the store is left as it was. Pass 2 reads the file again and writes it in batches, all or nothing
(`CacheStore.put_batches`); a file that changed between the passes (size, time or sha256) is refused
and what was written is taken back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from simgate import jsontext
from simgate.errors import SimgateError
from simgate.files import atomic_write
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import CacheStore

CASSETTE_VERSION = 1
HEADER_FIELD = "simgate_cassette"
_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")
_RECORDING_FIELDS = frozenset(Recording.model_fields)
_MAX_PROBLEMS = 100
# An import writes per store call at most this many recordings, of at most this many bytes of cassette lines (a
# batch's objects take a few times that): what its write pass holds at once, whatever the file's size.
_BATCH = 500
_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str | None
    message: str

    def describe(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line is not None else path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class CassetteError(SimgateError):
    """A cassette that cannot be imported. `problems` lists every one found; the message names the first."""

    def __init__(self, path: str | Path, problems: list[Problem]) -> None:
        self.path = str(path)
        self.problems = problems
        first = problems[0]
        self.line = first.line
        self.field = first.field
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(first.describe(self.path) + more)


@dataclass
class ImportReport:
    path: str
    recordings: int  # in the cassette
    keys: int
    added: int = 0
    replaced: int = 0
    kept: int = 0  # already in the store, left as they were (without `replace`)
    tool_lists: list[str] = field(default_factory=list)  # servers whose tool list was imported or merged

    def summary(self) -> str:
        return (f"imported {self.path}: {self.recordings} recording(s) under {self.keys} key(s): "
                f"{self.added} added, {self.replaced} replaced, {self.kept} kept as they were"
                + (f"; tool lists of {', '.join(self.tool_lists)}" if self.tool_lists else ""))


# ---------------------------------------------------------------------------------------------- export


def collect(store: CacheStore, server: str | None = None, tool: str | None = None,
            keys: Collection[str] | None = None) -> tuple[list[Recording], dict[str, list[dict[str, Any]]]]:
    """The recordings of `server`/`tool` (all by default; only those `keys` when given) in a stable order,
    and their servers' tool lists (only the exported tools' definitions with a tool filter or `keys`)."""
    recordings: list[Recording] = []
    for key in list(store.keys()) if keys is None else sorted(set(keys)):
        group = store.get(key)  # one key's sequence is read in one statement, so it is consistent
        if not group:
            continue
        if (server is not None and group[0].server != server) or (tool is not None and group[0].tool != tool):
            continue
        recordings.extend(group)
    recordings.sort(key=lambda r: (r.server, r.tool, r.key, r.episode, r.position))
    tools: dict[str, list[dict[str, Any]]] = {}
    for name in sorted({r.server for r in recordings}):
        listed = store.load_tools(name)
        if tool is not None:
            listed = [t for t in listed if t.get("name") == tool]
        elif keys is not None:
            exported = {r.tool for r in recordings if r.server == name}
            listed = [t for t in listed if t.get("name") in exported]
        if listed:
            tools[name] = listed
    return recordings, tools


def write_cassette(path: str | Path, recordings: Iterable[Recording],
                   tools: dict[str, list[dict[str, Any]]] | None = None,
                   filters: dict[str, str | None] | None = None, redactor: Any = None) -> int:
    """Write atomically: a temp file beside `path`, fsynced, then `os.replace` (never a half-written file).

    Recordings are written without secrets (they were recorded redacted; this redacts again, with
    `redactor` or else the secrets of the default vault when it can be opened).
    """
    from simgate.gateway.pipeline.redact import redact_recording
    from simgate.gateway.vault.gateway_secrets import default_redactor

    path = Path(path)
    redactor = redactor if redactor is not None else default_redactor()
    items = [redact_recording(redactor, recording) for recording in recordings]
    tools = redactor.redact(tools) if redactor else tools
    header = {HEADER_FIELD: CASSETTE_VERSION,
              "exported_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
              "count": len(items), "filter": filters or {}, "tools": tools or {}}
    lines = (line.encode("utf-8") for line in [
        json.dumps(header, ensure_ascii=False, separators=(",", ":")) + "\n",
        *(recording.model_dump_json() + "\n" for recording in items)])
    atomic_write(path, lines)
    return len(items)


def export_cassette(store: CacheStore, path: str | Path, server: str | None = None, tool: str | None = None) -> int:
    """Export the recordings of `server`/`tool` (all by default) to a JSONL cassette; returns how many."""
    recordings, tools = collect(store, server, tool)
    return write_cassette(path, recordings, tools, {"server": server, "tool": tool})


# ---------------------------------------------------------------------------------------------- import


@dataclass(frozen=True)
class FileStamp:
    """A cassette file as the check read it: its write pass must read the same bytes."""

    size: int
    mtime_ns: int
    sha256: str


@dataclass
class CheckedCassette:
    """What the check (pass 1) kept of a sound cassette: enough to write it (pass 2) and to know it is unchanged,
    not its recordings."""

    path: str
    header: dict[str, Any]
    tools: dict[str, list[dict[str, Any]]]
    recordings: int
    keys: int
    stamp: FileStamp
    # Keys whose recordings are not in position order in the file (only a hand-edited cassette's; an export
    # is sorted): they are written last, together, as the store places a sequence's recordings in order.
    disordered: frozenset[str]


@dataclass
class Cassette:
    path: str
    header: dict[str, Any]
    recordings: list[Recording]
    tools: dict[str, list[dict[str, Any]]]


class _KeySeen:
    """The check's memory of one key: its first recording's identity, where each place is, its problems.
    Lean, as there is one per key: most keys have one place, kept without a dict; strings are interned."""

    __slots__ = ("line", "server", "tool", "fingerprint", "first", "more", "problems", "ordered")

    def __init__(self, line: int, recording: Recording) -> None:
        self.line = line
        self.server, self.tool = sys.intern(recording.server), sys.intern(recording.tool)
        self.fingerprint = sys.intern(recording.tool_fingerprint)
        self.first: tuple[str, int] | None = None  # the first place taken, on `line`
        self.more: dict[tuple[str, int], int] | None = None  # every other place -> its line
        self.problems: list[Problem] | None = None  # reported unless one of its lines is broken (that is the story)
        self.ordered = True

    def line_of(self, place: tuple[str, int]) -> int | None:
        if place == self.first:
            return self.line
        return self.more.get(place) if self.more is not None else None

    def take(self, place: tuple[str, int], line: int) -> None:
        if self.first is None and line == self.line:
            self.first = (sys.intern(place[0]), place[1])
        else:
            self.more = self.more if self.more is not None else {}
            self.more[(sys.intern(place[0]), place[1])] = line

    def places(self) -> Iterator[tuple[tuple[str, int], int]]:
        if self.first is not None:
            yield self.first, self.line
        yield from (self.more or {}).items()

    def problem(self, line: int, field_name: str, message: str) -> None:
        self.problems = self.problems if self.problems is not None else []
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(Problem(line, field_name, message))


def check_cassette(path: str | Path) -> CheckedCassette:
    """Pass 1: read the cassette once, line by line, checking every record; raise `CassetteError` listing the
    problems. Holds what deciding needs (per key: where each position is), never the recordings. Writes nothing."""
    problems: list[Problem] = []

    def problem(line: int | None, field_name: str | None, message: str) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(Problem(line, field_name, message))

    header: dict[str, Any] | None = None
    tools: dict[str, list[dict[str, Any]]] = {}
    record_lines = recordings = 0
    keys: dict[str, _KeySeen] = {}
    broken_keys: set[str] = set()
    digest = hashlib.sha256()
    number = 0
    try:
        with open(path, "rb") as file:
            stat = os.fstat(file.fileno())
            for number, raw in _numbered_lines(file, digest):
                if not raw.strip():
                    if number == 1:
                        problem(1, "header", "the first line is blank; a cassette starts with its header line")
                    continue
                obj = _parse_line(raw, number, problem)
                if number == 1:
                    header = _check_header(obj, problem) if obj is not None else None
                    tools = (header or {}).get("tools") or {}
                    continue
                record_lines += 1
                if obj is None:
                    continue
                recording = _check_recording(obj, number, problem)
                if recording is not None:
                    recordings += 1
                    _note_place(keys, recording, number)
                elif isinstance(obj.get("key"), str):
                    broken_keys.add(obj["key"])  # its sequence is incomplete for a reason already reported
    except OSError as exc:
        raise CassetteError(path, [Problem(None, None, f"cannot read the cassette: {exc.strerror or exc}")]) from None
    if number == 0:
        raise CassetteError(path, [Problem(1, "header", "the file is empty; a cassette starts with its header line")])

    for key, seen in keys.items():
        if key not in broken_keys:
            _check_sequence(key, seen, problem)
    problems.sort(key=lambda p: p.line or 0)
    # A whole-file property, reported after the problems of single lines (often their consequence).
    if header is not None and header.get("count") != record_lines:
        problem(1, "count", f"the header announces {header.get('count')} recording(s) but the file holds "
                            f"{record_lines} (truncated or edited?)")
    if problems:
        raise CassetteError(path, problems)
    assert header is not None
    return CheckedCassette(path=str(path), header=header, tools=tools, recordings=recordings, keys=len(keys),
                           stamp=FileStamp(stat.st_size, stat.st_mtime_ns, digest.hexdigest()),
                           disordered=frozenset(key for key, seen in keys.items() if not seen.ordered))


def read_cassette(path: str | Path) -> Cassette:
    """A whole cassette, checked, in memory, in file order (for small ones; `import_cassette` streams)."""
    checked = check_cassette(path)
    recordings = [r for batch in _read_again(checked, _BATCH, hold=frozenset()) for r in batch]
    return Cassette(path=checked.path, header=checked.header, recordings=recordings, tools=checked.tools)


def import_cassette(store: CacheStore, path: str | Path, replace: bool = False, batch: int | None = None
                    ) -> ImportReport:
    """Check the whole cassette (pass 1), then write it (pass 2), all or nothing.

    Without `replace`, what the store holds at a key and position is kept and only what it lacks is
    added; with `replace`, the cassette's recordings overwrite the store's at the same key and
    position. Tool lists are merged by tool name, the cassette's definitions winning only with `replace`.
    """
    return apply_cassette(store, check_cassette(path), replace, batch)


def apply_cassette(store: CacheStore, checked: CheckedCassette, replace: bool = False, batch: int | None = None
                   ) -> ImportReport:
    """Pass 2 of a cassette `check_cassette` passed: read again and written `batch` recordings at a time, all or
    nothing (`CacheStore.put_batches`); a file that changed since the check fails it, and nothing is written."""
    report = ImportReport(path=checked.path, recordings=checked.recordings, keys=checked.keys)
    merged_lists: dict[str, list[dict[str, Any]]] = {}
    for server, listed in checked.tools.items():
        merged = _merge_tools(store.load_tools(server), listed, replace)
        if merged is not None:
            merged_lists[server] = merged
            report.tool_lists.append(server)
    counts = store.put_batches(_read_again(checked, batch or _BATCH, hold=checked.disordered),
                               replace=replace, tools=merged_lists)
    assert counts["gaps"] == 0, "a cassette with a gap passed the checks"
    report.added, report.replaced, report.kept = counts["added"], counts["replaced"], counts["kept"]
    return report


def _read_again(checked: CheckedCassette, batch: int, hold: frozenset[str]) -> Iterator[list[Recording]]:
    """Pass 2: the recordings in batches, the keys of `hold` last, together. Raises `CassetteError` when the file
    is not the one checked: at once when its size or time differs, else at the end (before the last batch)
    when its bytes do; the store's `put_batches` then takes back what the earlier batches wrote."""
    def changed(why: str) -> CassetteError:
        return CassetteError(checked.path, [Problem(None, None, f"the cassette changed since it was checked "
                                                                f"({why}); nothing was imported")])

    digest = hashlib.sha256()
    pending: list[Recording] = []
    pending_bytes = 0
    held: list[Recording] = []
    try:
        with open(checked.path, "rb") as file:
            stat = os.fstat(file.fileno())
            if (stat.st_size, stat.st_mtime_ns) != (checked.stamp.size, checked.stamp.mtime_ns):
                raise changed("its size or modification time differs")
            for number, raw in _numbered_lines(file, digest):
                if number == 1 or not raw.strip():
                    continue
                recording = _read_recording(raw, number)
                if recording is None:
                    raise changed(f"line {number} is no longer a valid recording")
                if recording.key in hold:
                    held.append(recording)
                    continue
                pending.append(recording)
                pending_bytes += len(raw)
                if len(pending) >= batch or pending_bytes >= _BATCH_BYTES:
                    yield pending
                    pending, pending_bytes = [], 0
    except OSError as exc:
        raise changed(f"cannot read it again: {exc.strerror or exc}") from None
    if digest.hexdigest() != checked.stamp.sha256:
        raise changed("its content differs")
    if pending or held:
        yield pending + held


def _numbered_lines(file: IO[bytes], digest: Any) -> Iterator[tuple[int, bytes]]:
    """Each line (without its newline) and its number; every byte read goes into `digest`."""
    for number, raw in enumerate(file, start=1):
        digest.update(raw)
        yield number, raw[:-1] if raw.endswith(b"\n") else raw


def _read_recording(raw: bytes, number: int) -> Recording | None:
    problems: list[str] = []
    obj = _parse_line(raw, number, lambda *problem: problems.append(problem[2]))
    return None if obj is None else _check_recording(obj, number, lambda *problem: problems.append(problem[2]))


def _merge_tools(existing: list[dict[str, Any]], imported: list[dict[str, Any]],
                 replace: bool) -> list[dict[str, Any]] | None:
    """The store's tool list with the imported definitions merged in by name, or None when nothing changes."""
    merged = list(existing)
    names = {t.get("name"): i for i, t in enumerate(merged)}
    changed = False
    for definition in imported:
        index = names.get(definition["name"])
        if index is None:
            names[definition["name"]] = len(merged)
            merged.append(definition)
            changed = True
        elif replace and merged[index] != definition:
            merged[index] = definition
            changed = True
    return merged if changed else None


def _parse_line(raw: bytes, number: int, problem: Any) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem(number, None, f"not UTF-8 text at byte {exc.start + 1} of the line")
        return None
    try:
        obj = jsontext.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (truncated line?)" if exc.pos >= len(text.rstrip()) - 1 else ""
        problem(number, None, f"not valid JSON{hint}: {exc.msg} at column {exc.colno}")
        return None
    if not isinstance(obj, dict):
        problem(number, None, f"expected a JSON object, got {_json_type(obj)}")
        return None
    return obj


def _check_header(obj: dict[str, Any], problem: Any) -> dict[str, Any] | None:
    if HEADER_FIELD not in obj:
        problem(1, HEADER_FIELD, "missing: the first line must be the cassette header "
                                 f'{{"{HEADER_FIELD}": {CASSETTE_VERSION}, "exported_at": ..., "count": N}}')
        return None
    ok = True
    version = obj[HEADER_FIELD]
    if version != CASSETTE_VERSION or isinstance(version, bool):
        problem(1, HEADER_FIELD, f"unsupported cassette version {version!r} (this simgate reads {CASSETTE_VERSION})")
        ok = False
    count = obj.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        problem(1, "count", f"must be a non-negative integer, got {_json_type(count) if 'count' in obj else 'nothing'}")
        ok = False
    if "exported_at" in obj and not isinstance(obj["exported_at"], str):
        problem(1, "exported_at", f"must be a string, got {_json_type(obj['exported_at'])}")
        ok = False
    tools = obj.get("tools", {})
    if not isinstance(tools, dict):
        problem(1, "tools", f"must be an object of server name to tool list, got {_json_type(tools)}")
        ok = False
    else:
        for server, listed in tools.items():
            if not isinstance(listed, list):
                problem(1, f"tools.{server}", f"must be a list of tool definitions, got {_json_type(listed)}")
                ok = False
                continue
            for index, definition in enumerate(listed):
                if not isinstance(definition, dict) or not isinstance(definition.get("name"), str):
                    problem(1, f"tools.{server}[{index}]", "must be a tool definition with a string 'name'")
                    ok = False
    return obj if ok else None


def _check_recording(obj: dict[str, Any], number: int, problem: Any) -> Recording | None:
    unknown = sorted(set(obj) - _RECORDING_FIELDS)
    if unknown:
        what = "a second cassette header" if HEADER_FIELD in obj else "not a field of a recording"
        problem(number, unknown[0], f"unknown field ({what})")
        return None
    try:
        recording = Recording.model_validate(obj, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"]) or None
        problem(number, location, f"{error['msg']} (got {_json_type(error.get('input'))})"
                if error["type"] != "missing" else "missing")
        return None
    if not _KEY_PATTERN.fullmatch(recording.key):
        problem(number, "key", "must be 64 lowercase hex digits (a sha256 cache key)")
        return None
    if (recording.result is None) == (recording.error is None):
        problem(number, "result", "exactly one of 'result' and 'error' must be set"
                if recording.result is None else "exactly one of 'result' and 'error' may be set, both are")
        return None
    return recording


def _note_place(keys: dict[str, _KeySeen], recording: Recording, number: int) -> None:
    """Remember where the recording sits; a key's recordings agree on server/tool/fingerprint, and no place twice."""
    key = recording.key
    seen = keys.get(key)
    if seen is None:
        seen = keys[key] = _KeySeen(number, recording)
    else:
        for name, first in (("server", seen.server), ("tool", seen.tool), ("tool_fingerprint", seen.fingerprint)):
            if getattr(recording, name) != first:
                seen.problem(number, name, f"{getattr(recording, name)!r} differs from {first!r} of the same key "
                                           f"{key[:12]} on line {seen.line}")
    place = (recording.episode, recording.position)
    if recording.position < 0:
        seen.problem(number, "position", f"must not be negative, got {recording.position}")
    elif (also := seen.line_of(place)) is not None:
        seen.problem(number, "position", f"key {key[:12]} has position {recording.position} twice (also on line "
                                         f"{also})")
    else:
        if recording.position and seen.line_of((recording.episode, recording.position - 1)) is None:
            seen.ordered = False
        seen.take(place, number)


def _check_sequence(key: str, seen: _KeySeen, problem: Any) -> None:
    """A key's problems, and its positions running 0, 1, 2... without holes in each episode."""
    for found in seen.problems or []:
        problem(found.line, found.field, found.message)
    episodes: dict[str, dict[int, int]] = {}
    for (episode, position), line in seen.places():
        episodes.setdefault(episode, {})[position] = line
    for places in episodes.values():
        for expected, position in enumerate(sorted(places)):
            if position != expected:
                problem(places[position], "position", f"key {key[:12]} has position {position} but no position "
                                                      f"{expected}: a sequence must run 0, 1, 2... without gaps")
                break


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
