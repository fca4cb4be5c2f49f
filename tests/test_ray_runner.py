"""`simgate run --ray`: trajectories made on a real local Ray cluster (2 CPUs, loopback only) through real
gateways, the tiny real LLM as the agent at temperature 0. Tasks recorded live once; then in replay mode
the Ray run writes the same trajectories as the local runner; a worker killed mid-trajectory is retried
and one killed on every attempt ends as a written error row; a killed driver resumes without duplicates;
without Ray installed, `--ray` is one clear line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Ray's own traffic on loopback only: with this, Ray takes 127.0.0.1 as the node's address (the
# variable is read when ray is imported, here and in every process the tests start).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import anyio  # noqa: E402
import pytest  # noqa: E402
import real_servers as rs  # noqa: E402
from harness import REPO_ROOT, GatewayProcess, kill_once_written, pid_alive, running_gateway, wait_until  # noqa: E402
from llm_server import LLMServer  # noqa: E402

from simgate.runner.run import Job, execute, run_tasks  # noqa: E402
from simgate.runner.settings import RunSettings  # noqa: E402
from simgate.runner.tasks import Task  # noqa: E402

ROOT = rs.default_install_root()
GONE = {"command": "/bin/false"}  # an upstream that cannot start: replay has no live fallback
EVERYTHING_TOOLS = {"allow": ["echo", "get-sum"]}
TASKS = [
    Task(id="calc-1", question="What is 2**10 + 3? Use the calculator.", servers=["calculator"],
         target_tools=["calculator__calculate"], subset_name="single-server"),
    Task(id="sum-1", question="What is 2 plus 40?", servers=["everything"], target_tools=["everything__get-sum"]),
    Task(id="calc-2", question="What is 6 * 7?", servers=["calculator"]),
]
# The two values a trajectory measures rather than decides: when it was made and how long each call took.
MEASURED = re.compile(r'("created_at":"[^"]*"|"latency_ms":[0-9.eE+-]+)')


def _settings(gateway: GatewayProcess, llm: LLMServer, mode: str, **overrides: Any) -> RunSettings:
    values: dict[str, Any] = {"gateway": gateway.url, "mode": mode, "llm_base_url": llm.base_url, "model": "gemma",
                              "agent": "prompted", "max_turns": 2, "max_tokens": 64, "max_string_length": 24,
                              "max_array_items": 3, "temperature": 0.0, "seed": 0, "task_timeout": 180,
                              "run_id": "rec", "progress": False}
    return RunSettings(**{**values, **overrides})


def _ray_processes_of(root: int) -> set[int]:
    """Every Ray process descending from `root` (what ray.init started, and the workers those started)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {pid for pid in found if _is_ray(pid)}


def _is_ray(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read()
    except OSError:
        return False
    # workers and agents are titled ray::…; gcs_server, raylet and Ray's monitors run from its package
    return command.startswith(b"ray::") or b"/site-packages/ray/" in command


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster owned by this process; shut down at the end, every process it started gone."""
    import ray

    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:  # Ray gives its raylet a fixed 30 s to start, too little on a loaded 2-CPU machine
            ray.shutdown()
            if attempt == 2:
                raise
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:")
    try:
        yield address
    finally:
        started = _ray_processes_of(os.getpid())
        ray.shutdown()
        assert wait_until(lambda: not any(pid_alive(pid) for pid in started), timeout=90), "Ray left processes"


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Two pure real servers, every live answer recorded."""
    base = tmp_path_factory.mktemp("live")
    servers = {"calculator": rs.gateway_server("calculator", base / "calculator", ROOT),
               "everything": {**rs.gateway_server("everything", base / "everything", ROOT), "tools": EVERYTHING_TOOLS}}
    config = {"gateway": {"record": "all", "cache_dir": str(base / "cache")}, "mcpServers": servers}
    with running_gateway(config, base / "gw") as live:
        yield live


@pytest.fixture(scope="module")
def replay_gateways(live_gateway: GatewayProcess, llm_server: LLMServer,  # noqa: F811
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    """The tasks recorded live once (local runner, real servers), then two gateways that can only replay
    those recordings (their upstreams cannot start): one world, two gateways."""
    base = tmp_path_factory.mktemp("replay")
    recorded = anyio.run(run_tasks, TASKS, _settings(live_gateway, llm_server, "live"), None)
    assert any(t.tool_events for t in recorded)
    gone = {"calculator": GONE, "everything": {**GONE, "tools": EVERYTHING_TOOLS}}
    replay = {"gateway": {"cache_dir": str(live_gateway.workdir.parent / "cache")}, "mcpServers": gone}
    with running_gateway(replay, base / "a", wait_ready=False) as a, \
            running_gateway(replay, base / "b", wait_ready=False) as b:
        yield [a, b]


@pytest.fixture(scope="module")
def local_replay(replay_gateways: list[GatewayProcess], llm_server: LLMServer,  # noqa: F811
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the local runner's replay of the tasks, one at a time."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    anyio.run(run_tasks, TASKS, _settings(replay_gateways[0], llm_server, "replay"), out)
    return out


def _blank(match: re.Match[str]) -> str:
    return match.group(0).split(":")[0] + ":null"


def _comparable(path: Path) -> dict[str, str]:
    """Each line by its trajectory's key, with the two measured values blanked and nothing else touched."""
    lines = path.read_bytes().decode().splitlines()
    keyed = {}
    for line in lines:
        record = json.loads(line)
        keyed[f"{record['id']}/{record['mode']}#{record['repeat']}"] = MEASURED.sub(
            _blank, line)
    assert len(keyed) == len(lines), "a trajectory written twice"
    return keyed


# What the agent's LLM wrote. llama.cpp at temperature 0 is not bit-stable across different request histories
# (its prompt cache): in live mode, after other stages' requests, a token may differ (seen: usage 85 vs 86
# completion tokens for the same messages). Replay-mode equality, text included, is the first test's.
GENERATED = ("messages", "tool_events", "usage", "final_answer", "outcome", "error", "checks", "created_at")


def _made(path: Path) -> dict[str, dict[str, Any]]:
    """Each trajectory by key without what its LLM generated: which task, session, tools, agent, extra keys."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    keyed = {f"{r['id']}/{r['mode']}#{r['repeat']}": {k: v for k, v in r.items() if k not in GENERATED}
             for r in records}
    assert len(keyed) == len(records) and all(r["messages"] and r["usage"]["llm_calls"] for r in records)
    return keyed


def _differences(got: Path, want: Path) -> list[str]:
    """Which fields of which trajectories differ (for a failure's message)."""
    mine = {json.loads(line)["id"]: json.loads(line) for line in got.read_text().splitlines()}
    theirs = {json.loads(line)["id"]: json.loads(line) for line in want.read_text().splitlines()}
    found = []
    for key, record in mine.items():
        other = theirs.get(key, {})
        for field in record:
            if field == "tool_events":
                found += [f"{key}.tool_events[{n}].{name}: {event[name]!r} != {theirs_event.get(name)!r}"
                          for n, (event, theirs_event) in enumerate(zip(record[field], other.get(field, []), strict=False))
                          for name in event if name != "latency_ms" and event[name] != theirs_event.get(name)]
            elif field != "created_at" and record[field] != other.get(field):
                found.append(f"{key}.{field}: {json.dumps(record[field])[:300]} != {json.dumps(other.get(field))[:300]}")
    return found


def _judged(path: Path) -> dict[str, Any]:
    """Judged trajectories by key as `_made`, each with its judgement's form (ratings of both dimensions or a
    reason it failed) and judge; whether it succeeded is the tiny model's doing (its input, the agent's
    text, may differ by a token), so not compared."""
    keyed = {}
    for line in path.read_text().splitlines():
        record = {k: v for k, v in json.loads(line).items() if k not in GENERATED}
        field = "response_quality_assessment"
        assessment = record.pop(field)
        ratings = sorted(k for k in assessment if k != "judge")
        assert ratings in (["error"], ["completeness", "conciseness"]), assessment
        keyed[f"{record['id']}/{record['mode']}"] = {**record, field: {"judge": assessment["judge"]}}
    return keyed


@contextmanager
def _simgate(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`simgate ARGS` in its own process group, killed with it if the test ends first."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "simgate", *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _run_args(gateways: list[GatewayProcess], llm: LLMServer, tasks: Path, out: Path, *extra: str) -> list[str]:
    urls = [arg for gateway in gateways for arg in ("--gateway", gateway.url)]
    return ["run", "--tasks", str(tasks), *urls, "--mode", "replay", "--run-id", "rec", "--llm-base-url",
            llm.base_url, "--model", "gemma", "--max-turns", "2", "--max-tokens", "64", "--max-string-length", "24",
            "--out", str(out), "--no-progress", *extra]


def _tasks_file(path: Path, tasks: list[Task]) -> Path:
    path.write_text("".join(task.model_dump_json(exclude_none=True) + "\n" for task in tasks))
    return path


@pytest.mark.timeout(900)  # the first use of the cluster starts its workers; a loaded 2-CPU machine is slow
def test_ray_run_writes_the_local_runners_trajectories(
        ray_address: str, replay_gateways: list[GatewayProcess], local_replay: Path, llm_server: LLMServer,  # noqa: F811
        tmp_path: Path) -> None:
    out = tmp_path / "ray.jsonl"
    tasks = _tasks_file(tmp_path / "tasks.jsonl", TASKS)
    with _simgate(*_run_args(replay_gateways, llm_server, tasks, out, "--ray", ray_address)) as run:
        _, stderr = run.communicate(timeout=500)
    assert run.returncode == 0, stderr.decode()
    assert "3 written" in stderr.decode()
    local, distributed = _comparable(local_replay), _comparable(out)
    # Byte for byte but for when each was made and the calls' latencies; the order of the lines is the
    # order trajectories finished in (as the local runner's with --concurrency above 1), hence by key.
    assert distributed == local
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(e["source"] == "cache" for r in records for e in r["tool_events"])
    assert any(r["tool_events"] for r in records)


class _WorkerKiller:
    """SIGKILLs the Ray worker running a named job (its process title is `ray::simgate:run:{task id}`),
    at most `times[task id]` times: a machine lost in the middle of a trajectory."""

    def __init__(self, times: dict[str, int]) -> None:
        self.times = dict(times)
        self.killed: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _WorkerKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        seen: set[int] = set()
        while not self._stop.wait(0.02):
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in seen:
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as handle:
                        title = handle.read().split(b"\0")[0].decode(errors="replace")
                except OSError:
                    continue
                task = title.removeprefix("ray::simgate:run:") if title.startswith("ray::simgate:run:") else None
                if task and self.killed.get(task, 0) < self.times.get(task, 0):
                    os.kill(int(entry), signal.SIGKILL)
                    seen.add(int(entry))
                    self.killed[task] = self.killed.get(task, 0) + 1


def test_a_killed_worker_is_retried_and_one_killed_every_time_is_an_error_row(
        ray_address: str, replay_gateways: list[GatewayProcess], local_replay: Path, llm_server: LLMServer,  # noqa: F811
        tmp_path: Path) -> None:
    from simgate.runner.distributed import RayCluster, RayJobs, RayOptions

    out = tmp_path / "faults.jsonl"
    settings = _settings(replay_gateways[0], llm_server, "replay")
    jobs = [Job(task=task, settings=settings) for task in TASKS[:2]]
    with RayCluster(RayOptions(address=ray_address, retries=1)) as cluster:
        runner = RayJobs(cluster, [replay_gateways[0].mcp_url()], in_flight=1)
        with _WorkerKiller({"calc-1": 1, "sum-1": 5}) as killer:
            result = anyio.run(lambda: execute(jobs, out, concurrency=runner.concurrency, progress=False,
                                               runner=runner))
        assert killer.killed == {"calc-1": 1, "sum-1": 2}  # the first attempt and the one retry of each
        assert result.summary.written == 2 and result.summary.not_written == 0
        assert runner.attempts_failed == 3
        # A second run finds both written and runs nothing.
        again = anyio.run(lambda: execute(jobs, out, concurrency=runner.concurrency, progress=False, runner=runner))
        assert again.summary.skipped == 2 and again.summary.written == 0
    rows = _comparable(out)
    assert rows["calc-1/replay#0"] == _comparable(local_replay)["calc-1/replay#0"]  # retried: as if never killed
    failed = json.loads(out.read_text().splitlines()[[json.loads(x)["id"] for x in
                                                      out.read_text().splitlines()].index("sum-1")])
    assert failed["outcome"] == "error" and failed["messages"] == [] and failed["final_answer"] is None
    assert failed["error"].startswith("no attempt finished on the Ray cluster (2 attempts); the last: "
                                      "WorkerCrashedError"), failed["error"]
    assert failed["session"] == "rec/live/sum-1#0" and failed["agent"]["model"] == "gemma"


@pytest.mark.timeout(900)
def test_a_killed_driver_resumes_without_duplicates(
        ray_address: str, replay_gateways: list[GatewayProcess], llm_server: LLMServer,  # noqa: F811
        tmp_path: Path) -> None:
    out = tmp_path / "resume.jsonl"
    tasks = _tasks_file(tmp_path / "tasks.jsonl", TASKS)
    args = _run_args(replay_gateways[:1], llm_server, tasks, out, "--ray", ray_address)
    with _simgate(*args) as first:
        kill_once_written(first, out, timeout=300)
    before = out.read_bytes()
    done = before.count(b"\n")
    assert 1 <= done < len(TASKS), "the kill must come mid-run"
    with _simgate(*args) as second:
        _, stderr = second.communicate(timeout=400)
    assert second.returncode == 0, stderr.decode()
    assert f"{done} already there".encode() in stderr
    after = out.read_bytes()
    assert after.startswith(before) and after.endswith(b"\n")
    written = [json.loads(line)["id"] for line in after.decode().splitlines()]
    assert sorted(written) == sorted(task.id for task in TASKS)


def test_ray_not_installed_is_one_clear_line(tmp_path: Path) -> None:
    tasks = _tasks_file(tmp_path / "tasks.jsonl", TASKS[:1])
    # `sys.modules["ray"] = None` makes `import ray` fail as it does where Ray is not installed.
    code = ("import sys; sys.modules['ray'] = None; from simgate.gateway.cli import main; "
            f"main(['run', '--tasks', {str(tasks)!r}, '--gateway', 'http://127.0.0.1:9/mcp', '--llm-base-url', "
            f"'http://127.0.0.1:9/v1', '--model', 'm', '--out', {str(tmp_path / 'o.jsonl')!r}, '--ray'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "simgate run: --ray needs Ray: pip install 'simgate[ray]'"


@pytest.mark.timeout(1200)
def test_pipeline_stages_on_ray_write_the_local_pipelines_files(
        ray_address: str, live_gateway: GatewayProcess, llm_server: LLMServer, tmp_path: Path) -> None:  # noqa: F811
    """run and judge trajectories declared once, run here and on the cluster (the file's `ray` settings):
    every stage's file the same but for what the LLM wrote (see GENERATED). The synth stage's file is
    written beforehand with the ids it plans, so it resumes with nothing to do (the tiny base model's
    questions ramble past any small token budget; its judgements need not be good to be compared)."""
    import yaml

    stages = {"synth": {"strategy": "single:random", "count": 2, "temperature": 0, "servers": ["calculator"]},
              "run": {"mode": "live", "agent": "prompted", "max_turns": 2, "max_tokens": 64, "max_string_length": 24,
                      "max_array_items": 3, "session_prefix": "pipeline/"},
              "judge_trajectories": {"concurrency": 1, "max_tokens": 48}}
    synthesized = [{**task.model_dump(exclude_none=True), "id": f"single-random-s0-{n:06d}"}
                   for n, task in enumerate([TASKS[0], TASKS[2]])]
    outputs = {}
    for where in ("local", "ray"):
        pipeline = {"dir": where, "gateway": live_gateway.mcp_url(), "stages": stages,
                    "llm": {"base_url": llm_server.base_url, "model": "gemma", "max_tokens": 160},
                    **({"ray": {"address": ray_address, "retries": 1}} if where == "ray" else {})}
        path = tmp_path / f"{where}.yaml"
        path.write_text(yaml.safe_dump(pipeline))
        (tmp_path / where).mkdir()
        (tmp_path / where / "01-synth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in synthesized))
        result = subprocess.run([sys.executable, "-m", "simgate", "pipeline", "run", str(path)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=600,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[where] = tmp_path / where
    names = ["01-synth", "04-run", "05-judge_trajectories"]
    for name in names:
        local, distributed = (outputs[w] / f"{name}.jsonl" for w in ("local", "ray"))
        assert len(local.read_text().splitlines()) == 2, f"{name}: not every record written"
        if name == "01-synth":
            assert distributed.read_bytes() == local.read_bytes()
        elif name == "04-run":
            assert _made(distributed) == _made(local), _differences(distributed, local)
        else:  # the same records, judged the same way (ratings or a failure) by the same judge
            judged, reference = _judged(distributed), _judged(local)
            assert judged == reference, [(k, {f: (v, reference[k].get(f)) for f, v in judged[k].items()
                                              if v != reference[k].get(f)}) for k in judged if judged[k] != reference[k]]
        executor = json.loads((outputs["ray"] / f"{name}.manifest.json").read_text())["executor"]
        assert executor["kind"] == "ray" and executor["address"] == ray_address
        assert json.loads((outputs["local"] / f"{name}.manifest.json").read_text())["executor"] == {"kind": "local"}


def test_gateway_slots_bound_the_jobs_in_flight_and_avoid_the_gateway_that_failed() -> None:
    from simgate.runner.distributed import GatewaySlots

    async def main() -> None:
        slots = GatewaySlots(["a", "b"], in_flight=2)
        assert sorted([await slots.take(None) for _ in range(4)]) == ["a", "a", "b", "b"]
        with anyio.move_on_after(0.3) as waited:
            await slots.take(None)
        assert waited.cancelled_caught  # a fifth job waits for a free slot
        await slots.give("b")
        assert await slots.take(None) == "b"
        await slots.give("a")
        await slots.give("b")  # one in flight on each
        assert await slots.take("a") == "b"  # a retry goes elsewhere when it can
        assert await slots.take("b") == "a"  # and where it must when only that one is free
        await slots.give("a")
        assert await slots.take("a") == "a"

    anyio.run(main)
