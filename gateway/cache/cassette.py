"""Cassettes: recordings exported to, and imported from, JSONL files, so a recorded world can be shared.

The format (version 1), one JSON object per line, UTF-8:

- line 1, the header: `{"simgate_cassette": 1, "exported_at": "<ISO time>", "count": N,
  "filter": {"server": ..., "tool": ...}, "tools": {"<server>": [<tool definitions>]}}`.
  `tools` is the last `tools/list` the store kept of each exported server (restricted to the
  exported tool with a tool filter), so a gateway can replay the cassette with the servers gone.
  Unknown header fields are ignored.
- lines 2..N+1: one `Recording` each, exactly as the store holds it.

Import is all or nothing: every line is checked first (JSON, the header, the `Recording` model with
strict types and no unknown fields, exactly one of `result`/`error`, a key's recordings agreeing on
server, tool and fingerprint, its positions contiguous from 0, the header's count); any problem raises
`CassetteError` naming the file, the line and the field, and the store is left as it was. Then
every recording and tool list is written in one store transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


@dataclass
class Cassette:
    path: str
    header: dict[str, Any]
    recordings: list[Recording]
    tools: dict[str, list[dict[str, Any]]]


def read_cassette(path: str | Path) -> Cassette:
    """Parse and check a whole cassette; raise `CassetteError` listing the problems. Writes nothing."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CassetteError(path, [Problem(None, None, f"cannot read the cassette: {exc.strerror or exc}")]) from None
    problems: list[Problem] = []

    def problem(line: int | None, field_name: str | None, message: str) -> None:
        if len(problems) < _MAX_PROBLEMS:
            problems.append(Problem(line, field_name, message))

    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise CassetteError(path, [Problem(1, "header", "the file is empty; a cassette starts with its header line")])

    header: dict[str, Any] | None = None
    tools: dict[str, list[dict[str, Any]]] = {}
    recordings: list[tuple[int, Recording]] = []
    record_lines = 0
    broken_keys: set[str] = set()
    for number, raw in enumerate(lines, start=1):
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
            recordings.append((number, recording))
        elif isinstance(obj.get("key"), str):
            broken_keys.add(obj["key"])  # its sequence is incomplete for a reason already reported

    _check_sequences([(n, r) for n, r in recordings if r.key not in broken_keys], problem)
    problems.sort(key=lambda p: p.line or 0)
    # A whole-file property, reported after the problems of single lines (often their consequence).
    if header is not None and header.get("count") != record_lines:
        problem(1, "count", f"the header announces {header.get('count')} recording(s) but the file holds "
                            f"{record_lines} (truncated or edited?)")
    if problems:
        raise CassetteError(path, problems)
    assert header is not None
    return Cassette(path=str(path), header=header, recordings=[r for _, r in recordings], tools=tools)


def import_cassette(store: CacheStore, path: str | Path, replace: bool = False) -> ImportReport:
    """Check the whole cassette, then write it in one transaction.

    Without `replace`, what the store holds at a key and position is kept and only what it lacks is
    added; with `replace`, the cassette's recordings overwrite the store's at the same key and
    position. Tool lists are merged by tool name, the cassette's definitions winning only with `replace`.
    """
    return apply_cassette(store, read_cassette(path), replace)


def apply_cassette(store: CacheStore, cassette: Cassette, replace: bool = False) -> ImportReport:
    """Write a cassette `read_cassette` has checked, in one transaction (see `import_cassette`)."""
    report = ImportReport(path=cassette.path, recordings=len(cassette.recordings),
                          keys=len({r.key for r in cassette.recordings}))
    merged_lists: dict[str, list[dict[str, Any]]] = {}
    for server, listed in cassette.tools.items():
        merged = _merge_tools(store.load_tools(server), listed, replace)
        if merged is not None:
            merged_lists[server] = merged
            report.tool_lists.append(server)
    counts = store.put_many(cassette.recordings, replace=replace, tools=merged_lists)
    assert counts["gaps"] == 0, "a cassette with a gap passed the checks"
    report.added, report.replaced, report.kept = counts["added"], counts["replaced"], counts["kept"]
    return report


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


def _check_sequences(recordings: list[tuple[int, Recording]], problem: Any) -> None:
    """A key's recordings agree on server/tool/fingerprint, and their positions run 0, 1, 2... without holes."""
    by_key: dict[str, list[tuple[int, Recording]]] = {}
    for number, recording in recordings:
        by_key.setdefault(recording.key, []).append((number, recording))
    for key, group in by_key.items():
        first_line, first = group[0]
        for number, recording in group[1:]:
            for name in ("server", "tool", "tool_fingerprint"):
                if getattr(recording, name) != getattr(first, name):
                    problem(number, name, f"{getattr(recording, name)!r} differs from {getattr(first, name)!r} "
                                          f"of the same key {key[:12]} on line {first_line}")
        episodes: dict[str, dict[int, int]] = {}
        for number, recording in group:
            seen = episodes.setdefault(recording.episode, {})
            if recording.position < 0:
                problem(number, "position", f"must not be negative, got {recording.position}")
            elif recording.position in seen:
                problem(number, "position", f"key {key[:12]} has position {recording.position} twice "
                                            f"(also on line {seen[recording.position]})")
            else:
                seen[recording.position] = number
        for seen in episodes.values():
            for expected, position in enumerate(sorted(seen)):
                if position != expected:
                    problem(seen[position], "position",
                            f"key {key[:12]} has position {position} but no position {expected}: "
                            "a sequence must run 0, 1, 2... without gaps")
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
