"""The page's Recordings, Fidelity and Trajectories views and their API (`/ui/api/...`), against a real gateway.

One gateway (client keys on, a vault secret, the fixture server recording every call) serves the
tests; they call its API over HTTP with the admin key, and compare with `simgate cache ...` run (in this
process) on the same store; then drive the views in Debian's chromium through Playwright. Trajectory
files are written with the runner's own models and report writer. Screenshots of each view are kept
under $SIMGATE_TEST_ARTEFACTS/ui (default: the temp dir's simgate-test-artefacts/ui).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from harness import fixture_server, mcp_session, running_gateway
from playwright.async_api import async_playwright, expect

from simgate.gateway.auth.api_keys import KeyStore
from simgate.gateway.cache.records import Recording
from simgate.gateway.cache.store import DiskStore
from simgate.gateway.cli import main
from simgate.gateway.ui.conversation import conversation
from simgate.gateway.vault.store import Vault
from simgate.runner.fidelity.report import write_report
from simgate.runner.trajectory import AgentInfo, ToolEvent, Trajectory, Usage

SECRET = "sk-ui-data/5b1f0c9e7d3a2b4c6e8f0a1b+Tok"

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"text": "alpha"}),
    ("echo", {"text": "beta"}),
    ("add", {"numbers": [1, 2]}),
    ("add", {"numbers": [3, 4, 5]}),
    ("counter", {}),
    ("counter", {}),
    ("fail", {"reason": "on purpose"}),
]


@dataclass
class Page:
    url: str
    work: Path
    data: Path
    admin: dict[str, str]
    agent: dict[str, str]

    @property
    def config(self) -> str:
        return str(self.work / "simgate.json")

    def get(self, route: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return httpx.get(self.url + route, params=params, headers=self.admin if headers is None else headers,
                         timeout=30, trust_env=False)

    def post(self, route: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(self.url + route, json=body, headers=self.admin if headers is None else headers,
                          timeout=30, trust_env=False)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def simgate(*args: str) -> Done:
    """`simgate ARGS` run in this process (the same handler as the console script, without a slow start)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return Done(code, out.getvalue(), err.getvalue())


def create_key(state: Path, name: str, *, admin: bool = False) -> dict[str, str]:
    _, secret = KeyStore(state / "keys.json").create(name, servers=["*"], admin=admin)
    return {"Authorization": f"Bearer {secret}"}


# ---------------------------------------------------------------------------------------------- trajectories


def _event(step: int, call_id: str, tool: str, arguments: dict[str, Any], source: str) -> ToolEvent:
    return ToolEvent(step=step, call_id=call_id, name=f"fx__{tool}", server="fx", tool=tool, arguments=arguments,
                     source=source, cache_key=None if source == "simulator" else "ab" * 32, latency_ms=3.5,
                     is_error=False)


def trajectory(mode: str, calls: list[tuple[str, dict[str, Any]]], answer: str, *, task: str = "t1",
               repeat: int = 0, source: str = "live") -> Trajectory:
    """A trajectory as `simgate run` writes it: one assistant turn per tool call, then the answer."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"question of {task}"}]
    events = []
    for step, (tool, arguments) in enumerate(calls):
        cid = f"call_{step}_0"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": f"fx__{tool}", "arguments": json.dumps(arguments)}}]})
        messages.append({"role": "tool", "tool_call_id": cid, "content": f"answer {step} ({mode})"})
        events.append(_event(step, cid, tool, arguments, source))
    messages.append({"role": "assistant", "content": answer})
    return Trajectory(id=task, question=f"question of {task}", mode=mode, repeat=repeat,
                      session=f"run/{mode}/{task}#{repeat}", messages=messages, tools=[], target_tools=["fx__echo"],
                      tool_events=events, final_answer=answer, outcome="final_answer", error=None, usage=Usage(),
                      checks={"passed": True}, agent=AgentInfo(kind="prompted", model="m", temperature=0.0, seed=0,
                                                               max_turns=8),
                      created_at="2026-12-06T10:00:00.000Z")


LIVE = [("echo", {"text": "a"}), ("add", {"numbers": [1, 2]}), ("echo", {"text": "done"})]
SIMULATED = [("echo", {"text": "a"}), ("add", {"numbers": [1, 3]}), ("echo", {"text": "done"})]  # parts at step 1


def write_trajectories(directory: Path) -> list[Trajectory]:
    """A `fidelity trajectories` output: trajectories.jsonl (live and simulated runs of two tasks) and its report."""
    directory.mkdir(parents=True)
    runs = [trajectory("live", LIVE, "three"),
            trajectory("simulated", SIMULATED, "four", source="simulator"),
            trajectory("live", LIVE[:1], "short", task="t2"),
            trajectory("simulated", LIVE[:1] + [("echo", {"text": SECRET})], "longer", task="t2", source="simulator")]
    (directory / "trajectories.jsonl").write_text("".join(t.to_line() + "\n" for t in runs))
    by_mode: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_mode.setdefault(run.mode, []).append(run.model_dump(mode="json"))
    write_report(by_mode, directory, samples=50)
    return runs


# ---------------------------------------------------------------------------------------------- the gateway


async def _record(gateway: Any, headers: dict[str, str]) -> None:
    async with mcp_session(gateway.mcp_url("fx"), headers={**headers, "X-Simgate-Session": "ui-data"}) as session:
        for tool, arguments in CALLS:
            await session.call_tool(tool, arguments)
    async with mcp_session(gateway.mcp_url("leaky"), headers=headers) as session:
        await session.call_tool("leak_text", {})  # its answer holds the vault secret


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    work = tmp_path_factory.mktemp("ui-data")
    data = work / "data"
    write_trajectories(data / "run1")
    (data / "notes.jsonl").write_text('{"not": "a trajectory"}\n')
    good = trajectory("live", LIVE, "three").to_line()
    (data / "run2").mkdir()
    (data / "run2" / "trajectories.jsonl").write_text(f"{good}\n{good[:50]}\n\n[1, 2]\n{good}\n")
    state = work / "state"
    Vault(state / "vault.json").set("api", SECRET)
    config = {"gateway": {"record": "all", "state_dir": str(state), "data_dirs": [str(data)]},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py"),
                             "leaky": {**fixture_server("echo_secret_server.py"), "env": {"API_TOKEN": "vault:api"}}}}
    admin = create_key(state, "ops", admin=True)
    agent = create_key(state, "agent")
    with running_gateway(config, work) as gateway:
        anyio.run(_record, gateway, admin)
        yield Page(url=gateway.url, work=work, data=data, admin=admin, agent=agent)


# ---------------------------------------------------------------------------------------------- recordings


def _keys_of(page: Page, **params: Any) -> dict[str, dict[str, Any]]:
    listed = page.get("/ui/api/recordings", **params)
    assert listed.status_code == 200, listed.text
    return {row["key"]: row for row in listed.json()["rows"]}


def test_recordings_list_equals_cache_ls_and_search(page: Page) -> None:
    listed = page.get("/ui/api/recordings", limit=1000)
    assert listed.status_code == 200, listed.text
    cli = simgate("cache", "ls", "--config", page.config, "--json")
    assert cli.returncode == 0, cli.stderr
    assert listed.json()["rows"] == json.loads(cli.stdout)
    assert listed.json()["total"] == 7  # echo ×2, add ×2, counter (one key, two positions), fail, leak_text
    tools = {(t["server"], t["tool"]): t["recordings"] for t in listed.json()["tools"]}
    assert tools == {("fx", "add"): 2, ("fx", "counter"): 2, ("fx", "echo"): 2, ("fx", "fail"): 1,
                     ("leaky", "leak_text"): 1}

    assert {r["arguments"]["text"] for r in _keys_of(page, tool="echo").values()} == {"alpha", "beta"}
    assert [r["arguments"] for r in _keys_of(page, q="BETA").values()] == [{"text": "beta"}]
    assert [r["arguments"] for r in _keys_of(page, server="fx", q="[3,4").values()] == [{"numbers": [3, 4, 5]}]
    assert _keys_of(page, server="nope") == {}
    paged = page.get("/ui/api/recordings", offset=4, limit=10).json()
    assert paged["total"] == 7 and len(paged["rows"]) == 3


def test_a_recording_equals_cache_show(page: Page) -> None:
    counter = next(iter(_keys_of(page, tool="counter")))
    for asked in (counter, counter[:10]):
        shown = page.get(f"/ui/api/recordings/{asked}")
        assert shown.status_code == 200, shown.text
        cli = simgate("cache", "show", asked, "--config", page.config)
        assert cli.returncode == 0, cli.stderr
        assert shown.json() == json.loads(cli.stdout)
    assert [r["result"]["structuredContent"] for r in shown.json()["recordings"]] == [{"result": 1}, {"result": 2}]
    missing = page.get("/ui/api/recordings/" + "0" * 20)
    assert missing.status_code == 404 and "no recorded key starts with" in missing.json()["error"]
    bad = page.get("/ui/api/recordings/xyz")
    assert bad.status_code == 404 and "not a cache key" in bad.json()["error"]


def test_export_a_selection_then_delete_it(page: Page, tmp_path: Path) -> None:
    echo = _keys_of(page, tool="echo")
    add = _keys_of(page, tool="add")
    chosen = [next(iter(echo)), *add]
    exported = page.post("/ui/api/recordings/export", {"keys": chosen})
    assert exported.status_code == 200, exported.text
    assert "attachment" in exported.headers["content-disposition"]
    cassette = tmp_path / "selection.jsonl"
    cassette.write_bytes(exported.content)
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines[0]["simgate_cassette"] == 1 and lines[0]["count"] == 3
    assert sorted(r["key"] for r in lines[1:]) == sorted(chosen)
    assert sorted(t["name"] for t in lines[0]["tools"]["fx"]) == ["add", "echo"]  # only the exported tools
    # The cassette is one the CLI imports: same recordings as in the store.
    imported = simgate("cache", "import", str(cassette), "--cache-dir", str(tmp_path / "copy"))
    assert imported.returncode == 0 and "3 added" in imported.stdout, imported
    for key in chosen:
        original = simgate("cache", "show", key, "--config", page.config)
        copy = simgate("cache", "show", key, "--cache-dir", str(tmp_path / "copy"))
        assert json.loads(original.stdout) == json.loads(copy.stdout)

    deleted = page.post("/ui/api/recordings/delete", {"keys": list(add)})
    assert deleted.status_code == 200, deleted.text
    assert sorted(deleted.json()["deleted"]) == sorted(add) and deleted.json()["missing"] == []
    assert _keys_of(page, tool="add") == {}
    cli = simgate("cache", "ls", "--config", page.config, "--json", "--tool", "add")
    assert cli.returncode == 2 and "nothing recorded for tool 'add'" in cli.stderr
    again = page.post("/ui/api/recordings/delete", {"keys": list(add)})
    assert again.json() == {"deleted": [], "missing": list(add)}


def test_a_recording_and_its_cassette_hold_no_secret(page: Page) -> None:
    [key] = _keys_of(page, server="leaky")
    shown = page.get(f"/ui/api/recordings/{key}")
    assert shown.status_code == 200 and "[REDACTED:api]" in shown.text and SECRET not in shown.text
    exported = page.post("/ui/api/recordings/export", {"keys": [key]})
    assert exported.status_code == 200 and "[REDACTED:api]" in exported.text and SECRET not in exported.text


@pytest.mark.parametrize("body, message", [
    ({}, "keys: Field required"),
    ({"keys": []}, "keys: List should have at least 1 item"),
    ({"keys": ["../etc/passwd"]}, "keys.0: String should match pattern"),
    ({"keys": ["a" * 64], "extra": 1}, "extra: Extra inputs are not permitted"),
    ("not json", "Invalid JSON"),
])
def test_bad_selections_are_refused(page: Page, body: Any, message: str) -> None:
    for path in ("/ui/api/recordings/delete", "/ui/api/recordings/export"):
        sent = httpx.post(page.url + path, content=body if isinstance(body, str) else json.dumps(body),
                          headers={**page.admin, "Content-Type": "application/json"}, timeout=30, trust_env=False)
        assert sent.status_code == 400 and message in sent.json()["error"], (path, sent.text)


# ---------------------------------------------------------------------------------------------- fidelity


def test_fidelity_reports_are_listed_and_open(page: Page) -> None:
    listed = page.get("/ui/api/fidelity/reports")
    assert listed.status_code == 200, listed.text
    reports = [r for r in listed.json()["reports"] if r["kind"] == "trajectories"]
    assert len(reports) == 1 and reports[0]["path"] == "run1/report.json"
    assert reports[0]["trajectories"] == "run1/trajectories.jsonl" and reports[0]["html"]
    assert reports[0]["baseline"] == "live" and set(reports[0]["modes"]) == {"live", "simulated"}
    root = reports[0]["root"]
    opened = page.get("/ui/api/fidelity/report", root=root, path="run1/report.json")
    assert opened.status_code == 200, opened.text
    on_disk = json.loads((page.data / "run1" / "report.json").read_text())
    assert opened.json()["kind"] == "trajectories" and opened.json()["report"] == on_disk
    html = page.get("/ui/api/fidelity/report.html", root=root, path="run1/report.json")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert html.text == (page.data / "run1" / "report.html").read_text()
    assert "sandbox" in html.headers["content-security-policy"]


def _wait_for_run(page: Page, run_id: str, seen: list[tuple[int, int | None]]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = page.get(f"/ui/api/fidelity/runs/{run_id}").json()
        seen.append((state["done"], state["total"]))
        if state["state"] != "running":
            return state
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} still running: {state}")


def test_a_call_fidelity_run_for_chosen_tools(page: Page) -> None:
    tools = page.get("/ui/api/fidelity/tools").json()
    assert {"server": "fx", "tool": "echo"}.items() <= next(t for t in tools["tools"] if t["tool"] == "echo").items()
    assert tools["default_backend"] == "examples"
    started = page.post("/ui/api/fidelity/runs", {"tools": ["fx/echo", "fx/counter"], "backend": "examples"})
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["state"] == "running" and run["tools"] == ["fx/counter", "fx/echo"]
    seen: list[tuple[int, int | None]] = []
    final = _wait_for_run(page, run["id"], seen)
    assert final["state"] == "done", final
    # echo ×2 and counter ×2 recordings, few-shot and zero-shot: 8 calls scored, counted as they went.
    assert (final["done"], final["total"]) == (8, 8)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert set(final["summary"]) == {"few_shot", "zero_shot"} and final["summary"]["few_shot"]["calls"] == 4

    report = page.get("/ui/api/fidelity/report", **final["report"])
    assert report.status_code == 200, report.text
    document = report.json()["report"]
    assert report.json()["kind"] == "calls" and document["backend"] == "examples"
    assert {(c["server"], c["tool"]) for c in document["calls"]} == {("fx", "echo"), ("fx", "counter")}
    assert any(r["path"] == final["report"]["path"] for r in page.get("/ui/api/fidelity/reports").json()["reports"])
    assert (page.work / "state" / "reports" / final["report"]["path"]).is_file()
    assert page.get("/ui/api/fidelity/runs").json()["runs"][0]["id"] == run["id"]


@pytest.mark.parametrize("body, status, message", [
    ({"tools": ["fx/nope"]}, 400, "nothing recorded for 'fx/nope'"),
    ({"tools": []}, 400, "tools: List should have at least 1 item"),
    ({"tools": ["fx/echo"], "backend": "openai"}, 400, "backend: Input should be"),
    ({"tools": ["fx/echo"], "setting": "both_ways"}, 400, "setting: Input should be"),
])
def test_bad_fidelity_runs_are_refused(page: Page, body: dict[str, Any], status: int, message: str) -> None:
    refused = page.post("/ui/api/fidelity/runs", body)
    assert refused.status_code == status and message in refused.json()["error"], refused.text
    assert page.get("/ui/api/fidelity/runs/nope").status_code == 404


# ---------------------------------------------------------------------------------------------- trajectories


def test_trajectory_files_and_one_as_a_conversation(page: Page) -> None:
    files = page.get("/ui/api/trajectories/files").json()
    assert sorted(f["path"] for f in files["files"]) == ["run1/trajectories.jsonl", "run2/trajectories.jsonl"]
    root = files["files"][0]["root"]
    listed = page.get("/ui/api/trajectories/list", root=root, path="run1/trajectories.jsonl").json()
    assert [(t["id"], t["mode"], t["tool_calls"]) for t in listed["trajectories"]] == [
        ("t1", "live", 3), ("t1", "simulated", 3), ("t2", "live", 1), ("t2", "simulated", 2)]
    assert listed["tasks"] == [{"task": "t1#0", "modes": {"live": 0, "simulated": 1}},
                               {"task": "t2#0", "modes": {"live": 2, "simulated": 3}}]

    one = page.get("/ui/api/trajectories/one", root=root, path="run1/trajectories.jsonl", index=1).json()
    assert one["mode"] == "simulated" and one["final_answer"] == "four"
    assert [t["role"] for t in one["turns"]] == ["user"] + ["assistant", "tool"] * 3 + ["assistant"]
    assert [call["source"] for call in one["calls"]] == ["simulator"] * 3
    asked = [t["tool_calls"][0] for t in one["turns"] if t.get("tool_calls")]
    answered = [t for t in one["turns"] if t["role"] == "tool"]
    assert [a["call"] for a in asked] == [0, 1, 2] and [t["call"] for t in answered] == [0, 1, 2]
    assert json.loads(asked[1]["arguments"]) == {"numbers": [1, 3]} == one["calls"][1]["arguments"]
    # Redacted as everything the gateway answers: the vault secret in the file does not come out.
    secret = page.get("/ui/api/trajectories/one", root=root, path="run1/trajectories.jsonl", index=3)
    assert secret.status_code == 200 and SECRET not in secret.text and "echo" in secret.text


def test_unreadable_lines_are_named_and_skipped(page: Page) -> None:
    root = page.get("/ui/api/trajectories/files").json()["files"][0]["root"]
    listed = page.get("/ui/api/trajectories/list", root=root, path="run2/trajectories.jsonl").json()
    assert [t["index"] for t in listed["trajectories"]] == [0, 3]  # blank lines are not counted
    assert [(p["line"], p["index"]) for p in listed["problems"]] == [(2, 1), (4, 2)]
    assert "not valid JSON" in listed["problems"][0]["error"] and "not a JSON object" in listed["problems"][1]["error"]
    broken = page.get("/ui/api/trajectories/one", root=root, path="run2/trajectories.jsonl", index=1)
    assert broken.status_code == 422 and broken.json()["error"].startswith("line 2 of trajectories.jsonl: not valid")
    assert page.get("/ui/api/trajectories/one", root=root, path="run2/trajectories.jsonl", index=3).json()["id"] == "t1"
    bad_index = page.get("/ui/api/trajectories/one", root=root, path="run2/trajectories.jsonl", index="x")
    assert bad_index.status_code == 400 and "index must be an integer" in bad_index.json()["error"]


def test_side_by_side_marks_the_first_divergence(page: Page) -> None:
    root = page.get("/ui/api/trajectories/files").json()["files"][0]["root"]
    both = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=0, right=1).json()
    assert both["same_task"] and both["first_divergence"] == 1
    assert both["divergence"]["reason"] == "different arguments"
    # Step 1 is the second tool call: asked in message 3 on both sides (user, call 0, answer 0, call 1).
    assert both["divergence"]["left"] == {"call": 1, "turn": 3} == both["divergence"]["right"]
    assert both["left"]["mode"] == "live" and both["right"]["mode"] == "simulated"

    shorter = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=2,
                       right=3).json()
    assert shorter["first_divergence"] == 1 and shorter["divergence"]["reason"] == "left stops calling tools"
    assert shorter["divergence"]["left"] == {"call": None, "turn": 3}  # its final answer
    assert shorter["divergence"]["right"] == {"call": 1, "turn": 3}
    same = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=0,
                    right=0).json()
    assert same["first_divergence"] is None and same["divergence"] is None
    across = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=0,
                      right_root=root, right_path="run2/trajectories.jsonl", right=3).json()  # line 5 of run2
    assert across["same_task"] and across["first_divergence"] is None and across["calls"] == {"left": 3, "right": 3}
    escaping = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=0,
                        right_root=root, right_path="../outside.jsonl", right=0)
    assert escaping.status_code == 403
    beyond = page.get("/ui/api/trajectories/compare", root=root, path="run1/trajectories.jsonl", left=0, right=9)
    assert beyond.status_code == 404 and "no trajectory 9" in beyond.json()["error"]


def test_only_files_under_the_configured_directories_open(page: Page) -> None:
    outside = page.work / "outside.jsonl"  # a trajectory file just outside the data directory
    outside.write_text((page.data / "run1" / "trajectories.jsonl").read_text())
    (page.work / "report.json").write_text((page.data / "run1" / "report.json").read_text())
    (page.data / "escape.jsonl").symlink_to(outside)
    (page.data / "escape_dir").symlink_to(page.work, target_is_directory=True)
    files = page.get("/ui/api/trajectories/files").json()
    root = next(r["root"] for r in files["roots"] if r["directory"] == str(page.data))
    assert all("escape" not in f["path"] for f in files["files"])
    for path, status in [("../outside.jsonl", 403), (str(outside), 403), ("run1/../../outside.jsonl", 403),
                         ("escape_dir/data/run1/../../outside.jsonl", 403),
                         ("escape.jsonl", 403), ("escape_dir/outside.jsonl", 403), ("run1/report.json", 403),
                         ("missing.jsonl", 404), ("", 400)]:
        for endpoint in ("/ui/api/trajectories/list", "/ui/api/trajectories/one"):
            answer = page.get(endpoint, root=root, path=path)
            assert answer.status_code == status, (path, answer.text)
    for bad_root in ("99", "-1", "x"):
        answer = page.get("/ui/api/trajectories/list", root=bad_root, path="run1/trajectories.jsonl")
        assert answer.status_code == 400 and "root must be one of" in answer.json()["error"]
    report = page.get("/ui/api/fidelity/report", root=root, path="../report.json")
    assert report.status_code == 403
    report = page.get("/ui/api/fidelity/report", root=root, path="escape_dir/report.json")
    assert report.status_code == 403


def _hostile_files(directory: Path) -> None:
    """Files of a data directory someone else wrote: each valid JSON lines or report by its first look."""
    good = {"id": "h", "messages": [{"role": "user", "content": "q"}], "tool_events": []}
    lines = {"deep.jsonl": "[" * 100_000 + "]" * 100_000,  # json.loads: RecursionError
             "bigint.jsonl": '{"id": "h", "messages": [], "repeat": ' + "9" * 5000 + "}",  # int(): ValueError
             "repeat.jsonl": json.dumps({**good, "repeat": ["x"]}),
             "ids.jsonl": json.dumps({**good, "tool_events": [{"call_id": [1], "name": "a"}],
                                      "messages": [{"role": "tool", "tool_call_id": {"a": 1}}]}),
             "nan.jsonl": '{"id": "h", "messages": [], "tool_events": [{"name": "a", "arguments": NaN}]}'}
    directory.mkdir()
    for name, line in lines.items():
        (directory / name).write_text(json.dumps(good) + "\n" + line + "\n")
    (directory / "loop.jsonl").symlink_to(directory / "loop.jsonl")
    os.mkfifo(directory / "pipe.jsonl")  # opened to read its first line, it would block a worker thread forever
    for name, text in {"shapes": json.dumps({"settings": [1], "calls": 1, "backend": "x"}),
                       "modes": json.dumps({"baseline": 1, "comparisons": 1, "modes": [1]}),
                       "deep": "[" * 100_000 + "]" * 100_000}.items():
        (directory / name).mkdir()
        (directory / name / "report.json").write_text(text)
    (directory / "fifo").mkdir()
    os.mkfifo(directory / "fifo" / "report.json")


def test_hostile_files_in_a_data_directory_get_precise_errors_not_500(page: Page) -> None:
    hostile = page.data / "hostile"
    _hostile_files(hostile)
    try:
        for listing in ("/ui/api/trajectories/files", "/ui/api/fidelity/reports"):
            answer = httpx.get(page.url + listing, headers=page.admin, timeout=10, trust_env=False)
            assert answer.status_code == 200, (listing, answer.text)  # one bad file breaks (or hangs) no listing
        root = next(r["root"] for r in page.get("/ui/api/trajectories/files").json()["roots"]
                    if r["directory"] == str(page.data))
        for name in ("deep", "bigint", "repeat", "ids", "nan"):
            path = f"hostile/{name}.jsonl"
            listed = page.get("/ui/api/trajectories/list", root=root, path=path)
            assert listed.status_code == 200 and listed.json()["trajectories"][0]["id"] == "h", (name, listed.text)
            for index in (0, 1):
                one = page.get("/ui/api/trajectories/one", root=root, path=path, index=index)
                assert one.status_code in (200, 422), (name, index, one.text)
            compared = page.get("/ui/api/trajectories/compare", root=root, path=path, left=0, right=1)
            assert compared.status_code in (200, 422), (name, compared.text)
        deep = page.get("/ui/api/trajectories/list", root=root, path="hostile/deep.jsonl").json()["problems"]
        assert "nested too deeply" in deep[0]["error"]
        report = page.get("/ui/api/fidelity/report", root=root, path="hostile/deep/report.json")
        assert report.status_code == 422 and "nested too deeply" in report.json()["error"]
        for path, message in [("hostile/loop.jsonl", "a loop of symbolic links"), ("hostile/pipe.jsonl", "no file"), ("a" * 5000 + ".jsonl", "too long"),
                              ("x.jsonl\x00", "NUL")]:
            answer = page.get("/ui/api/trajectories/list", root=root, path=path)
            assert answer.status_code in (400, 404) and message in answer.json()["error"], (path[:20], answer.text)
            assert len(answer.text) < 1000  # the path named, not echoed whole
        assert "Traceback" not in (page.work / "gateway.log").read_text()
    finally:
        for file in sorted(hostile.rglob("*"), key=lambda f: -len(f.parts)):
            file.rmdir() if file.is_dir() and not file.is_symlink() else file.unlink()
        hostile.rmdir()


# ---------------------------------------------------------------------------------------------- auth


ROUTES = [("GET", "/ui/api/recordings"), ("GET", "/ui/api/recordings/" + "a" * 64),
          ("POST", "/ui/api/recordings/delete"), ("POST", "/ui/api/recordings/export"),
          ("GET", "/ui/api/fidelity/reports"), ("GET", "/ui/api/fidelity/report"),
          ("GET", "/ui/api/fidelity/report.html"), ("GET", "/ui/api/fidelity/tools"), ("GET", "/ui/api/fidelity/runs"),
          ("POST", "/ui/api/fidelity/runs"), ("GET", "/ui/api/fidelity/runs/x"), ("GET", "/ui/api/trajectories/files"),
          ("GET", "/ui/api/trajectories/list"), ("GET", "/ui/api/trajectories/one"),
          ("GET", "/ui/api/trajectories/compare")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_the_data_api_needs_the_admin_key(page: Page, method: str, path: str) -> None:
    def send(headers: dict[str, str]) -> httpx.Response:
        return httpx.request(method, page.url + path, headers=headers, json={"keys": ["a" * 64]} if method == "POST"
                             else None, timeout=30, trust_env=False)

    assert send({}).status_code == 401
    assert send({"Authorization": "Bearer sgk_nope_nope"}).status_code == 401
    refused = send(page.agent)
    assert refused.status_code == 403 and "API key 'agent' may not use" in refused.json()["error"]
    foreign = send({**page.admin, "Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert send(page.admin).status_code not in (401, 403)


# ---------------------------------------------------------------------------------------------- in a browser
# Debian's chromium through Playwright (never `playwright install`), on the same gateway: the recordings
# test deletes echo's keys, so it runs after the API tests above (file order) that use them.

ARTEFACTS = Path(os.environ.get("SIMGATE_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "simgate-test-artefacts")
CHROMIUM = "/usr/bin/chromium"


@asynccontextmanager
async def logged_in(page_: Page) -> AsyncIterator[Any]:
    """A fresh browser, logged in through the page's own form with the admin key."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            tab = await context.new_page()
            await tab.goto(page_.url + "/ui/")
            await tab.fill("#key", page_.admin["Authorization"].removeprefix("Bearer "))
            await tab.click("button[type=submit]")
            await expect(tab.locator("#nav a[data-view=trajectories]")).to_have_count(1)
            problems = watch_for_errors(tab)
            yield tab
            assert problems == []
        finally:
            await browser.close()


def watch_for_errors(tab: Any) -> list[str]:
    """The page must run clean: no script error, nothing refused (the CSP included)."""
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("console", lambda message: message.type == "error" and problems.append(f"{message.text} {message.location}"))
    return problems


async def screenshot(tab: Any, name: str) -> None:
    directory = ARTEFACTS / "ui"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    await tab.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@pytest.mark.anyio
async def test_recordings_view_shows_cache_show_and_exports_then_deletes_a_selection(page: Page,
                                                                                     tmp_path: Path) -> None:
    async with logged_in(page) as tab:
        await tab.goto(page.url + "/ui/#/recordings")
        rows = tab.locator("#recordings tbody tr")
        await expect(rows).to_have_count(page.get("/ui/api/recordings").json()["total"])
        await tab.select_option("#rec-tool", "counter")
        await expect(rows).to_have_count(1)
        await rows.first.click()
        shown = tab.locator("#recording-json")
        await expect(shown).to_contain_text('"structuredContent"')
        key = await shown.get_attribute("data-key")
        cli = simgate("cache", "show", key, "--config", page.config)
        assert json.loads(await shown.inner_text()) == json.loads(cli.stdout)  # the page equals the CLI
        await screenshot(tab, "recordings")

        await tab.select_option("#rec-tool", "echo")
        await expect(rows).to_have_count(2)
        await tab.fill("#rec-search", "alph")
        await tab.press("#rec-search", "Enter")
        await expect(rows).to_have_count(1)
        await tab.fill("#rec-search", "")
        await tab.click("#rec-search-go")
        await expect(rows).to_have_count(2)
        await tab.check("#rec-all")
        async with tab.expect_download() as downloading:
            await tab.click("#rec-export")
        saved = tmp_path / "cassette.jsonl"
        await (await downloading.value).save_as(saved)
        lines = [json.loads(line) for line in saved.read_text().splitlines()]
        assert lines[0]["count"] == 2 and {r["arguments"]["text"] for r in lines[1:]} == {"alpha", "beta"}
        await expect(tab.locator("#recordings-status")).to_contain_text("exported 2 recording(s)")

        await tab.click("#rec-delete")
        await expect(tab.locator("#rec-delete")).to_have_text("Really delete 2 key(s)?")
        await tab.click("#rec-delete")
        await expect(tab.locator("#recordings-status")).to_contain_text("deleted 2 key(s)")
        await expect(rows).to_have_count(0)
        assert simgate("cache", "ls", "--config", page.config, "--json", "--tool", "echo").returncode == 2


@pytest.mark.anyio
async def test_fidelity_view_opens_a_report_and_runs_chosen_tools_with_progress(page: Page) -> None:
    async with logged_in(page) as tab:
        await tab.goto(page.url + "/ui/#/fidelity")
        listed = tab.locator('#reports tbody tr[data-path="run1/report.json"]')
        await expect(listed).to_have_count(1)
        await listed.get_by_role("button", name="Open").click()
        detail = tab.locator("#report-detail")
        await expect(detail.locator("#modes tbody tr")).to_have_count(2)
        report = json.loads((page.data / "run1" / "report.json").read_text())
        for mode, summary in report["modes"].items():
            cells = await detail.locator("#modes tbody tr", has_text=mode).locator("td").all_inner_texts()
            assert cells[:4] == [mode, str(summary["trajectories"]), str(summary["tasks"]),
                                 f"{summary['success_rate'] * 100:.1f}%"]
            assert float(cells[4]) == pytest.approx(summary["mean_tool_calls"], abs=0.005)
        async with tab.context.expect_page() as opening:
            await tab.click("#report-html")
        html = await opening.value
        await expect(html.locator("h1")).to_contain_text("trajectory-level fidelity")
        assert await html.locator("table").count() >= 2
        await html.close()

        await tab.check('#run-tools input[data-tool="fx/counter"]')
        await tab.check('#run-tools input[data-tool="fx/fail"]')
        await tab.click("#run-start")
        progress = tab.locator("#run-progress-text")
        # counter ×2 and fail ×1 recordings, few-shot and zero-shot: 6 calls.
        await expect(progress).to_have_text("6 / 6 calls scored · done", timeout=60_000)
        assert await tab.locator("#run-progress").get_attribute("value") == "6"
        await expect(detail.locator("section[data-kind=calls]")).to_have_count(1)
        await expect(detail.locator("#per-tool-few_shot tbody tr")).to_have_count(2)
        await expect(tab.locator("#runs tbody tr[data-state=done]").first).to_be_visible()
        await screenshot(tab, "fidelity")


@pytest.mark.anyio
async def test_trajectories_view_reads_a_conversation_and_marks_the_first_divergence(page: Page) -> None:
    async with logged_in(page) as tab:
        # From the trajectory fidelity report to the trajectories it compared.
        await tab.goto(page.url + "/ui/#/fidelity")
        await tab.locator('#reports tbody tr[data-path="run1/report.json"]').get_by_role("button", name="Open").click()
        await tab.click("#report-trajectories")
        root = page.get("/ui/api/trajectories/files").json()["files"][0]["root"]
        await expect(tab.locator("#traj-file")).to_have_value(f"{root}:run1/trajectories.jsonl")
        rows = tab.locator("#trajectories tbody tr")
        await expect(rows).to_have_count(4)
        await rows.nth(1).click()
        turns = tab.locator("#conversation .turn")
        await expect(turns).to_have_count(8)
        assert await turns.evaluate_all("ts => ts.map(t => t.dataset.role)") == \
            ["user"] + ["assistant", "tool"] * 3 + ["assistant"]
        await expect(tab.locator("#conversation .call [data-source=simulator]")).to_have_count(3)
        await expect(tab.locator("#conversation .turn[data-turn='3'] .call")).to_contain_text('{"numbers": [1, 3]}')
        await screenshot(tab, "trajectory")

        await tab.click("button[data-compare='t1#0']")
        banner = tab.locator("#divergence")
        await expect(banner).to_have_attribute("data-step", "1")
        await expect(banner).to_contain_text("step 2: different arguments")
        marked = tab.locator("#side-by-side .turn.diverge")
        await expect(marked).to_have_count(2)
        assert await marked.evaluate_all("ts => ts.map(t => t.dataset.turn)") == ["3", "3"]
        await expect(tab.locator("#left .turn.diverge")).to_contain_text('{"numbers": [1, 2]}')
        await expect(tab.locator("#right .turn.diverge")).to_contain_text('{"numbers": [1, 3]}')
        await expect(tab.locator("#left .call [data-source=live]")).to_have_count(3)
        await tab.evaluate("window.scrollTo(0, 0)")  # the view scrolled to the divergence; a full-page shot from the top
        await screenshot(tab, "trajectories-side-by-side")

        await tab.click("button[data-compare='t2#0']")  # the live run stops calling tools after one call
        await expect(banner).to_have_attribute("data-step", "1")
        await expect(tab.locator("#left .turn.diverge")).to_contain_text("short")
        assert SECRET not in await tab.content()

        # Two runs of one task from two files: the simulated run of run1, the live run of run2.
        await tab.check('#trajectories input[data-index="1"]')
        await tab.select_option("#traj-file", f"{root}:run2/trajectories.jsonl")
        await expect(rows).to_have_count(2)
        await tab.check('#trajectories input[data-index="0"]')
        await expect(tab.locator("#traj-compare")).to_have_text("Compare the two selected (two files)")
        await tab.click("#traj-compare")
        await expect(banner).to_have_attribute("data-step", "1")
        await expect(tab.locator("#left [data-mode]")).to_have_attribute("data-mode", "simulated")
        await expect(tab.locator("#right [data-mode]")).to_have_attribute("data-mode", "live")
        await expect(tab.locator("#right .turn.diverge")).to_contain_text('{"numbers": [1, 2]}')


# ---------------------------------------------------------------------------------------------- one run at a time


@pytest.mark.anyio
async def test_run_progress_on_the_page_one_run_at_a_time_and_stopping_the_gateway_cancels_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = DiskStore(state / "cache")
    try:  # enough recorded calls for a run that outlasts the checks below even on an idle machine
        store.put_many([Recording(key=f"{i:064x}", server="fx", tool="echo", tool_fingerprint="0" * 16,
                                  arguments={"text": f"word {i}"}, result={"content": [{"type": "text",
                                                                                       "text": f"word {i}"}]},
                                  latency_ms=1.0, recorded_at="2026-01-01T00:00:00.000+00:00") for i in range(3000)],
                       replace=False)
    finally:
        store.close()
    config = {"gateway": {"state_dir": str(state), "log_level": "info"},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py")}}
    with running_gateway(config, tmp_path) as gateway:  # no keys: the page is open, as the admin API is
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                tab = await browser.new_page(viewport={"width": 1400, "height": 900})
                problems = watch_for_errors(tab)
                await tab.goto(gateway.url + "/ui/#/fidelity")
                await tab.check('#run-tools input[data-tool="fx/echo"]')
                await tab.click("#run-start")
                # Progress shows while the run goes: some of the 6000 calls (3000 recordings, two settings) scored.
                progress = tab.locator("#run-progress-text")
                await expect(progress).to_have_text(re.compile(r"^[1-9]\d* / 6000 calls scored · running$"),
                                                    timeout=30_000)
                await screenshot(tab, "fidelity-run-in-progress")
                assert problems == []
            finally:
                await browser.close()
        url = gateway.url + "/ui/api/fidelity/runs"
        run = httpx.get(url, trust_env=False).json()["runs"][0]
        assert run["state"] == "running" and 0 < run["done"] < run["total"] == 6000
        second = httpx.post(url, json={"tools": ["fx/echo"]}, timeout=30, trust_env=False)
        assert second.status_code == 409, second.text
        assert second.json()["error"] == f"fidelity run {run['id']} is still running; one run at a time"
        started = time.monotonic()
        gateway.terminate()
        assert time.monotonic() - started < 15
        assert '"state": "cancelled"' in gateway.log_text(), gateway.log_text()[-2000:]
    assert not (state / "reports").exists() or not any((state / "reports").iterdir())


def test_calls_without_ids_pair_with_their_answers_in_order() -> None:
    # The agents-SDK adapter may leave call ids empty: the k-th tool answer then belongs to the k-th call.
    run = trajectory("live", LIVE, "three").model_dump(mode="json")
    for event in run["tool_events"]:
        event["call_id"] = ""
    for message in run["messages"]:
        message.pop("tool_call_id", None)
        for call in message.get("tool_calls") or []:
            call["id"] = ""
    view = conversation(run)
    assert [t.get("call") for t in view["turns"] if t["role"] == "tool"] == [0, 1, 2]
    assert [t["tool_calls"][0]["call"] for t in view["turns"] if t.get("tool_calls")] == [0, 1, 2]
