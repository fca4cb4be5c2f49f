"""Cache tools: JSONL cassettes (export, import, replay elsewhere) and `simgate cache ...`.

A real gateway records calls to the fixture server; the cassette it exports is imported into an
empty store, and a second gateway, whose upstream cannot even start, replays the same session
from it. Corrupt cassettes are refused with the file, line and field named, and change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import diskcache
import httpx
import mcp_types as types
import pytest
from harness import (
    REPO_ROOT,
    fixture_server,
    mcp_session,
    provenance,
    running_gateway,
    without_provenance,
)
from mcp.shared.exceptions import MCPError

from simgate.gateway.cache.cassette import (
    CassetteError,
    apply_cassette,
    check_cassette,
    export_cassette,
    import_cassette,
    read_cassette,
    write_cassette,
)
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import DiskStore

GONE = {"command": "/bin/false"}  # an upstream that cannot start: replay must not need it

SESSION = "cassette-session"

# Read-only (replayed by key) and sequential tools (replayed in order per session), a structured
# result, a tool error and non-ASCII text.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"text": "hello"}),
    ("counter", {}),
    ("add", {"numbers": [1, 2, 3.5]}),
    ("counter", {}),
    ("echo", {"text": "wörld ✓ \n second line"}),
    ("fail", {"reason": "on purpose"}),
    ("counter", {}),
    ("add", {"numbers": [1, 2, 3.5]}),
]




async def _run_calls(url: str) -> list[types.CallToolResult]:
    async with mcp_session(url, headers={"X-Simgate-Session": SESSION}) as session:
        return [await session.call_tool(tool, arguments) for tool, arguments in CALLS]


def _snapshot(directory: Path) -> dict[str, Any]:
    """Everything a store holds: each key's recordings and each server's tool list."""
    store = DiskStore(directory)
    try:
        recordings = {key: [r.model_dump(mode="json") for r in store.get(key)] for key in list(store.keys())}
        servers = {r["server"] for group in recordings.values() for r in group} | {"fx"}
        return {"recordings": recordings, "tools": {s: store.load_tools(s) for s in sorted(servers)}}
    finally:
        store.close()


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "simgate", "cache", *args], cwd=cwd, env=env,
                          capture_output=True, check=False, text=True, timeout=60)


def _recording(key_char: str, **fields: Any) -> Recording:
    base = {"key": key_char * 64, "server": "fx", "tool": "echo", "tool_fingerprint": "0123456789abcdef",
            "arguments": {"text": key_char}, "result": {"content": [{"type": "text", "text": key_char}]},
            "latency_ms": 1.5, "recorded_at": "2026-01-01T00:00:00.000+00:00"}
    return Recording(**{**base, **fields})


@dataclass
class Recorded:
    store: Path
    results: list[types.CallToolResult]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """A real gateway records the session into a store; the gateway is stopped before the tests use it."""
    work = tmp_path_factory.mktemp("record")
    store = work / "store"
    config = {"gateway": {"record": "all", "cache_dir": str(store)},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, work / "gateway") as gateway:
        results = anyio.run(_run_calls, gateway.mcp_url("fx"))
        assert gateway.terminate() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert all(provenance(r)["source"] == "live" and provenance(r)["recorded"] for r in results)
    counted = [r.structured_content for (tool, _), r in zip(CALLS, results, strict=True) if tool == "counter"]
    assert counted == [{"result": 1}, {"result": 2}, {"result": 3}]  # a stateful sequence
    assert results[5].is_error
    yield Recorded(store=store, results=results)


@pytest.fixture
def cassette(recorded: Recorded, tmp_path: Path) -> Path:
    path = tmp_path / "world.jsonl"
    store = DiskStore(recorded.store)
    try:
        assert export_cassette(store, path) == 8  # echo x2 (2 keys), add x2 (one key, 2 positions), counter x3, fail
    finally:
        store.close()
    return path


# ------------------------------------------------------------------------------------ export / import / replay


def test_cassette_format(cassette: Path) -> None:
    lines = cassette.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["simgate_cassette"] == 1 and header["count"] == 8 == len(lines) - 1
    assert isinstance(header["exported_at"], str)
    assert {t["name"] for t in header["tools"]["fx"]} >= {"echo", "add", "counter", "fail"}
    recordings = [Recording.model_validate_json(line) for line in lines[1:]]
    counter = [r for r in recordings if r.tool == "counter"]
    assert len({r.key for r in counter}) == 1 and [r.position for r in counter] == [0, 1, 2]
    assert [r.result["structuredContent"] for r in counter] == [{"result": 1}, {"result": 2}, {"result": 3}]
    assert not list(cassette.parent.glob(".*.tmp"))  # no temp file left behind


@pytest.mark.anyio
async def test_export_import_replays_identically_elsewhere(recorded: Recorded, cassette: Path,
                                                           tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    store = DiskStore(target)
    try:
        report = import_cassette(store, cassette, replace=False)
    finally:
        store.close()
    assert (report.recordings, report.keys, report.added, report.replaced, report.kept) == (8, 5, 8, 0, 0)
    assert report.tool_lists == ["fx"]
    assert _snapshot(target) == _snapshot(recorded.store)

    config = {"gateway": {"mode": "replay", "cache_dir": str(target)}, "mcpServers": {"fx": GONE}}
    with running_gateway(config, tmp_path / "replay", wait_ready=False) as gateway:
        replayed = await _run_calls(gateway.mcp_url("fx"))
        assert [without_provenance(r) for r in replayed] == [without_provenance(r) for r in recorded.results]
        assert all(provenance(r)["source"] == "cache" for r in replayed)
        assert [provenance(r)["cache_key"] for r in replayed] == \
            [provenance(r)["cache_key"] for r in recorded.results]
        # Strict replay: the session's fourth counter call was never recorded.
        async with mcp_session(gateway.mcp_url("fx"), headers={"X-Simgate-Session": "other"}) as session:
            for expected in (1, 2, 3):
                assert (await session.call_tool("counter", {})).structured_content == {"result": expected}
            with pytest.raises(MCPError, match="replay miss"):
                await session.call_tool("counter", {})


def test_filtered_export(recorded: Recorded, tmp_path: Path) -> None:
    store = DiskStore(recorded.store)
    try:
        assert export_cassette(store, tmp_path / "counter.jsonl", server="fx", tool="counter") == 3
        assert export_cassette(store, tmp_path / "none.jsonl", server="nope") == 0
    finally:
        store.close()
    header = json.loads((tmp_path / "counter.jsonl").read_text().splitlines()[0])
    assert [t["name"] for t in header["tools"]["fx"]] == ["counter"]
    assert header["filter"] == {"server": "fx", "tool": "counter"}
    assert read_cassette(tmp_path / "none.jsonl").recordings == []


def test_import_keeps_or_replaces(cassette: Path, tmp_path: Path) -> None:
    lines = cassette.read_text(encoding="utf-8").splitlines()
    target = tmp_path / "store"
    store = DiskStore(target)
    try:
        import_cassette(store, cassette, replace=False)
        # The same cassette with every answer changed.
        changed = [lines[0]]
        for line in lines[1:]:
            record = json.loads(line)
            record["latency_ms"] = 999.0
            changed.append(json.dumps(record))
        other = tmp_path / "changed.jsonl"
        other.write_text("\n".join(changed) + "\n")
        kept = import_cassette(store, other, replace=False)
        assert (kept.added, kept.replaced, kept.kept) == (0, 0, 8)
        assert all(r.latency_ms != 999.0 for r in store.all())
        replaced = import_cassette(store, other, replace=True)
        assert (replaced.added, replaced.replaced, replaced.kept) == (0, 8, 0)
        assert all(r.latency_ms == 999.0 for r in store.all())
    finally:
        store.close()


def test_import_is_one_transaction(cassette: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half-way through the writes (after validation) rolls every write back."""
    target = tmp_path / "store"
    store = DiskStore(target)
    store.put(_recording("a"), replace=False)
    store.close()
    before = _snapshot(target)
    written = {"n": 0}
    original = Recording.model_dump_json

    def failing(self: Recording, **kwargs: Any) -> str:
        written["n"] += 1
        if written["n"] == 4:
            raise OSError("disk full (simulated)")
        return original(self, **kwargs)

    store = DiskStore(target)
    try:
        monkeypatch.setattr(Recording, "model_dump_json", failing)
        with pytest.raises(OSError, match="simulated"):
            import_cassette(store, cassette, replace=True)
        monkeypatch.undo()
    finally:
        store.close()
    assert written["n"] == 4
    assert _snapshot(target) == before


def test_export_is_atomic(recorded: Recorded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "world.jsonl"
    path.write_text("the previous cassette\n")
    original = Recording.model_dump_json
    calls = {"n": 0}

    def failing(self: Recording, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted (simulated)")
        return original(self, **kwargs)

    store = DiskStore(recorded.store)
    try:
        monkeypatch.setattr(Recording, "model_dump_json", failing)
        with pytest.raises(RuntimeError, match="simulated"):
            export_cassette(store, path)
    finally:
        monkeypatch.undo()
        store.close()
    assert path.read_text() == "the previous cassette\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world.jsonl"]


# ------------------------------------------------------------------------------------ corrupt cassettes


def _lines(cassette: Path) -> list[str]:
    return cassette.read_text(encoding="utf-8").splitlines()


def _line_of(lines: list[str], tool: str, position: int = 0) -> int:
    """1-based line number of a tool's recording at a position."""
    for index, line in enumerate(lines[1:], start=2):
        record = json.loads(line)
        if record["tool"] == tool and record["position"] == position:
            return index
    raise AssertionError(f"no {tool}@{position}")


def _set(lines: list[str], number: int, **changes: Any) -> list[str]:
    record = json.loads(lines[number - 1])
    record.update(changes)
    return [*lines[:number - 1], json.dumps(record), *lines[number:]]


def _recount(lines: list[str]) -> list[str]:
    header = json.loads(lines[0])
    header["count"] = len(lines) - 1
    return [json.dumps(header), *lines[1:]]


def _corrupt(kind: str, lines: list[str]) -> tuple[bytes, int, str | None]:
    """A corrupt variant of the cassette, the line the error must name, and the field (None: the whole line)."""
    last = len(lines)
    if kind == "truncated-line":
        return ("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2]).encode(), last, None
    if kind == "missing-last-lines":
        return ("\n".join(lines[:-2]) + "\n").encode(), 1, "count"
    if kind == "wrong-type":
        number = _line_of(lines, "counter", 1)
        return "\n".join(_set(lines, number, position="one")).encode(), number, "position"
    if kind == "wrong-type-float":
        number = _line_of(lines, "echo")
        return "\n".join(_set(lines, number, latency_ms="fast")).encode(), number, "latency_ms"
    if kind == "bad-header-version":
        header = {**json.loads(lines[0]), "simgate_cassette": 2}
        return "\n".join([json.dumps(header), *lines[1:]]).encode(), 1, "simgate_cassette"
    if kind == "no-header":
        return "\n".join(lines[1:]).encode(), 1, "simgate_cassette"
    if kind == "bad-header-count":
        header = {**json.loads(lines[0]), "count": "seven"}
        return "\n".join([json.dumps(header), *lines[1:]]).encode(), 1, "count"
    if kind == "gap-in-positions":
        dropped = _line_of(lines, "counter", 1)
        kept = _recount([*lines[:dropped - 1], *lines[dropped:]])
        return "\n".join(kept).encode(), _line_of(kept, "counter", 2), "position"
    if kind == "duplicate-position":
        number = _line_of(lines, "counter", 2)
        return "\n".join(_set(lines, number, position=1)).encode(), number, "position"
    if kind == "sequence-disagrees":
        number = _line_of(lines, "counter", 1)
        return "\n".join(_set(lines, number, tool="echo")).encode(), number, "tool"
    if kind == "neither-result-nor-error":
        number = _line_of(lines, "add", 0)
        return "\n".join(_set(lines, number, result=None)).encode(), number, "result"
    if kind == "missing-field":
        number = _line_of(lines, "fail")
        record = json.loads(lines[number - 1])
        del record["server"]
        return "\n".join([*lines[:number - 1], json.dumps(record), *lines[number:]]).encode(), number, "server"
    if kind == "unknown-field":
        number = _line_of(lines, "echo")
        return "\n".join(_set(lines, number, reslt={})).encode(), number, "reslt"
    if kind == "bad-key":
        number = _line_of(lines, "fail")
        return "\n".join(_set(lines, number, key="not-a-key")).encode(), number, "key"
    if kind == "not-an-object":
        return "\n".join([*lines[:2], "[1, 2]", *lines[3:]]).encode(), 3, None
    if kind == "not-utf8":
        return "\n".join(lines[:3]).encode() + b"\n{\"key\": \"\xff\xfe\"}\n" + \
            "\n".join(lines[4:]).encode(), 4, None
    if kind == "empty":
        return b"", 1, "header"
    raise AssertionError(kind)


CORRUPTIONS = ["truncated-line", "missing-last-lines", "wrong-type", "wrong-type-float", "bad-header-version",
               "no-header", "bad-header-count", "gap-in-positions", "duplicate-position", "sequence-disagrees",
               "neither-result-nor-error", "missing-field", "unknown-field", "bad-key", "not-an-object", "not-utf8",
               "empty"]


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A store that already holds something, to show a refused import changes none of it."""
    directory = tmp_path / "populated"
    store = DiskStore(directory)
    try:
        store.put(_recording("a"), replace=False)
        store.put(_recording("b", tool="counter", arguments={}), replace=False)
        store.put(_recording("b", tool="counter", arguments={}, position=1), replace=False)
        store.save_tools("fx", [{"name": "echo", "inputSchema": {"type": "object"}}])
    finally:
        store.close()
    return directory


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_cassette_is_refused_and_changes_nothing(kind: str, cassette: Path, populated: Path,
                                                         tmp_path: Path) -> None:
    data, line, field = _corrupt(kind, _lines(cassette))
    bad = tmp_path / f"{kind}.jsonl"
    bad.write_bytes(data)
    before = _snapshot(populated)
    store = DiskStore(populated)
    try:
        with pytest.raises(CassetteError) as caught:
            import_cassette(store, bad, replace=True)
    finally:
        store.close()
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert str(error).startswith(f"{bad}:{line}: " + (f"{field}: " if field else "")), str(error)
    assert _snapshot(populated) == before

    # The command line says the same in one line, exit code 2, no traceback; the store is still unchanged.
    done = _cli("import", str(bad), "--replace", "--cache-dir", str(populated))
    assert done.returncode == 2, done
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"{bad}:{line}:" in done.stderr
    assert _snapshot(populated) == before


def test_a_corrupt_cassette_creates_no_store(cassette: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_lines(cassette)[0] + "\n{not json\n")
    done = _cli("import", str(bad), "--cache-dir", str(tmp_path / "new"))
    assert done.returncode == 2 and f"{bad}:2: not valid JSON" in done.stderr, done
    assert not (tmp_path / "new").exists()


def test_every_problem_is_collected(cassette: Path, tmp_path: Path) -> None:
    lines = _lines(cassette)
    lines = _set(_set(lines, 2, latency_ms="x"), 4, arguments=[])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(CassetteError) as caught:
        read_cassette(bad)
    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "latency_ms"), (4, "arguments")]
    assert "and 1 more problem" in str(caught.value)


# ------------------------------------------------------------------------------------ the command line


def test_cli_stats_ls_show(recorded: Recorded, tmp_path: Path) -> None:
    store = str(recorded.store)
    stats = _cli("stats", "--cache-dir", store, "--json")
    assert stats.returncode == 0, stats.stderr
    summary = json.loads(stats.stdout)
    assert (summary["keys"], summary["recordings"], summary["errors"], summary["servers"]) == (5, 8, 1, 1)
    assert summary["size_bytes"] > 0
    per_tool = {row["tool"]: (row["keys"], row["recordings"], row["errors"]) for row in summary["per_tool"]}
    assert per_tool == {"add": (1, 2, 0), "counter": (1, 3, 0), "echo": (2, 2, 0), "fail": (1, 1, 1)}

    table = _cli("stats", "--cache-dir", store)
    assert table.returncode == 0 and "counter" in table.stdout and "8 recording(s)" in table.stdout, table

    listed = _cli("ls", "--cache-dir", store, "--json", "--tool", "echo")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted(row["arguments"]["text"] for row in rows) == ["hello", "wörld ✓ \n second line"]
    table = _cli("ls", "--cache-dir", store, "--server", "fx")
    assert table.returncode == 0 and all(r["key"][:12] in table.stdout for r in rows), table

    # Through a config file, as a user of the gateway would.
    config = tmp_path / "simgate.yaml"
    config.write_text(json.dumps({"gateway": {"cache_dir": store}, "mcpServers": {"fx": GONE}}))
    counter = json.loads(_cli("ls", "--config", str(config), "--json", "--tool", "counter").stdout)
    assert len(counter) == 1 and counter[0]["recordings"] == 3

    shown = _cli("show", counter[0]["key"][:10], "--cache-dir", store)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["key"] == counter[0]["key"]
    assert [r["result"]["structuredContent"] for r in document["recordings"]] == \
        [{"result": 1}, {"result": 2}, {"result": 3}]


def test_cli_export_import_round_trip(recorded: Recorded, tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    done = _cli("export", str(path), "--cache-dir", str(recorded.store))
    assert done.returncode == 0 and "exported 8 recording(s) under 5 key(s)" in done.stdout, done
    done = _cli("export", str(tmp_path / "echo.jsonl"), "--tool", "echo", "--cache-dir", str(recorded.store))
    assert done.returncode == 0 and "exported 2 recording(s)" in done.stdout, done

    target = tmp_path / "imported"
    done = _cli("import", str(path), "--cache-dir", str(target))
    assert done.returncode == 0 and "8 added, 0 replaced, 0 kept" in done.stdout, done
    done = _cli("import", str(path), "--cache-dir", str(target))
    assert done.returncode == 0 and "0 added, 0 replaced, 8 kept" in done.stdout, done
    done = _cli("import", str(path), "--cache-dir", str(target), "--replace")
    assert done.returncode == 0 and "0 added, 8 replaced, 0 kept" in done.stdout, done
    assert _snapshot(target) == _snapshot(recorded.store)


@pytest.mark.parametrize("args, message", [
    (["ls", "--cache-dir", "{tmp}/nowhere"], "no recording store at"),
    (["stats", "--config", "{tmp}/missing.yaml"], "cannot read config"),
    (["show", "zz", "--cache-dir", "{store}"], "is not a cache key"),
    (["show", "0000000000", "--cache-dir", "{store}"], "no recorded key starts with"),
    (["show", "", "--cache-dir", "{store}"], "is not a cache key"),
    (["ls", "--tool", "nope", "--cache-dir", "{store}"], "nothing recorded for tool 'nope'"),
    (["export", "{tmp}/x.jsonl", "--server", "nope", "--cache-dir", "{store}"], "nothing recorded for server"),
    (["export", "{tmp}/no/such/dir/x.jsonl", "--cache-dir", "{store}"], "does not exist"),
    (["export", "{tmp}", "--cache-dir", "{store}"], "is a directory"),
    (["import", "{tmp}/missing.jsonl", "--cache-dir", "{tmp}/new"], "cannot read the cassette"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], message: str, recorded: Recorded,
                                              tmp_path: Path) -> None:
    done = _cli(*[a.format(tmp=tmp_path, store=recorded.store) for a in args])
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "new").exists() and not (tmp_path / "nowhere").exists()


def test_show_an_ambiguous_prefix(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "store")
    try:
        store.put(_recording("a", key="ab" + "0" * 62), replace=False)
        store.put(_recording("b", key="ac" + "0" * 62), replace=False)
    finally:
        store.close()
    done = _cli("show", "a", "--cache-dir", str(tmp_path / "store"))
    assert done.returncode == 2 and "ambiguous: 2 keys" in done.stderr, done
    assert _cli("show", "ab", "--cache-dir", str(tmp_path / "store")).returncode == 0


def test_cli_prune_removes_only_expired_by_default(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = DiskStore(directory)
    now = time.time()
    try:
        store.put(_recording("a", expires_at=now - 60), replace=False)  # expired
        store.put(_recording("b", expires_at=now + 3600), replace=False)  # still fresh
        store.put(_recording("c"), replace=False)  # never expires
        store.put(_recording("d", tool="counter", expires_at=now - 60), replace=False)  # expired, other tool
    finally:
        store.close()

    stats = json.loads(_cli("stats", "--json", "--cache-dir", str(directory)).stdout)
    assert (stats["recordings"], stats["expired"]) == (4, 2)
    done = _cli("prune", "--tool", "echo", "--cache-dir", str(directory))
    assert done.returncode == 0 and "removed 1 expired recording(s)" in done.stdout, done
    assert set(_snapshot(directory)["recordings"]) == {"b" * 64, "c" * 64, "d" * 64}
    done = _cli("prune", "--cache-dir", str(directory))
    assert done.returncode == 0 and "removed 1 expired" in done.stdout, done
    assert set(_snapshot(directory)["recordings"]) == {"b" * 64, "c" * 64}
    store = DiskStore(directory)
    try:
        assert store.tool_keys("fx", "echo") == ["b" * 64, "c" * 64] and store.tool_keys("fx", "counter") == []
    finally:
        store.close()

    done = _cli("prune", "--all", "--tool", "echo", "--cache-dir", str(directory))
    assert done.returncode == 0 and "removed 2 recording(s)" in done.stdout, done
    assert _snapshot(directory)["recordings"] == {}


# ------------------------------------------------------------------------------------ a corrupt store


def test_a_corrupt_stored_value_is_named_never_replayed_and_can_be_deleted(recorded: Recorded, tmp_path: Path) -> None:
    """A value in the store that is not a key's recordings (a truncated item; a string, not a list): every reader
    names its key; listings go on with the other keys; replay answers a precise error; the page deletes it."""
    target = tmp_path / "store"
    shutil.copytree(recorded.store, target)
    store = DiskStore(target)
    try:
        keys = {r.tool + json.dumps(r.arguments): r.key for key in list(store.keys()) for r in store.get(key)}
    finally:
        store.close()
    truncated, not_a_list = keys['echo{"text": "hello"}'], keys["counter{}"]
    with diskcache.Cache(str(target)) as raw:
        raw.set(truncated, ['{"key": "trunc'])
        raw.set(not_a_list, "not a list")

    listed = _cli("ls", "--cache-dir", str(target), "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 3, listed  # the 3 other keys
    assert truncated in listed.stderr and not_a_list in listed.stderr and "Traceback" not in listed.stderr
    for args in (["show", truncated[:12]], ["export", str(tmp_path / "out.jsonl")]):
        done = _cli(*args, "--cache-dir", str(target))
        assert done.returncode == 2 and "is corrupt" in done.stderr and "Traceback" not in done.stderr, done
        assert truncated in done.stderr or (args[0] == "export" and not_a_list in done.stderr), done
    assert not (tmp_path / "out.jsonl").exists()
    pruned = _cli("prune", "--cache-dir", str(target))  # passes over them (their expiry is unknown)
    assert pruned.returncode == 0 and truncated in pruned.stderr and "Traceback" not in pruned.stderr, pruned

    async def replay(url: str) -> None:
        async with mcp_session(url, headers={"X-Simgate-Session": SESSION}) as session:
            with pytest.raises(MCPError, match=f"key {truncated} is corrupt"):
                await session.call_tool("echo", {"text": "hello"})
            assert (await session.call_tool("add", {"numbers": [1, 2, 3.5]})).structured_content is not None

    config = {"gateway": {"mode": "replay", "cache_dir": str(target)}, "mcpServers": {"fx": GONE}}
    with running_gateway(config, tmp_path / "replay", wait_ready=False) as gateway:
        anyio.run(replay, gateway.mcp_url("fx"))
        page = httpx.get(gateway.url + "/ui/api/recordings", timeout=30, trust_env=False)
        assert page.status_code == 200 and page.json()["total"] == 3, page.text
        deleted = httpx.post(gateway.url + "/ui/api/recordings/delete", json={"keys": [truncated, not_a_list]},
                             headers={"X-Simgate-UI": "1"}, timeout=30, trust_env=False)
        assert deleted.status_code == 200 and deleted.json()["deleted"] == [truncated, not_a_list], deleted.text
        assert "Traceback" not in gateway.log_text()
    after = _cli("ls", "--cache-dir", str(target), "--json")
    assert after.returncode == 0 and after.stderr == "" and len(json.loads(after.stdout)) == 3, after


def test_a_large_cassette_imports_in_linear_time(tmp_path: Path) -> None:
    """20,000 keys of one tool: each key's write once rewrote the tool's whole index (quadratic: about a
    minute here, 5 minutes for 50,000); the index is now written once per import."""
    recordings = [_recording("a", key=f"{n:064x}", arguments={"n": n}) for n in range(20_000)]
    path = tmp_path / "big.jsonl"
    write_cassette(path, recordings, {}, {"server": None, "tool": None})
    store = DiskStore(tmp_path / "store")
    try:
        started = time.monotonic()
        report = import_cassette(store, path)
        took = time.monotonic() - started
        assert report.added == 20_000 and len(store.tool_keys("fx", "echo")) == 20_000
    finally:
        store.close()
    assert took < 25, f"importing 20,000 keys took {took:.1f}s"


def test_importing_a_large_cassette_holds_a_bounded_part_of_it_in_memory(tmp_path: Path) -> None:
    """Import reads the file twice, checking each record, then writing in batches, instead of holding every
    recording until the one write: its peak Python allocation stays a fraction of the file (it was ~5x)."""
    filler = "x" * 1500
    path = tmp_path / "big.jsonl"
    write_cassette(path, (_recording("a", key=f"{n:064x}", arguments={"n": n},
                                     result={"content": [{"type": "text", "text": f"{n} {filler}"}]})
                          for n in range(6000)), {}, {"server": None, "tool": None})
    size = path.stat().st_size
    store = DiskStore(tmp_path / "store")
    try:
        tracemalloc.start()
        try:
            report = import_cassette(store, path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert report.added == 6000 and len(store.tool_keys("fx", "echo")) == 6000
    finally:
        store.close()
    assert peak < size / 2, f"importing a {size / 1e6:.1f} MB cassette allocated {peak / 1e6:.1f} MB at its peak"


def _same_size_edit(path: Path) -> None:
    """Change one recording's latency without changing the file's size or modification time."""
    stat = path.stat()
    data = path.read_bytes()
    at = data.rindex(b'"latency_ms":1.5')
    path.write_bytes(data[:at] + b'"latency_ms":2.5' + data[at + len(b'"latency_ms":1.5'):])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("edit", ["appended", "same-size"])
def test_a_cassette_changed_between_its_check_and_its_write_is_refused_and_nothing_is_written(
        edit: str, populated: Path, tmp_path: Path) -> None:
    # Keys in batches of 2, so that a change seen only at the end (same size and time: its sha256 differs) comes
    # after several batches were written: they are taken back.
    path = tmp_path / "world.jsonl"
    write_cassette(path, [_recording(c) for c in "acdef9"], {}, {"server": None, "tool": None})
    before = _snapshot(populated)
    checked = check_cassette(path)
    if edit == "appended":
        with path.open("a") as file:
            file.write("\n")
    else:
        _same_size_edit(path)
    store = DiskStore(populated)
    try:
        with pytest.raises(CassetteError, match="changed since it was checked") as caught:
            apply_cassette(store, checked, replace=True, batch=2)
    finally:
        store.close()
    why = "its size or modification time differs" if edit == "appended" else "its content differs"
    assert str(caught.value) == f"{path}: the cassette changed since it was checked ({why}); nothing was imported"
    assert _snapshot(populated) == before


def test_a_cassette_whose_sequence_lines_are_shuffled_imports_across_batches(tmp_path: Path) -> None:
    # Hand-edited: a sequence's positions out of order, among other keys. The store places a sequence in order,
    # so such a key is written last, whole, whatever the batches.
    seq = [_recording("a", tool="counter", arguments={}, sequential=True, episode="e", position=n) for n in range(3)]
    path = tmp_path / "shuffled.jsonl"
    ordered = [_recording("e", tool="counter", arguments={"e": 1}, sequential=True, episode="e", position=n)
               for n in range(3)]  # in order: written batch by batch
    write_cassette(path, [seq[2], ordered[0], seq[0], ordered[1], seq[1], ordered[2]], {},
                   {"server": None, "tool": None})
    store = DiskStore(tmp_path / "store")
    try:
        report = apply_cassette(store, check_cassette(path), batch=2)
        assert (report.recordings, report.keys, report.added) == (6, 2, 6)
        assert [r.position for r in store.get("a" * 64)] == [0, 1, 2] == [r.position for r in store.get("e" * 64)]
    finally:
        store.close()
