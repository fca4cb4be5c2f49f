"""`simgate serve --workers 2`: two real gateway replicas behind one address, real `mcp` clients, a real
fixture server (one copy per replica).

Every client request goes over a fresh connection, so the kernel spreads them over both replicas; the
answers say which replica made them (`X-Simgate-Replica`) and where the request came in
(`X-Simgate-Via`, when it was passed on to the replica that holds the session).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from simgate.gateway.auth.api_keys import KeyStore
from tests.harness import REPO_ROOT, fixture_server, pid_alive, running_gateway, wait_until

pytestmark = pytest.mark.anyio

WORKERS = ("--workers", "2")
CONFIG = {"mcpServers": {"rep": fixture_server("replica_server.py")}}


@dataclass
class Seen:
    """Per answer the gateway gave: (session id sent, replica that answered, replica it came in to)."""

    answers: list[tuple[str | None, int, int]] = field(default_factory=list)

    async def note(self, response: httpx2.Response) -> None:
        replica = int(response.headers["x-simgate-replica"])
        via = response.headers.get("x-simgate-via")
        self.answers.append((response.request.headers.get("mcp-session-id"), replica,
                             int(via) if via is not None else replica))


@asynccontextmanager
async def fresh_session(url: str, seen: Seen, headers: dict[str, str] | None = None
                        ) -> AsyncIterator[tuple[ClientSession, str]]:
    """A client session none of whose requests reuses a connection; yields it and its session id."""
    given: list[str] = []

    async def hook(response: httpx2.Response) -> None:
        await seen.note(response)
        if "mcp-session-id" in response.headers:
            given.append(response.headers["mcp-session-id"])

    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=120), limits=httpx2.Limits(max_keepalive_connections=0),
                              event_hooks={"response": [hook]}, headers=headers or {})
    async with http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert given, "no session id after initialize"
            yield session, given[0]


def text(result: Any) -> str:
    assert result.content and result.content[0].type == "text", result
    return str(result.content[0].text)


def owner(session_id: str) -> int:
    assert session_id.startswith("r") and "-" in session_id, session_id
    return int(session_id[1:].split("-", 1)[0])


def wait_replicas_ready(url: str, count: int = 2, timeout: float = 90) -> None:
    def ready() -> bool:
        try:
            return all(httpx.get(f"{url}/readyz?replica={i}", timeout=5).status_code == 200 for i in range(count))
        except httpx.HTTPError:
            return False

    assert wait_until(ready, timeout=timeout, interval=0.2), f"replicas not ready after {timeout}s"


def descendants(pid: int) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def replica_pids(parent: int) -> dict[int, int]:
    """replica index -> pid of the gateway's replica processes (read from their plan)."""
    pids = {}
    for pid in descendants(parent):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"SIMGATE_REPLICA_PLAN="):
                pids[json.loads(item.split(b"=", 1)[1])["index"]] = pid
    return pids


async def session_work(url: str, seen: Seen, number: int) -> dict[str, Any]:
    """Handshake, list, calls with state kept by the server, a streamed answer; what each said."""
    async with fresh_session(url, seen) as (session, session_id):
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"rep__whoami", "rep__remember", "rep__recall", "rep__progress"} <= tools
        first = text(await session.call_tool("rep__whoami", {}))
        value = f"value-{number}"
        assert text(await session.call_tool("rep__remember", {"key": f"k{number}", "value": value})) == "ok"
        steps: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            steps.append(progress)

        done = await session.call_tool("rep__progress", {"steps": 3}, progress_callback=on_progress)
        assert text(done) == "done 3" and steps == [1, 2, 3]
        recalled = await session.call_tool("rep__recall", {"key": f"k{number}"})
        assert not recalled.is_error and text(recalled) == value, recalled
        assert text(await session.call_tool("rep__whoami", {})) == first
        pid, home = first.split(" ", 1)
        return {"session": session_id, "pid": int(pid), "home": home}


async def test_sessions_over_fresh_connections_stay_with_their_replica(tmp_path: Path) -> None:
    with running_gateway(CONFIG, tmp_path / "gw", serve_args=WORKERS) as gateway:
        wait_replicas_ready(gateway.url)
        seen = Seen()
        results: list[dict[str, Any]] = []
        limit = anyio.Semaphore(4)

        async def one(number: int) -> None:
            async with limit:
                results.append(await session_work(gateway.mcp_url(), seen, number))

        async with anyio.create_task_group() as tg:
            for number in range(16):
                tg.start_soon(one, number)
        assert len(results) == 16

        # Requests came in to both replicas, and both hold sessions.
        assert {came_in for _, _, came_in in seen.answers} == {0, 1}, seen.answers
        assert {owner(r["session"]) for r in results} == {0, 1}, results
        # Every request of a session was answered by its owner, also those that came in to the other replica.
        with_session = [(sid, answered, came_in) for sid, answered, came_in in seen.answers if sid]
        assert all(answered == owner(sid) for sid, answered, _ in with_session), with_session
        assert any(came_in != answered for _, answered, came_in in with_session), "nothing was passed on"
        # One copy of the server per replica, each with its own HOME under the state dir.
        state = (gateway.workdir / ".simgate").resolve()
        for replica in (0, 1):
            mine = [r for r in results if owner(r["session"]) == replica]
            assert len({r["pid"] for r in mine}) == 1, mine
            assert {r["home"] for r in mine} == {str(state / "servers" / "rep" / "replicas" / str(replica) / "home")}
            assert (state / "servers" / "rep" / "replicas" / str(replica) / "stderr.log").exists()
        assert len({r["pid"] for r in results}) == 2

        # /metrics per replica, through the one address: each counts the calls it answered.
        calls = 0
        for replica in (0, 1):
            response = httpx.get(f"{gateway.url}/metrics?replica={replica}", timeout=10)
            assert response.headers["x-simgate-replica"] == str(replica)
            assert f'simgate_replica{{of="2",replica="{replica}"}} 1.0' in response.text
            mine = [line for line in response.text.splitlines() if line.startswith("simgate_tool_calls_total{")]
            assert mine, response.text
            calls += sum(float(line.rsplit(" ", 1)[1]) for line in mine)
        assert calls == 16 * 5
        assert httpx.get(f"{gateway.url}/metrics?replica=2", timeout=10).status_code == 400

        # Sessionless (2026-07-28) requests are answered where they land: by both replicas, none passed on.
        modern = Seen()
        http = httpx2.AsyncClient(timeout=30, limits=httpx2.Limits(max_keepalive_connections=0),
                                  event_hooks={"response": [modern.note]})
        transport = streamable_http_client(gateway.mcp_url(), http_client=http)
        async with http, Client(transport, mode="2026-07-28") as client:
            assert client.protocol_version == "2026-07-28"
            pids = {text(await client.call_tool("rep__whoami", {})).split(" ")[0] for _ in range(16)}
        assert pids == {str(r["pid"]) for r in results}, pids  # each replica's own copy of the server
        assert {answered for _, answered, _ in modern.answers} == {0, 1}, modern.answers
        assert all(sid is None and answered == came_in for sid, answered, came_in in modern.answers), modern.answers

        # A run-time change through the admin API holds on every replica, whichever got it.
        assert httpx.put(f"{gateway.url}/admin/modes", json={"mode": "replay", "server": "rep"},
                         timeout=10).status_code == 200
        for replica in (0, 1):
            modes = httpx.get(f"{gateway.url}/admin/modes?replica={replica}", timeout=10)
            assert modes.headers["x-simgate-replica"] == str(replica)
            assert "replay" in json.dumps(modes.json()), modes.json()
        # A change naming a tool the server does not list is refused once, by the replica that got it, and no
        # replica stores it; clearing a setting (`simgate mode clear`) holds on every replica too.
        typo = httpx.put(f"{gateway.url}/admin/modes", json={"mode": "live", "server": "rep", "tool": "progres"},
                         timeout=10)
        assert typo.status_code == 400 and typo.json()["error"] == \
            "unknown tool 'progres' on server 'rep' (did you mean 'progress'?)", typo.text
        assert httpx.delete(f"{gateway.url}/admin/modes", params={"server": "rep"}, timeout=10).status_code == 200
        for replica in (0, 1):
            modes = httpx.get(f"{gateway.url}/admin/modes?replica={replica}", timeout=10).json()
            assert (modes["servers"], modes["tools"]) == ({}, {}), (replica, modes)


async def test_killed_replica_is_restarted_others_continue_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    # With a client key: requests passed on keep their credential, and a restarted replica still gets the
    # run-time modes from its sibling.
    state = tmp_path / "state"
    _, secret = KeyStore(state / "keys.json").create("tester", servers=["rep"], admin=True)
    auth = {"Authorization": f"Bearer {secret}"}
    config = {**CONFIG, "gateway": {"state_dir": str(state)}}
    with running_gateway(config, tmp_path / "gw", serve_args=WORKERS) as gateway:
        wait_replicas_ready(gateway.url)
        assert httpx.get(f"{gateway.url}/admin/modes?replica=1", timeout=10).status_code == 401
        parent = gateway.process.pid
        seen = Seen()
        async with AsyncExitStack() as stack:
            # Sessions until each replica holds at least one.
            sessions: dict[int, list[tuple[ClientSession, str, int]]] = {0: [], 1: []}
            for number in range(24):
                if sessions[0] and sessions[1]:
                    break
                session, session_id = await stack.enter_async_context(fresh_session(gateway.mcp_url(), seen, auth))
                await session.call_tool("rep__remember", {"key": f"k{number}", "value": f"v{number}"})
                pid = int(text(await session.call_tool("rep__whoami", {})).split(" ", 1)[0])
                sessions[owner(session_id)].append((session, f"k{number}", pid))
            assert sessions[0] and sessions[1], "every session went to one replica"

            # A run-time mode change (of a tool these sessions do not call), which the restarted replica keeps.
            change = {"mode": "simulated", "server": "rep", "tool": "progress"}
            assert httpx.put(f"{gateway.url}/admin/modes", json=change, headers=auth, timeout=30).status_code == 200
            before = replica_pids(parent)
            assert set(before) == {0, 1}, before
            old_upstream = sessions[0][0][2]
            os.kill(before[0], signal.SIGKILL)

            # The other replica's sessions go on, with their state, while replica 0 is down and after.
            for session, key, pid in sessions[1]:
                assert text(await session.call_tool("rep__recall", {"key": key})) == f"v{key[1:]}"
                assert int(text(await session.call_tool("rep__whoami", {})).split(" ", 1)[0]) == pid
            # The parent ends what the killed replica left behind, and starts the replica again.
            assert wait_until(lambda: not pid_alive(old_upstream), timeout=15), "the dead replica's server lives on"
            assert wait_until(lambda: replica_pids(parent).get(0) not in (None, before[0]), timeout=30)
            wait_replicas_ready(gateway.url)
            after = replica_pids(parent)
            assert after[1] == before[1], (before, after)
            modes = httpx.get(f"{gateway.url}/admin/modes?replica=0", headers=auth, timeout=10).json()
            assert modes["tools"].get("rep", {}).get("progress") == "simulated", modes
            for session, key, _pid in sessions[1]:
                assert text(await session.call_tool("rep__recall", {"key": key})) == f"v{key[1:]}"
            # The restarted replica serves new sessions.
            for _ in range(24):
                async with fresh_session(gateway.mcp_url(), seen, auth) as (session, session_id):
                    assert text(await session.call_tool("rep__remember", {"key": "x", "value": "y"})) == "ok"
                    if owner(session_id) == 0:
                        assert int(text(await session.call_tool("rep__whoami", {})).split(" ", 1)[0]) != old_upstream
                        break
            else:
                pytest.fail("no new session went to the restarted replica")

        # SIGTERM: every replica and every server stops, nothing is left.
        everything = descendants(parent)
        assert len(everything) >= 4, everything  # two replicas, two servers
        assert gateway.terminate(timeout=40) == 0, gateway.log_text()[-3000:]
        assert wait_until(lambda: not any(pid_alive(pid) for pid in everything), timeout=10), \
            [pid for pid in everything if pid_alive(pid)]
        assert "exited with code -9; starting it again" in gateway.log_text()


def _serve(workdir: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "simgate.json").write_text(json.dumps(config))
    return subprocess.run([sys.executable, "-m", "simgate", "serve", "simgate.json", *args], cwd=workdir,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60)


def test_a_taken_port_or_a_config_a_replica_refuses_stops_the_gateway_with_one_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        refused = _serve(tmp_path / "taken", CONFIG, "--port", port, "--workers", "2")
    assert refused.returncode == 1 and f"simgate: cannot listen on 127.0.0.1:{port}" in refused.stderr, refused.stderr
    assert "replica 0 started" not in refused.stderr  # nothing was started

    # A missing vault secret is found by each replica as it builds its gateway: not restarted, the gateway stops.
    secret = {"mcpServers": {"rep": {**fixture_server("replica_server.py"), "env": {"TOKEN": "vault:missing"}}}}
    refused = _serve(tmp_path / "vault", secret, "--port", "0", "--workers", "2")
    assert refused.returncode == 1, refused.stderr
    assert "refers to vault secret" in refused.stderr and "refused to start (exit code 2)" in refused.stderr
    assert "starting it again" not in refused.stderr


def test_the_page_session_stays_with_its_replica_and_its_logout_holds_wherever_a_copy_lands(
        tmp_path: Path) -> None:
    """The page's cookie is signed by the replica it logged in at (each has its own secret), and that replica
    alone knows of its logout: over fresh connections, which either replica may get, the cookie works, and
    once logged out (through whichever replica) a copy of it is refused."""
    keys = KeyStore(tmp_path / "keys.json")
    _, admin = keys.create("operator", servers=["*"], admin=True)
    config = {**CONFIG, "gateway": {"keys_path": str(tmp_path / "keys.json")}}
    with running_gateway(config, tmp_path / "gw", serve_args=WORKERS) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:

        def with_cookie(cookie: str, method: str = "GET", path: str = "/ui/api/modes") -> httpx.Response:
            return fresh.request(method, path, headers={"Cookie": f"simgate_ui={cookie}", "X-Simgate-UI": "1"})

        def came_in(response: httpx.Response) -> int:
            return int(response.headers.get("x-simgate-via", response.headers["x-simgate-replica"]))

        wait_replicas_ready(gateway.url)
        logged_out: list[str] = []
        worked: list[httpx.Response] = []
        for _ in range(30):  # until a logout came in to the replica that did not make its cookie (1 in 2 does)
            login = fresh.post("/ui/login", headers={"Authorization": f"Bearer {admin}"})
            assert login.status_code == 200, login.text
            cookie, maker = login.cookies["simgate_ui"], int(login.headers["x-simgate-replica"])
            answers = [with_cookie(cookie) for _ in range(16)]
            assert [answer.status_code for answer in answers] == [200] * 16
            assert {int(answer.headers["x-simgate-replica"]) for answer in answers} == {maker}
            worked.extend(answers)
            out = with_cookie(cookie, "POST", "/ui/logout")
            assert out.status_code == 204 and int(out.headers["x-simgate-replica"]) == maker
            logged_out.append(cookie)
            if came_in(out) != maker:
                break
        else:
            raise AssertionError("no logout came in to the other replica")
        # Fresh connections came in to both replicas (all 16+ to one: 1 chance in 30000).
        assert {came_in(answer) for answer in worked} == {0, 1}
        refused = [with_cookie(cookie) for cookie in logged_out for _ in range(16)]
        assert [answer.status_code for answer in refused] == [401] * len(refused)
        assert {came_in(answer) for answer in refused} == {0, 1}
        again = fresh.post("/ui/login", headers={"Authorization": f"Bearer {admin}"})
        assert with_cookie(again.cookies["simgate_ui"]).status_code == 200


def test_a_client_cannot_pose_as_a_sibling_replica(tmp_path: Path) -> None:
    """The header one replica sets on what it passes to another, forged by a client, without the parent's
    token: ignored. Honoured, an admin change would apply on the replica it reached alone (split modes)."""
    with running_gateway(CONFIG, tmp_path / "gw", serve_args=WORKERS) as gateway:
        wait_replicas_ready(gateway.url)

        def modes() -> list[str]:
            return [httpx.get(f"{gateway.url}/admin/modes?replica={i}", timeout=10).json()["default"] for i in (0, 1)]

        forged = {"X-Simgate-Forwarded-By": "0", "X-Simgate-Replica-Token": "0" * 43}
        for mode in ("replay", "live", "simulated", "live"):
            changed = httpx.put(f"{gateway.url}/admin/modes", json={"mode": mode}, headers=forged, timeout=10)
            assert changed.status_code == 200, changed.text
            assert modes() == [mode, mode]
        token = httpx.get(f"{gateway.url}/_simgate/replica/modes", headers=forged, timeout=10)
        assert token.status_code in (401, 404)  # the siblings' own path needs the parent's token


def test_run_time_changes_from_the_page_and_the_admin_api_reach_every_replica(tmp_path: Path) -> None:
    """A mode set from the page (its cookie checked only by the replica that made it) and a server stopped
    or started through the admin API or the page: every replica has the change when the client hears back,
    wherever the request came in. The siblings' own path for it is closed to clients."""
    keys = KeyStore(tmp_path / "keys.json")
    _, admin = keys.create("operator", servers=["*"], admin=True)
    config = {**CONFIG, "gateway": {"keys_path": str(tmp_path / "keys.json")}}
    bearer = {"Authorization": f"Bearer {admin}"}
    with running_gateway(config, tmp_path / "gw", serve_args=WORKERS) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as fresh:
        wait_replicas_ready(gateway.url)

        def on_each(path: str, pick: Any) -> list[Any]:
            return [pick(fresh.get(f"{path}?replica={i}", headers=bearer).json()) for i in (0, 1)]

        def rep_modes(answer: dict[str, Any]) -> Any:
            return answer["servers"].get("rep")

        def rep_state(answer: dict[str, Any]) -> str:
            return next(server["state"] for server in answer["servers"] if server["name"] == "rep")

        login = fresh.post("/ui/login", headers=bearer)
        page = {"Cookie": f"simgate_ui={login.cookies['simgate_ui']}", "X-Simgate-UI": "1"}
        maker = int(login.headers["x-simgate-replica"])
        came_in: set[int] = set()
        for mode in ("replay", "simulated", "live") * 10:  # until changes came in to both replicas
            changed = fresh.put("/ui/api/modes", json={"mode": mode, "server": "rep"}, headers=page)
            assert changed.status_code == 200 and int(changed.headers["x-simgate-replica"]) == maker, changed.text
            came_in.add(int(changed.headers.get("x-simgate-via", maker)))
            assert on_each("/admin/modes", rep_modes) == [mode, mode]
            if came_in == {0, 1}:
                break
        else:
            raise AssertionError("no change from the page came in to the replica that did not make its cookie")
        dropped = fresh.request("DELETE", "/ui/api/modes?server=rep", headers=page)
        assert dropped.status_code == 200, dropped.text
        assert on_each("/admin/modes", rep_modes) == [None, None]

        assert fresh.post("/admin/servers/rep/stop", headers=bearer).status_code == 202
        assert wait_until(lambda: on_each("/admin/servers", rep_state) == ["stopped", "stopped"], timeout=30)
        assert fresh.post("/ui/api/servers/rep/start", headers=page).status_code == 202
        assert wait_until(lambda: on_each("/admin/servers", rep_state) == ["ready", "ready"], timeout=60)

        # A client cannot use the siblings' path: without the parent's token it does not exist.
        for token in ({}, {"X-Simgate-Replica-Token": "0" * 43, "X-Simgate-Forwarded-By": "0"}):
            posed = fresh.post("/_simgate/replica/apply/admin/servers/rep/stop", headers={**bearer, **token})
            assert posed.status_code == 404, posed.text
        assert on_each("/admin/servers", rep_state) == ["ready", "ready"]
