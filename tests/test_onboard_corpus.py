"""`simgate onboard` on a corpus of real PyPI and npm servers the other tests do not use
(tests/onboard_corpus.json: pure, random, time-dependent, stateful, file-writing, credential-gated,
network-needing and broken ones), against hand labels per tool written from each server's source
before the classifier ran. The classification must agree on at least 90% of the labelled tools; the
written config must serve every usable server with no hand edit; and replay of what the onboarding
recorded must answer with every upstream gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from harness import REPO_ROOT, mcp_session, provenance, running_gateway

from simgate.gateway.naming import exposed_name
from simgate.runner.onboard.classify import classify_tool, outcome_of, propose_settings
from simgate.runner.onboard.observations import CallOutcome, ProbeCall
from simgate.runner.onboard.specs import candidates_from

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

CORPUS_FILE = Path(__file__).parent / "onboard_corpus.json"
AGREEMENT = 0.9
# What a tool's label is compared on: the status always; how it works only when it works.
WORKING_KEYS = ("deterministic", "cacheable", "writes_files")


def corpus() -> list[dict[str, Any]]:
    return json.loads(CORPUS_FILE.read_text())


def server_name(entry: dict[str, Any]) -> str:
    return candidates_from(entry["spec"])[0].name


def package_of(spec: str) -> str:
    """The registry package a spec installs (pypi:NAME==V, npm:NAME@V, uvx --from NAME==V ...)."""
    words = spec.split()
    text = words[words.index("--from") + 1] if "--from" in words else spec.split(":", 1)[1]
    return re.split(r"==|(?<=.)@", text, maxsplit=1)[0]


def observed(tool: dict[str, Any]) -> dict[str, Any]:
    return {**tool["classification"], "cacheable": tool["settings"]["cacheable"]}


def disagreements(entry: dict[str, Any], report: dict[str, Any]) -> tuple[int, list[tuple[str, str, Any]]]:
    """(tools compared, [(server, tool, what differs as {key: (label, observed)} or a reason)])."""
    tools = {tool["name"]: tool for tool in report["tools"]}
    wrong: list[tuple[str, str, Any]] = []
    for name, label in entry["labels"].items():
        if name not in tools:
            wrong.append((report["name"], name, "not listed"))
            continue
        seen = observed(tools[name])
        keys = ("status", *(WORKING_KEYS if label["status"] == "works" else ()))
        differ = {key: (label[key], seen.get(key)) for key in keys if key in label and label[key] != seen.get(key)}
        if differ:
            wrong.append((report["name"], name, differ))
    wrong += [(report["name"], name, "not labelled") for name in tools if name not in entry["labels"]]
    return len(set(entry["labels"]) | set(tools)), wrong


def test_corpus_is_of_every_kind_and_unused_elsewhere() -> None:
    entries = corpus()
    assert len(entries) >= 20
    kinds = {entry["kind"] for entry in entries}
    assert {"pure", "stateful", "file-writing", "time-dependent", "credential-gated", "network-needing",
            "broken"} <= kinds
    assert {entry["spec"].split(":", 1)[0] for entry in entries if ":" in entry["spec"]} == {"pypi", "npm"}
    real_servers = (Path(__file__).parent / "real_servers.py").read_text()
    for entry in entries:
        package = package_of(entry["spec"])
        assert f'package="{package}"' not in real_servers, f"{package} is already used by tests/real_servers.py"
        for label in entry["labels"].values():
            assert label["status"] in ("works", "soft_error", "rpc_error", "timeout", "needs_credentials",
                                       "needs_network"), label


def _call(attempt: int, result: dict[str, Any], kind: str = "minimal", **extra: Any) -> ProbeCall:
    return ProbeCall(kind=kind, arguments={}, valid=True, attempt=attempt,
                     outcome=outcome_of(result, None, False), result=result, latency_ms=1.0, **extra)


def test_classifier_rules_found_by_the_corpus() -> None:
    # An error reported inside structured content is an error, not a working answer.
    assert outcome_of({"content": [], "structuredContent": {"error": "Todo 'x' not found", "todo_id": "x"}},
                      None, False) is CallOutcome.SOFT_ERROR
    assert outcome_of({"content": [], "structuredContent": {"result": "Error: Invalid format"}},
                      None, False) is CallOutcome.SOFT_ERROR
    assert outcome_of({"content": [], "structuredContent": {"success": True, "error": None, "n": 1}},
                      None, False) is CallOutcome.OK
    assert outcome_of({"content": [], "structuredContent": {"result": "42"}}, None, False) is CallOutcome.OK
    # The current time, identical in two calls within one second, is still a clock.
    now = 1_796_000_000.0
    stamp = {"content": [{"type": "text", "text": "Current UTC time is 2026-11-30 00:53:20."}]}
    clock = [_call(1, stamp, started_at=now), _call(2, stamp, started_at=now + 0.05)]
    classified = classify_tool(clock)
    assert classified.time_dependent and classified.deterministic is False
    assert propose_settings(classified, clock).cacheable is False
    paris = {"content": [{"type": "text", "text": "Il est 2026-11-30T01:53 à Paris"}]}
    assert classify_tool([_call(1, paris, started_at=now + 30), _call(2, paris, started_at=now + 30)]).time_dependent
    millis = {"content": [{"type": "text", "text": f"The current timestamp is {int(now * 1000)} ms."}]}
    assert classify_tool([_call(1, millis, started_at=now), _call(2, millis, started_at=now)]).time_dependent
    # A time stored before the call (a file's mtime, a record made earlier) is state, not the clock.
    stored = {"content": [{"type": "text", "text": f'{{"modified": {int(now) - 5}, "at": "2026-11-30 00:53:15"}}'}]}
    assert classify_tool([_call(1, stored, started_at=now), _call(2, stored, started_at=now)]).deterministic
    # ... but a date given in the arguments and echoed back is not.
    echoed = {"content": [{"type": "text", "text": "2026-01-15 12:00 is a Thursday"}]}
    assert classify_tool([_call(1, echoed, started_at=now), _call(2, echoed, started_at=now)]).deterministic
    # A description that says the answer follows the clock.
    days = {"content": [{"type": "text", "text": "31"}]}
    pair = [_call(1, days, started_at=now), _call(2, days, started_at=now)]
    assert classify_tool(pair, description="Days in a month (the current month if none is given).").time_dependent
    assert classify_tool(pair, description="Days in the given month.").deterministic is True
    # A file created by the first call only is the server's storage made on first use, not a write.
    listing = {"content": [{"type": "text", "text": "[]"}]}
    lazy = [_call(1, listing, files_changed=["work/todo.txt"]), _call(2, listing)]
    assert classify_tool(lazy).writes_files is False
    every = [_call(1, listing, files_changed=["work/todo.txt"]), _call(2, listing, files_changed=["work/todo.txt"])]
    assert classify_tool(every).writes_files is True


def onboard_corpus(workdir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    specs = [entry["spec"] for entry in corpus()]
    result = subprocess.run(
        [sys.executable, "-m", "simgate", "onboard", *specs, "--jobs", "2", "--no-progress",
         "--config", "onboarded.yaml", "--out", "reports", "--call-timeout", "15"],
        cwd=workdir, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    reports = json.loads((workdir / "reports" / "onboard.json").read_text())
    return reports, yaml.safe_load((workdir / "onboarded.yaml").read_text())


def probe_call(tool: dict[str, Any]) -> dict[str, Any] | None:
    """The first successful probe call of a tool (its arguments and the answer the onboarding recorded)."""
    return next((call for call in tool["calls"] if call["valid"] and call["outcome"] == "ok" and call["result"]),
                None)


def answer_text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "text", None) is not None)


def recorded_text(call: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in call["result"].get("content") or [] if "text" in block)


@pytest.mark.timeout(1500)
def test_corpus_classified_as_labelled_served_and_replayed(tmp_path: Path) -> None:
    entries = corpus()
    reports, _ = onboard_corpus(tmp_path)
    by_name = {report["name"]: report for report in reports}
    compared, wrong, servers_wrong = 0, [], []
    for entry in entries:
        report = by_name[server_name(entry)]
        count, differ = disagreements(entry, report)
        compared += count
        wrong += differ
        if report["status"] != entry["server_status"]:
            servers_wrong.append((report["name"], entry["server_status"], report["status"]))
        # Credential-gated servers name the variable they need; network ones the hosts they tried.
        assert set(entry.get("needs_env", [])) <= set(report["needs_env"]), (report["name"], report["needs_env"])
        assert set(entry.get("network_hosts", [])) <= set(report["network_hosts"]), report["name"]
    agreement = (compared - len(wrong)) / compared
    table = "\n".join(f"{server:40} {tool:24} {what}" for server, tool, what in wrong)
    print(f"\nper-tool agreement {compared - len(wrong)}/{compared} = {agreement:.1%}\n{table}\n"
          f"server status (label, observed) where they differ: {servers_wrong}")
    assert agreement >= AGREEMENT, f"agreement {agreement:.1%} < {AGREEMENT:.0%}; disagreements:\n{table}"

    serve_and_replay(tmp_path, reports, tmp_path / "onboarded.yaml")


def serve_and_replay(workdir: Path, reports: list[dict[str, Any]], config_path: Path) -> None:
    """The written config serves every usable server as it is (one call each, live); then, with every
    upstream gone, replay answers each call from the onboarding's recordings."""
    usable = [report for report in reports if report["status"] == "usable"]
    assert len(usable) >= 10
    chosen: dict[str, tuple[str, dict[str, Any]]] = {}
    for report in usable:
        tools = [tool for tool in report["tools"] if tool["classification"]["status"] == "works"
                 and probe_call(tool) is not None]
        assert tools, report["name"]
        # Prefer a tool replayed by key: its recording answers whatever the session did before.
        tool = next((tool for tool in tools if tool["settings"]["cacheable"]), tools[0])
        chosen[report["name"]] = (tool["name"], probe_call(tool))  # type: ignore[assignment]
    served = yaml.safe_load(config_path.read_text())
    config = yaml.safe_load(config_path.read_text())

    async def call_each(url: str, mode: str) -> dict[str, Any]:
        answers = {}
        async with mcp_session(url, headers={"X-Simgate-Mode": mode}) as session:
            for server, (tool, call) in chosen.items():
                answers[server] = await session.call_tool(exposed_name(server, tool), call["arguments"])
        return answers

    with running_gateway(served, workdir / "serve", ready_timeout=300) as gateway:
        live = anyio.run(call_each, gateway.mcp_url(), "live")
    for server, result in live.items():
        assert not result.is_error, (server, chosen[server][0], answer_text(result))

    # Replay with every upstream gone: each command replaced by one that does not exist.
    gone = served
    for name in gone["mcpServers"]:
        entry = gone["mcpServers"][name]
        for key in ("package", "constraints", "entry"):
            entry.pop(key, None)
        entry.update(command=str(workdir / "gone" / name), args=[])
    with running_gateway(gone, workdir / "replay", wait_ready=False) as gateway:
        replayed = anyio.run(call_each, gateway.mcp_url(), "replay")
    for server, result in replayed.items():
        tool, call = chosen[server]
        assert not result.is_error, (server, tool, answer_text(result))
        assert provenance(result)["source"] == "cache", (server, tool)
        if dict(config["mcpServers"][server].get("tool_settings", {})).get(tool, {}).get("cacheable"):
            assert answer_text(result) == recorded_text(call), (server, tool)
