"""The page at /ui, driven in a real browser (Debian's chromium through Playwright) against a real
gateway with real fixture servers and real `mcp` SDK clients.

Screenshots of each view are kept under $SIMGATE_TEST_ARTEFACTS/ui (default: the temp dir's
simgate-test-artefacts/ui) and their paths printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from harness import REPO_ROOT, GatewayProcess, fixture_server, mcp_session, provenance, running_gateway, wait_until
from mcp.shared.exceptions import MCPError
from playwright.async_api import Page, async_playwright, expect
from test_redaction import SECRET, leaks_in, leaky_server, plant

from simgate.gateway.app import latency_percentiles
from simgate.gateway.auth.api_keys import KeyStore
from simgate.gateway.pipeline.call import ToolCall
from simgate.gateway.pipeline.observe import ObserveCalls
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.ui.auth import SessionCookies
from simgate.gateway.ui.feed import CallEvent, CallFeed, TooManyViewers

pytestmark = pytest.mark.anyio

ARTEFACTS = Path(os.environ.get("SIMGATE_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "simgate-test-artefacts")
CHROMIUM = "/usr/bin/chromium"


class Ui:
    def __init__(self, gateway: GatewayProcess, admin: str, agent: str) -> None:
        self.gateway = gateway
        self.url = gateway.url
        self.admin = admin
        self.agent = agent

    def admin_api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {self.admin}"},
                             timeout=10, trust_env=False, **kwargs)

    def server(self, name: str) -> dict[str, Any]:
        servers = self.admin_api("GET", "/admin/servers").json()["servers"]
        return next(server for server in servers if server["name"] == name)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    work = tmp_path_factory.mktemp("ui")
    plant(work, "api", SECRET)  # a vault secret the `leaky` server echoes: the page must show it redacted
    keys = KeyStore(work / "keys.json")
    _, admin = keys.create("operator", servers=["*"], admin=True)
    _, agent = keys.create("agent-1", servers=["*"])
    config = {"gateway": {"keys_path": str(work / "keys.json"), "record": "all"},
              "mcpServers": {"fx": fixture_server("routing_server.py"), "leaky": leaky_server()}}
    with running_gateway(config, work) as gateway:
        yield Ui(gateway, admin, agent)


@asynccontextmanager
async def logged_in(ui: Ui) -> AsyncIterator[Page]:
    """A fresh browser, logged in through the page's own form."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            response = await page.goto(ui.url + "/ui/")
            assert response is not None and response.status == 401  # no key yet: the login form
            await screenshot(page, "login")
            await page.fill("#key", ui.admin)
            await page.click("button[type=submit]")
            await expect(page.locator("#nav a[data-view=modes]")).to_have_count(1)
            # From here on the page must run clean: no script error, nothing refused (the CSP included).
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda message: message.type == "error" and problems.append(f"{message.text} {message.location}"))
            yield page
            assert problems == []
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> None:
    directory = ARTEFACTS / "ui"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def agent_headers(ui: Ui) -> dict[str, str]:
    return {"Authorization": f"Bearer {ui.agent}"}


# ---------------------------------------------------------------------------------------------- views


async def test_a_client_call_appears_in_the_live_table_redacted(ui: Ui) -> None:
    async with logged_in(ui) as page:
        await page.goto(ui.url + "/ui/#/calls")
        await expect(page.locator("#stream-state")).to_have_text("open")
        async with mcp_session(ui.gateway.mcp_url(), headers=agent_headers(ui)) as client:
            await client.call_tool("fx__echo", {"text": "seen on the page"})
            leaked = await client.call_tool("leaky__leak_text", {})
        assert "[REDACTED:api]" in leaked.content[0].text  # what the client itself gets

        echo = page.locator("#calls tbody tr", has_text="echo")
        await expect(echo).to_have_count(1)
        cells = await echo.locator("td").all_inner_texts()
        assert cells[1:] == ["agent-1", cells[2], "fx", "echo", "live", "live", cells[7], "ok"], cells
        assert cells[2] and cells[2] != "–"  # the session
        await echo.click()
        detail = page.locator("#call-detail")
        await expect(detail).to_contain_text('"text": "seen on the page"')
        await expect(detail).to_contain_text("echo: seen on the page")

        await page.locator("#calls tbody tr", has_text="leak_text").click()
        await expect(detail).to_contain_text("[REDACTED:api]")
        assert leaks_in(await page.content()) == []

        await page.fill("input[data-filter=tool]", "leak")
        await expect(page.locator("#calls tbody tr")).to_have_count(1)
        await screenshot(page, "calls")


async def test_flipping_a_server_to_replay_on_the_page_makes_the_next_call_come_from_the_cache(ui: Ui) -> None:
    async with mcp_session(ui.gateway.mcp_url(), headers=agent_headers(ui)) as client:
        first = await client.call_tool("fx__echo", {"text": "replay me"})
        assert provenance(first)["source"] == "live"
        try:
            async with logged_in(ui) as page:
                await page.goto(ui.url + "/ui/#/modes")
                choice = page.locator("select[data-level=server][data-server=fx]")
                await choice.select_option("replay")
                await expect(page.locator("#view-modes .status")).to_have_text("fx: replay")
                await expect(choice).to_have_value("replay")
                assert ui.admin_api("GET", "/admin/modes").json()["servers"] == {"fx": "replay"}  # the CLI agrees
                await expect(page.locator("tr.tool[data-tool=echo] td[data-effective]")).to_have_text(
                    "→ replay (server)")
                await screenshot(page, "modes")
                second = await client.call_tool("fx__echo", {"text": "replay me"})
                assert provenance(second)["source"] == "cache"
                assert second.content == first.content

                await choice.select_option("(inherit)")  # the run-time setting dropped: the gateway's default again
                await expect(page.locator("#view-modes .status")).to_have_text("fx: (inherit)")
                assert ui.admin_api("GET", "/admin/modes").json()["servers"] == {}
                third = await client.call_tool("fx__echo", {"text": "replay me"})
                assert provenance(third)["source"] == "live"
        finally:
            ui.admin_api("DELETE", "/admin/modes?server=fx")


async def test_servers_view_shows_tools_and_restarts_stops_and_starts_a_server(ui: Ui) -> None:
    before = ui.server("fx")["latency_ms"]["count"]
    async with mcp_session(ui.gateway.mcp_url(), headers=agent_headers(ui)) as client:
        for index in range(5):
            await client.call_tool("fx__echo", {"text": f"timed {index}"})
    latency = ui.server("fx")["latency_ms"]
    assert latency["count"] == before + 5 and 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    restarts = ui.server("fx")["restarts"]
    async with logged_in(ui) as page:
        await page.goto(ui.url + "/ui/#/servers")
        row = page.locator("#servers tr[data-server=fx]")
        await expect(row).to_have_attribute("data-state", "ready")
        p50 = await row.locator("td").nth(6).inner_text()
        assert p50.endswith(" ms"), p50  # upstream latency measured
        await page.locator("#servers tr[data-server=fx] a").click()
        await expect(page.locator("#server-detail details[data-tool=echo]")).to_have_count(1)
        await page.locator("#server-detail details[data-tool=echo] summary").click()
        await expect(page.locator("#server-detail details[data-tool=echo]")).to_contain_text('"properties"')
        await screenshot(page, "servers")

        await row.locator("button[data-action=restart]").click()
        assert wait_until(lambda: ui.server("fx")["restarts"] == restarts + 1 and ui.server("fx")["state"] == "ready",
                          timeout=20)
        await expect(row.locator("td").nth(5)).to_have_text(str(restarts + 1))

        await row.locator("button[data-action=stop]").click()
        await expect(page.locator("#servers tr[data-server=fx]")).to_have_attribute("data-state", "stopped")
        assert ui.admin_api("POST", "/admin/servers/fx/stop").status_code == 202  # twice: still one start to go
        async with mcp_session(ui.gateway.mcp_url(), headers=agent_headers(ui)) as client:
            with pytest.raises(MCPError, match="stopped"):
                await client.call_tool("fx__echo", {"text": "while stopped"})
            await page.locator("#servers tr[data-server=fx] button[data-action=start]").click()
            await expect(page.locator("#servers tr[data-server=fx]")).to_have_attribute("data-state", "ready",
                                                                                        timeout=20_000)
            again = await client.call_tool("fx__echo", {"text": "after start"})
            assert provenance(again)["source"] == "live"


def simgate(ui: Ui, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "simgate", *args, "--url", ui.url], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                                                        "SIMGATE_API_KEY": ui.admin})
    assert done.returncode == 0, done.stderr
    return done


async def test_the_cli_and_the_page_agree(ui: Ui) -> None:
    async with logged_in(ui) as page:
        ui.admin_api("PUT", "/admin/modes", json={"mode": "simulated", "server": "leaky", "tool": "leak_text"})
        simgate(ui, "servers", "--stop", "leaky")
        try:
            await page.goto(ui.url + "/ui/#/modes")
            await expect(page.locator("select[data-level=tool][data-server=leaky][data-tool=leak_text]")).to_have_value(
                "simulated")
            simgate(ui, "mode", "clear", "--server", "leaky", "--tool", "leak_text")
            await page.reload()
            await expect(page.locator("select[data-level=tool][data-server=leaky][data-tool=leak_text]")).to_have_value(
                "(inherit)")
            await page.goto(ui.url + "/ui/#/servers")
            await expect(page.locator("#servers tr[data-server=leaky]")).to_have_attribute("data-state", "stopped")
        finally:
            simgate(ui, "servers", "--start", "leaky")
        await expect(page.locator("#servers tr[data-server=leaky]")).to_have_attribute("data-state", "ready",
                                                                                       timeout=20_000)
    assert ui.admin_api("GET", "/admin/modes").json()["tools"] == {}


# ---------------------------------------------------------------------------------------------- access


def test_without_the_admin_key_the_page_and_its_api_refuse(ui: Ui) -> None:
    def get(path: str, **headers: str) -> httpx.Response:
        return httpx.get(ui.url + path, headers=headers, timeout=10, trust_env=False)

    for path in ("/ui/", "/ui/api/servers", "/ui/api/modes", "/ui/api/calls/stream", "/ui/static/app.js",
                 "/ui/static/views/calls.js"):
        assert get(path).status_code == 401, path
        assert get(path, Authorization="Bearer sgk_nope_nope").status_code == 401, path
        assert get(path, Authorization=f"Bearer {ui.agent}").status_code == 403, path  # not an admin key
        assert get(path, Cookie="simgate_ui=forged.99999999999.00").status_code == 401, path
        assert get(path, Cookie="simgate_ui=operator." + "9" * 5000 + ".00").status_code == 401, path  # int() limit
    assert get("/ui/api/servers", Authorization=f"Bearer {ui.admin}").status_code == 200
    assert httpx.post(ui.url + "/ui/api/servers/fx/restart", timeout=10, trust_env=False).status_code == 401
    assert httpx.put(ui.url + "/ui/api/modes", json={"mode": "replay"}, timeout=10,
                     headers={"Authorization": f"Bearer {ui.agent}"}, trust_env=False).status_code == 403
    assert get("/ui/login").status_code == 200  # the form itself needs no key

    # The session cookie: HttpOnly, SameSite=Strict, and alone it changes nothing.
    with httpx.Client(base_url=ui.url, timeout=10, trust_env=False) as browser:
        assert browser.post("/ui/login", headers={"Authorization": f"Bearer {ui.agent}"}).status_code == 403
        login = browser.post("/ui/login", headers={"Authorization": f"Bearer {ui.admin}"})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and ui.admin.lower() not in cookie
        assert browser.get("/ui/api/modes").status_code == 200
        assert browser.put("/ui/api/modes", json={"mode": "replay"}).status_code == 403  # no X-Simgate-UI
        assert browser.get("/ui/api/modes").json()["default"] == "live"
    assert ui.admin not in ui.gateway.log_text()


def test_logging_out_ends_the_session_so_a_copied_cookie_is_refused(ui: Ui) -> None:
    def with_cookie(method: str, path: str, cookie: str | None, **headers: str) -> httpx.Response:
        sent = {**headers, **({"Cookie": f"simgate_ui={cookie}"} if cookie is not None else {})}
        return httpx.request(method, ui.url + path, headers=sent, timeout=10, trust_env=False)

    with httpx.Client(base_url=ui.url, timeout=10, trust_env=False) as browser:
        assert browser.post("/ui/login", headers={"Authorization": f"Bearer {ui.admin}"}).status_code == 200
        copied = browser.cookies["simgate_ui"]
        assert with_cookie("GET", "/ui/api/modes", copied).status_code == 200
        # Logging out by cookie is a change: without `X-Simgate-UI` it is refused and ends nothing.
        assert browser.post("/ui/logout").status_code == 403
        assert with_cookie("GET", "/ui/api/modes", copied).status_code == 200
        out = browser.post("/ui/logout", headers={"X-Simgate-UI": "1"})
        assert out.status_code == 204 and "max-age=0" in out.headers["set-cookie"].lower()
        assert "simgate_ui" not in browser.cookies

    # The copy is refused as an expired cookie is: 401 from the API, the login form for the page.
    refused = with_cookie("GET", "/ui/api/modes", copied)
    assert refused.status_code == 401 and "log in" in refused.json()["error"]
    page = with_cookie("GET", "/ui/", copied, Accept="text/html")
    assert page.status_code == 401 and 'id="key"' in page.text
    change = httpx.put(ui.url + "/ui/api/modes", json={"mode": "replay"}, timeout=10, trust_env=False,
                       headers={"Cookie": f"simgate_ui={copied}", "X-Simgate-UI": "1"})
    assert change.status_code == 401 and ui.admin_api("GET", "/admin/modes").json()["default"] == "live"

    # Logging out with a spent, forged or no cookie: nothing to end, still 204 and the cookie cleared.
    for cookie in (copied, "forged.99999999999.00.00", None):
        again = with_cookie("POST", "/ui/logout", cookie, **{"X-Simgate-UI": "1"})
        assert again.status_code == 204, (cookie, again.text)
        assert "max-age=0" in again.headers["set-cookie"].lower()

    # A fresh login makes a new session, which works.
    with httpx.Client(base_url=ui.url, timeout=10, trust_env=False) as browser:
        assert browser.post("/ui/login", headers={"Authorization": f"Bearer {ui.admin}"}).status_code == 200
        fresh = browser.cookies["simgate_ui"]
        assert fresh != copied and browser.get("/ui/api/modes").status_code == 200
        assert with_cookie("GET", "/ui/api/modes", copied).status_code == 401
    assert ui.admin not in ui.gateway.log_text()


def test_revoked_sessions_are_forgotten_as_their_cookies_expire_and_their_number_is_bounded(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    key, _ = keys.create("operator", servers=["*"], admin=True)
    cookies = SessionCookies(keys, max_revoked=3)
    spent = [cookies.issue(key) for _ in range(3)]
    kept = cookies.issue(key)
    assert [cookies.revoke(token) for token in spent] == [key] * 3 and cookies.revoked == 3
    assert [cookies.verify(token) for token in spent] == [None] * 3 and cookies.verify(kept) == key
    assert cookies.revoke(spent[0]) is None and cookies.revoke("forged.99999999999.00.00") is None
    assert cookies.revoked == 3
    # One more than the bound: rather than forget a logout (its cookie would work again), every session ends.
    assert cookies.revoke(cookies.issue(key)) == key and cookies.revoked == 0
    assert [cookies.verify(token) for token in [*spent, kept]] == [None] * 4
    assert cookies.verify(cookies.issue(key)) == key

    brief = SessionCookies(keys, seconds=1)
    assert brief.revoke(brief.issue(key)) == key and brief.revoked == 1
    later = brief.issue(key)
    # Once both have expired, the first logout need not be remembered any more.
    assert wait_until(lambda: brief.verify(later) is None, timeout=5, interval=0.1)
    assert brief.revoke(brief.issue(key)) == key and brief.revoked == 1


def test_a_foreign_origin_is_refused(ui: Ui) -> None:
    admin = {"Authorization": f"Bearer {ui.admin}", "X-Simgate-UI": "1"}
    for origin in ("http://evil.example", "http://127.0.0.1.evil.example:8080"):
        page = httpx.get(ui.url + "/ui/", headers={**admin, "Origin": origin}, timeout=10, trust_env=False)
        assert page.status_code == 403, page.text
        change = httpx.put(ui.url + "/ui/api/modes", json={"mode": "replay"}, headers={**admin, "Origin": origin},
                           timeout=10, trust_env=False)
        assert change.status_code == 403 and "refused" in change.json()["error"]
    rebound = httpx.get(ui.url + "/ui/", headers={**admin, "Host": "attacker.example"}, timeout=10, trust_env=False)
    assert rebound.status_code == 421
    assert ui.admin_api("GET", "/admin/modes").json()["default"] == "live"


async def test_the_number_of_pages_watching_is_bounded(ui: Ui) -> None:
    headers = {"Authorization": f"Bearer {ui.admin}"}
    async with httpx.AsyncClient(base_url=ui.url, headers=headers, timeout=30, trust_env=False) as http:
        async with AsyncExitStack() as streams:
            readers = []  # kept: a line iterator dropped (collected) would close its stream
            for _ in range(16):  # CallFeed's max_subscribers
                stream = await streams.enter_async_context(http.stream("GET", "/ui/api/calls/stream"))
                assert stream.status_code == 200
                readers.append(stream.aiter_lines())
                assert await readers[-1].__anext__() == "retry: 3000"  # subscribed
            refused = await http.get("/ui/api/calls/stream")
            assert refused.status_code == 503 and "too many pages" in refused.json()["error"]
        for _ in range(50):  # the streams' ends are seen by the gateway: room again
            async with http.stream("GET", "/ui/api/calls/stream") as again:
                if again.status_code == 200:
                    break
            await anyio.sleep(0.1)
        assert again.status_code == 200


# ---------------------------------------------------------------------------------------------- the feed


def _call() -> ToolCall:
    return ToolCall(server="fx", tool="echo", exposed_name="fx__echo", arguments={"text": "x"})


async def test_no_viewer_no_work_and_a_slow_viewer_loses_events_not_memory() -> None:
    feed = CallFeed(queue_size=4, max_subscribers=1)
    stage = ObserveCalls(GatewayMetrics(), feed)

    async def answer(call: ToolCall) -> dict[str, Any]:
        return {"content": [], "isError": False}

    await stage(_call(), answer)
    assert feed.next_id() == 1  # nobody watched: no event was even numbered

    with feed.subscribe() as slow:
        with pytest.raises(TooManyViewers):
            with feed.subscribe():
                pass
        for _ in range(10):
            await stage(_call(), answer)
        assert slow.dropped == 6
        received = [slow.receive.receive_nowait() for _ in range(4)]
        assert [event.id for event in received] == [2, 3, 4, 5]
        assert '"tool":"echo"' in received[0].json
    assert not feed.watched


def test_latency_percentiles_are_nearest_rank() -> None:
    samples = deque([n / 1000 for n in range(100, 0, -1)], maxlen=1024)  # 1..100 ms, in any order
    assert latency_percentiles(samples) == {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert latency_percentiles(deque([0.002])) == {"count": 1, "p50": 2.0, "p95": 2.0, "p99": 2.0}
    assert latency_percentiles(deque()) == {"count": 0, "p50": None, "p95": None, "p99": None}


def test_a_huge_result_is_cut_for_the_page() -> None:
    event = CallEvent.build({"id": 1, "tool": "t"}, {"arguments": {"blob": "x" * 200_000}, "result": {"ok": 1},
                                                      "error": None})
    data = json.loads(event.json)
    assert len(event.json) < 70_000 and data["arguments"]["truncated"] is True and data["arguments"]["chars"] > 200_000
    assert data["result"] == {"ok": 1} and data["error"] is None and data["tool"] == "t"


async def test_off_loopback_the_page_keeps_its_origin_check_and_its_stream_ends_with_the_gateway(
        tmp_path: Path) -> None:
    """Listening on 0.0.0.0 the gateway's Host/Origin check is off (it cannot know its names): the page keeps
    its own same-origin rule. And an open page does not hold a stopping gateway up."""
    keys = KeyStore(tmp_path / "keys.json")
    _, admin = keys.create("operator", servers=["*"], admin=True)
    config = {"gateway": {"keys_path": str(tmp_path / "keys.json")},
              "mcpServers": {"fx": fixture_server("routing_server.py")}}
    with running_gateway(config, tmp_path / "gw", host="0.0.0.0", wait_ready=False) as gateway:
        headers = {"Authorization": f"Bearer {admin}", "X-Simgate-UI": "1"}
        foreign = httpx.put(gateway.url + "/ui/api/modes", json={"mode": "replay"}, timeout=10, trust_env=False,
                            headers={**headers, "Origin": "http://evil.example"})
        assert foreign.status_code == 403
        own = httpx.put(gateway.url + "/ui/api/modes", json={"mode": "replay"}, timeout=10, trust_env=False,
                        headers={**headers, "Origin": gateway.url})
        assert own.status_code == 200 and own.json()["default"] == "replay"

        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30, trust_env=False) as http:
            async with http.stream("GET", "/ui/api/calls/stream") as stream:
                lines = stream.aiter_lines()
                assert await lines.__anext__() == "retry: 3000"
                started = anyio.current_time()
                assert await anyio.to_thread.run_sync(gateway.terminate) in (0, -signal.SIGTERM)
                assert anyio.current_time() - started < 4  # not uvicorn's graceful timeout (5 s) and more
