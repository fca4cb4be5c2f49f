"""`simgate onboard`: real servers installed, probed offline under bubblewrap behind a closed egress
proxy, classified against hand labels written before the classifier, then served and replayed from
the written config with no hand edit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import FIXTURES, REPO_ROOT, mcp_session, provenance, running_gateway
from llm_server import LLMServer

from simgate.runner.onboard.categories import CATEGORIES
from simgate.runner.onboard.classify import changed_values, classify_tool, env_names, propose_settings
from simgate.runner.onboard.observations import CallOutcome, ProbeCall, ToolStatus
from simgate.runner.onboard.specs import OnboardSpecError, candidates_from
from simgate.sandboxes.workdir import directory_name

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

# Hand labels of tests/fixtures/onboard_server.py, written from its code before the classifier ran.
FIXTURE_LABELS: dict[str, dict[str, Any]] = {
    "add": {"status": "works", "deterministic": True, "cacheable": True},
    "now": {"status": "works", "deterministic": False, "time_dependent": True, "cacheable": False},
    "new_id": {"status": "works", "deterministic": False, "time_dependent": False, "cacheable": False},
    "save_note": {"status": "works", "writes_files": True, "cacheable": False},
    "weather": {"status": "needs_network", "network_hosts": ["api.weather.example:443"], "cacheable": False},
    "lookup": {"status": "needs_credentials", "needs_env": ["ACME_API_KEY"], "cacheable": False},
    "shout": {"status": "works", "deterministic": True, "cacheable": True, "ignore_args": ["request_id"]},
}


def onboard(tmp_path: Path, *specs: str, jobs: int = 2,
            options: tuple[str, ...] = ()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "simgate", "onboard", *specs, "--jobs", str(jobs), "--no-progress",
         "--config", "onboarded.yaml", "--out", "reports", "--call-timeout", "15", *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads((tmp_path / "reports" / "onboard.json").read_text())
    config = yaml.safe_load((tmp_path / "onboarded.yaml").read_text())
    return reports, config


def by_name(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {report["name"]: report for report in reports}


def test_specs_of_every_kind_become_candidates(tmp_path: Path) -> None:
    assert candidates_from("pypi:mcp-server-time==2026.10.19")[0].entry == {"package": "pypi:mcp-server-time==2026.10.19"}
    npm = candidates_from("npm:@modelcontextprotocol/server-memory@2026.8.31")[0]
    assert npm.name == "server-memory"
    uvx = candidates_from("uvx --from mcp-server-time==2026.10.19 mcp-server-time --local-timezone UTC")[0]
    assert uvx.name == "mcp-server-time" and uvx.entry["command"] == "uvx"
    assert uvx.entry["args"][-2:] == ["--local-timezone", "UTC"]
    clients = tmp_path / "claude.json"
    clients.write_text(json.dumps({"mcpServers": {"a": {"command": "npx", "args": ["-y", "x"]}, "b": {"url": "http://h/mcp"}}}))
    assert [c.name for c in candidates_from(str(clients))] == ["a", "b"]
    registry = tmp_path / "server.json"
    registry.write_text(json.dumps({
        "name": "io.github.acme/weather", "description": "Weather", "version": "1.2.0",
        "packages": [{"registryType": "npm", "identifier": "@acme/weather-mcp", "version": "1.2.0",
                      "transport": {"type": "stdio"},
                      "packageArguments": [{"type": "named", "name": "--units", "value": "metric"}],
                      "environmentVariables": [{"name": "WEATHER_API_KEY", "isRequired": True, "isSecret": True}]},
                     {"registryType": "oci", "identifier": "acme/weather", "transport": {"type": "stdio"}}]}))
    [weather] = candidates_from(str(registry))
    assert weather.entry == {"package": "npm:@acme/weather-mcp@1.2.0", "args": ["--units", "metric"]}
    assert [need.name for need in weather.declared_env] == ["WEATHER_API_KEY"]
    for bad, message in (("", "an empty SPEC"), ("pypi:", "no package name"), ("nothing-like-a-spec", "expected pypi:"),
                         ("uvx", "no package to run")):
        with pytest.raises(OnboardSpecError, match=message):
            candidates_from(bad)
    only_oci = tmp_path / "oci.json"
    only_oci.write_text(json.dumps({"name": "x", "packages": [{"registryType": "oci", "identifier": "a/b"}]}))
    with pytest.raises(OnboardSpecError, match="no stdio pypi or npm package"):
        candidates_from(str(only_oci))


def _call(kind: str, attempt: int, outcome: CallOutcome, result: Any = None, text: str = "", **extra: Any) -> ProbeCall:
    return ProbeCall(kind=kind, arguments={}, valid=True, attempt=attempt, outcome=outcome, text=text,
                     result=result, latency_ms=1.0, **extra)


def test_classification_rules_can_come_out_each_way() -> None:
    same = {"content": [{"type": "text", "text": "42"}]}
    pure = [_call("minimal", 1, CallOutcome.OK, same), _call("minimal", 2, CallOutcome.OK, same)]
    assert classify_tool(pure).deterministic is True
    clock = [_call("minimal", 1, CallOutcome.OK, {"structuredContent": {"t": "2026-01-01T10:00:00Z", "n": 1}}),
             _call("minimal", 2, CallOutcome.OK, {"structuredContent": {"t": "2026-01-01T10:00:01Z", "n": 1}})]
    classified = classify_tool(clock)
    assert classified.deterministic is False and classified.unstable_paths == ["$.t"] and classified.time_dependent
    assert propose_settings(classified, clock).cacheable is False
    # One successful call alone proves nothing about determinism.
    assert classify_tool(pure[:1]).deterministic is None
    failing = [_call("minimal", 1, CallOutcome.SOFT_ERROR, text="Error: GITHUB_PERSONAL_ACCESS_TOKEN is not set")]
    assert classify_tool(failing).status is ToolStatus.NEEDS_CREDENTIALS
    offline = [_call("minimal", 1, CallOutcome.SOFT_ERROR, text="getaddrinfo ENOTFOUND api.example.com")]
    assert classify_tool(offline).status is ToolStatus.NEEDS_NETWORK
    assert env_names(["set OPENAI_API_KEY and OPENAI_API_KEY", "the environment variable DB_DSN"]) == [
        "OPENAI_API_KEY", "DB_DSN"]
    assert changed_values({"a": [1, 2], "b": {"c": 1}}, {"a": [1, 3], "b": {"c": 1}, "d": 0}) == {
        "$.a[1]": (2, 3), "$.d": (None, 0)}
    # A deterministic tool whose name says it changes state is still replayed in sequence.
    assert propose_settings(classify_tool(pure), pure, tool="create_record").cacheable is False
    assert propose_settings(classify_tool(pure), pure, {"readOnlyHint": True}, tool="create_record").cacheable


def test_onboarding_classifies_the_fixture_as_labelled_and_the_config_serves_and_replays(tmp_path: Path) -> None:
    fixture = str(FIXTURES / "onboard_server.py")
    clients = tmp_path / "servers.json"
    clients.write_text(json.dumps({"mcpServers": {
        "fixture": {"command": sys.executable, "args": [fixture]},
        "keyed": {"command": sys.executable, "args": [fixture, "--require-key"]}}}))
    reports, config = onboard(tmp_path, str(clients))
    servers = by_name(reports)
    assert servers["keyed"]["status"] == "needs_credentials", servers["keyed"]
    assert servers["keyed"]["needs_env"] == ["ACME_API_KEY"]
    fixture_report = servers["fixture"]
    assert fixture_report["status"] == "usable"
    tools = {tool["name"]: tool for tool in fixture_report["tools"]}
    assert set(tools) == set(FIXTURE_LABELS)
    agree = 0
    disagreements = []
    for name, labels in FIXTURE_LABELS.items():
        seen = {**tools[name]["classification"], **tools[name]["settings"]}
        wrong = {key: (value, seen.get(key)) for key, value in labels.items() if seen.get(key) != value}
        agree += not wrong
        if wrong:
            disagreements.append((name, wrong))
    assert agree == len(FIXTURE_LABELS), disagreements
    # The deliberately invalid call reached the server (not refused by the gateway's schema check): how
    # the server itself refuses is what the report shows.
    invalid = next(call for call in tools["add"]["calls"] if not call["valid"])
    assert "invalid arguments for tool" not in invalid["text"] and invalid["error_code"] != -32602, invalid
    assert tools["add"]["classification"]["invalid_input"] in ("soft_error", "rpc_error"), invalid
    # The fidelity baseline: a model-free simulator measured on every tool's probe calls.
    baseline = {name: tool["fidelity"]["examples-schema"] for name, tool in tools.items()}
    assert all(figures["calls"] >= 1 for figures in baseline.values()), baseline
    assert baseline["add"]["outcome_agreement"] == 1.0 and baseline["weather"]["outcome_agreement"] is not None
    # The config: usable servers enabled with their proposals, the others disabled with the reason.
    entry = config["mcpServers"]["fixture"]
    assert entry["sandbox"] == {"backend": "bwrap", "network": {"allow": ["api.weather.example:443"]}}
    assert entry["tool_settings"]["add"] == {"cacheable": True}
    assert entry["tool_settings"]["now"]["ttl"] == 3600.0
    assert entry["env"] == {"ACME_API_KEY": "vault:acme_api_key"}
    assert config["mcpServers"]["keyed"]["disabled"] is True
    assert "ACME_API_KEY" in config["mcpServers"]["keyed"]["onboarding"]["reason"]
    # The written config serves as it is (the credential placeholder needs the secret first).
    secret = subprocess.run([sys.executable, "-m", "simgate", "vault", "set", "acme_api_key", "--config",
                             str(tmp_path / "onboarded.yaml")], input="k-123\n", capture_output=True, text=True,
                            cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert secret.returncode == 0, secret.stderr
    served = yaml.safe_load((tmp_path / "onboarded.yaml").read_text())
    served["gateway"].update({"state_dir": config["gateway"]["state_dir"]})
    import anyio

    async def call(gateway_url: str, mode: str) -> Any:
        async with mcp_session(gateway_url, headers={"X-Simgate-Mode": mode}) as session:
            return await session.call_tool("fixture__add", tools["add"]["calls"][0]["arguments"])

    with running_gateway(served, tmp_path / "serve") as gateway:
        live = anyio.run(call, gateway.mcp_url(), "live")
        assert live.content[0].text == str(sum(tools["add"]["calls"][0]["arguments"].values()))
    # Replay of the seeded recordings with the upstream gone (its command no longer exists).
    served["mcpServers"]["fixture"]["args"] = [str(tmp_path / "gone.py")]
    with running_gateway(served, tmp_path / "replay", wait_ready=False) as gateway:
        replayed = anyio.run(call, gateway.mcp_url(), "replay")
        assert replayed.content[0].text == live.content[0].text
        assert provenance(replayed)["source"] == "cache"
    # Drift: the same config re-probed, now with the secret in the vault, finds exactly that: the
    # credential-gated tool and server work now, nothing else changed; after an "upgrade", what changed.
    check = [sys.executable, "-m", "simgate", "onboard", "--check", "onboarded.yaml", "--out", "reports",
             "--no-progress", "--fail-on-drift", "--call-timeout", "15"]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}
    same = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    drift = {d["server"]: d for d in json.loads((tmp_path / "reports" / "drift.json").read_text())}
    assert same.returncode == 1, same.stdout + same.stderr
    assert not any(drift["fixture"][key] for key in ("new_tools", "removed_tools", "changed_schemas",
                                                     "stopped_working")), drift["fixture"]
    assert drift["fixture"]["started_working"] == ["lookup"]
    assert drift["keyed"]["status"] == ["needs_credentials", "usable"]
    upgraded = yaml.safe_load((tmp_path / "onboarded.yaml").read_text())
    upgraded["mcpServers"]["fixture"]["args"].append("--changed")
    (tmp_path / "onboarded.yaml").write_text(yaml.safe_dump(upgraded))
    changed = subprocess.run(check, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    drift = {d["server"]: d for d in json.loads((tmp_path / "reports" / "drift.json").read_text())}
    assert drift["fixture"]["new_tools"] == ["subtract"] and drift["fixture"]["removed_tools"] == ["shout"]
    assert drift["fixture"]["changed_schemas"] == ["add"] and drift["fixture"]["stopped_working"] == ["new_id"]


def test_a_refused_command_line_is_reported_as_such_not_as_missing_credentials(tmp_path: Path) -> None:
    """An argparse/Click usage error whose usage text names a `--token` option is the entry's args at fault:
    crashed_on_start with the parser's error line, not needs_credentials."""
    clients = tmp_path / "servers.json"
    server = str(FIXTURES / "cli_args_server.py")
    clients.write_text(json.dumps({"mcpServers": {
        "noargs": {"command": sys.executable, "args": [server]},
        "withargs": {"command": sys.executable, "args": [server, "--db-path", "data.db"]}}}))
    servers = by_name(onboard(tmp_path, str(clients), jobs=1)[0])
    refused = servers["noargs"]
    assert refused["status"] == "crashed_on_start", refused
    assert "command line was refused" in refused["reason"] and "required: --db-path" in refused["reason"]
    assert not refused.get("needs_env")
    assert servers["withargs"]["status"] == "usable", servers["withargs"]


def test_a_server_that_serves_http_instead_of_stdio_is_named_so_without_waiting_out_the_startup(
        tmp_path: Path) -> None:
    """Its stderr says where it listens: reported as a protocol error that says so, within the grace
    period, not 'not ready after Ns' once the whole startup timeout has passed."""
    clients = tmp_path / "servers.json"
    clients.write_text(json.dumps({"mcpServers": {
        "httponly": {"command": sys.executable, "args": [str(FIXTURES / "http_only_server.py")]}}}))
    started = time.monotonic()
    servers = by_name(onboard(tmp_path, str(clients), jobs=1, options=("--startup-timeout", "90"))[0])
    assert time.monotonic() - started < 75
    report = servers["httponly"]
    assert report["status"] == "protocol_error", report
    assert "serves HTTP (http://127.0.0.1:" in report["reason"] and "stdio" in report["reason"]


def test_a_start_failure_is_read_from_this_starts_stderr_not_an_earlier_runs(tmp_path: Path) -> None:
    """The server's stderr.log outlives a run (the state dir is reused by the next one): a crash is classified
    by what this start wrote, not by an old run's complaint about a missing key."""
    old_log = tmp_path / ".simgate" / "servers" / directory_name("crashy") / "stderr.log"
    old_log.parent.mkdir(parents=True)
    old_log.write_text("Error: please set ACME_API_KEY\n")
    clients = tmp_path / "servers.json"
    clients.write_text(json.dumps({"mcpServers": {"crashy": {
        "command": sys.executable, "args": ["-c", "import sys; sys.exit('boom: unsupported disk layout')"]}}}))
    report = by_name(onboard(tmp_path, str(clients), jobs=1)[0])["crashy"]
    assert report["status"] == "crashed_on_start", report
    assert "boom: unsupported disk layout" in report["reason"] and "ACME_API_KEY" not in report["reason"]
    assert not report.get("needs_env")


def test_real_servers_from_pypi_and_npm_including_one_that_needs_mcp_below_2(tmp_path: Path) -> None:
    reports, config = onboard(
        tmp_path, "pypi:mcp-server-calculator==0.2.1",
        "uvx --from mcp-server-sqlite==2025.4.25 mcp-server-sqlite --db-path probe.db",
        "npx -y @modelcontextprotocol/server-memory@2026.8.31", jobs=3)
    servers = by_name(reports)
    calculator = {t["name"]: t for t in servers["mcp-server-calculator"]["tools"]}
    assert calculator["calculate"]["classification"]["status"] == "works"
    assert calculator["calculate"]["settings"]["cacheable"] is True
    sqlite = servers["mcp-server-sqlite"]
    assert sqlite["status"] == "usable" and any("mcp<2" in fix for fix in sqlite["fixes"]), sqlite
    assert "--with" in config["mcpServers"]["mcp-server-sqlite"]["args"]
    sqlite_tools = {t["name"]: t for t in sqlite["tools"]}
    assert sqlite_tools["list_tables"]["classification"]["status"] == "works"
    assert sqlite_tools["write_query"]["settings"]["cacheable"] is False
    memory = {t["name"]: t for t in servers["server-memory"]["tools"]}
    assert memory["read_graph"]["classification"]["status"] == "works"
    # It writes its file beside its package, which is read-only in the sandbox: said, not hidden.
    assert any("read-only" in line for line in memory["create_entities"]["classification"]["evidence"])
    assert servers["server-memory"]["category"]["primary"] == "Memory Management"
    # A re-run with the same specs does nothing again.
    again, _ = onboard(tmp_path, "pypi:mcp-server-calculator==0.2.1")
    assert by_name(again)["mcp-server-calculator"]["onboarded_at"] == servers["mcp-server-calculator"]["onboarded_at"]


@pytest.mark.timeout(900)
def test_with_an_llm_it_writes_arguments_and_labels_the_server(tmp_path: Path, llm_server: LLMServer) -> None:  # noqa: F811
    clients = tmp_path / "servers.json"
    clients.write_text(json.dumps({"mcpServers": {
        "fixture": {"command": sys.executable, "args": [str(FIXTURES / "onboard_server.py")]}}}))
    reports, _ = onboard(tmp_path, str(clients), "--llm-base-url", llm_server.base_url, "--model", "gemma")
    report = by_name(reports)["fixture"]
    # The model's labels are constrained to TOUCAN's categories; its arguments, to each tool's schema.
    assert report["category"]["method"] == "llm gemma", report["category"]
    assert report["category"]["primary"] in CATEGORIES
    llm_calls = [call for tool in report["tools"] for call in tool["calls"] if call["kind"] == "llm"]
    assert llm_calls, "no LLM-written argument set was probed"
    assert all(call["valid"] for call in llm_calls)


def test_the_html_report_filters_rows_in_a_browser(tmp_path: Path) -> None:
    """Typed in the page's filter box in a real browser: words match anywhere, `column=value` in one column."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the test extra) is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed on this machine")
    from simgate.runner.onboard.observations import ServerReport, ServerStatus, ToolClassification, ToolReport
    from simgate.runner.onboard.reports import write_reports

    def tool(name: str, status: ToolStatus) -> ToolReport:
        return ToolReport(name=name, classification=ToolClassification(status=status))

    reports = [ServerReport(name="alpha", spec="pypi:alpha", spec_hash="a", status=ServerStatus.USABLE,
                            tools=[tool("add", ToolStatus.WORKS), tool("fetch", ToolStatus.NEEDS_NETWORK)]),
               ServerReport(name="beta", spec="npm:beta", spec_hash="b", status=ServerStatus.USABLE,
                            tools=[tool("lookup", ToolStatus.NEEDS_CREDENTIALS), tool("echo", ToolStatus.WORKS)])]
    write_reports(tmp_path, reports)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((tmp_path / "onboard.html").as_uri())
            visible = "[...document.querySelectorAll('tbody tr')].filter(r => !r.hidden).map(r => r.cells[0].textContent)"
            assert sorted(page.evaluate(visible)) == ["add", "alpha", "beta", "echo", "fetch", "lookup"]
            page.fill("#filter", "class=works")
            assert sorted(page.evaluate(visible)) == ["add", "echo"]
            page.fill("#filter", "class=works beta")  # every term must match: no tool row names beta
            assert page.evaluate(visible) == []
            page.fill("#filter", "needs")
            assert sorted(page.evaluate(visible)) == ["fetch", "lookup"]
            assert page.text_content("#shown") == "2 of 6 rows"
            page.screenshot(path=str(tmp_path / "onboard-filtered.png"))
        finally:
            browser.close()
