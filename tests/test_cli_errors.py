"""Every `simgate` sub-command, given bad input, says so in one line on stderr and exits 2: no traceback.

The table names one bad input per sub-command; a sub-command missing from it fails the test, so a new one
comes with its case. Commands run in one process, the way the `simgate` script runs them (`gateway.cli.main`);
what they would reach is a closed port on loopback or a file that does not exist.
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path

import httpx
import pytest
from harness import fixture_server, running_gateway

from simgate.errors import SimgateError
from simgate.gateway.cli import build_parser, main


def _closed_port() -> str:
    with socket.socket() as probe:  # bound, never listening, closed: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


DEAD = _closed_port()
LLM = ["--llm-base-url", DEAD + "/v1", "--model", "m"]

# sub-command -> its arguments ({t}: a fresh empty directory) and a piece of the expected message.
CASES: dict[str, tuple[list[str], str]] = {
    "serve": (["{t}/missing.yaml"], "missing.yaml"),
    "servers": (["--url", DEAD], "cannot reach the gateway"),
    "call": (["s", "t", "novalue", "--url", DEAD], "'novalue' is not key=value"),
    "mode show": (["--url", DEAD], "cannot reach the gateway"),
    "mode set": (["live", "--url", DEAD], "cannot reach the gateway"),
    "mode clear": (["--server", "s", "--url", DEAD], "cannot reach the gateway"),
    "config check": (["{t}/missing.yaml"], "missing.yaml"),
    "cache stats": (["--cache-dir", "{t}/none"], "none"),
    "cache ls": (["--cache-dir", "{t}/none"], "none"),
    "cache show": (["abc", "--cache-dir", "{t}/none"], "none"),
    "cache export": (["{t}/out.jsonl", "--cache-dir", "{t}/none"], "none"),
    "cache import": (["{t}/missing.jsonl", "--cache-dir", "{t}/store"], "missing.jsonl"),
    "cache prune": (["--cache-dir", "{t}/none"], "none"),
    "vault set": (["NAME", "--config", "{t}/missing.yaml"], "missing.yaml"),
    "vault list": (["--config", "{t}/missing.yaml"], "missing.yaml"),
    "vault rm": (["NAME", "--config", "{t}/missing.yaml"], "missing.yaml"),
    "vault rotate-key": (["--config", "{t}/missing.yaml"], "missing.yaml"),
    "keys create": (["k", "--servers", "a", "--config", "{t}/missing.yaml"], "missing.yaml"),
    "keys list": (["--config", "{t}/missing.yaml"], "missing.yaml"),
    "keys rm": (["k", "--config", "{t}/missing.yaml"], "missing.yaml"),
    "sandbox check": (["--docker-host", "unix://{t}/no.sock"], ""),  # a report: exit 0 or 1, never a traceback
    "sandbox build-images": (["--docker-host", "unix://{t}/no.sock"], "no.sock"),
    "sandbox install": (["{t}/missing.yaml"], "missing.yaml"),
    "fidelity calls": (["--store", "{t}/none", "--out", "{t}/out"], "none"),
    "fidelity status": (["--config", "{t}/missing.yaml"], "missing.yaml"),
    "fidelity trajectories": (["--tasks", "{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out", *LLM],
                              "missing.jsonl"),
    "export simulator-sft": (["--store", "{t}/none", "--out", "{t}/nodir/out.jsonl"], "nodir"),
    "export trajectories": (["{t}/missing.jsonl", "--out", "{t}/out.jsonl"], "missing.jsonl"),
    "run": (["--tasks", "{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "missing.jsonl"),
    "onboard": (["{t}/missing-servers.json", "--out", "{t}/out"], "missing-servers.json"),
    "synth": (["--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "cannot list the servers"),
    "dedup": (["{t}/missing.jsonl", "--out", "{t}/out.jsonl"], "missing.jsonl"),
    "judge tasks": (["{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "cannot list the servers"),
    "judge trajectories": (["{t}/missing.jsonl", "--out", "{t}/out.jsonl", *LLM], "missing.jsonl"),
    "extend irrelevance": (["{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl"], "missing.jsonl"),
    "extend persona": (["{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "missing.jsonl"),
    "extend split": (["{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "missing.jsonl"),
    "extend multi-turn": (["{t}/missing.jsonl", "--gateway", DEAD, "--out", "{t}/out.jsonl", *LLM], "missing.jsonl"),
    "pipeline run": (["{t}/missing.yaml"], "missing.yaml"),
    "filter": (["{t}/missing.jsonl", "--where", "True", "--out", "{t}/out.jsonl"], "missing.jsonl"),
}


def _leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [name for key, sub in action.choices.items() for name in _leaf_commands(sub, (*path, key))]
    return [" ".join(path)]


LEAVES = _leaf_commands(build_parser())


def test_every_sub_command_has_a_bad_input_case() -> None:
    assert not set(LEAVES) - set(CASES), "add a bad-input case for each new sub-command"


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_is_one_line_and_exit_code_2(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    if command not in LEAVES:
        pytest.skip(f"`simgate {command}` is not in this tree")  # a case may come before its command is merged
    arguments, expected = CASES[command]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMGATE_SERVERS_DIR", str(tmp_path / "servers"))
    argv = [*command.split(), *(argument.replace("{t}", str(tmp_path)) for argument in arguments)]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if command == "sandbox check":  # not a refusal: a report of what works here
        assert exited.value.code in (0, 1), err
        return
    assert exited.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"simgate {command}: ") and expected in lines[0], err


def test_every_expected_error_has_the_one_base() -> None:
    """The errors a user is meant to read derive from `SimgateError`, whichever layer raises them."""
    from simgate.gateway.auth.api_keys import KeyFileError
    from simgate.gateway.cache.cassette import CassetteError
    from simgate.gateway.errors import ConfigError, GatewayError, ReplayMiss
    from simgate.gateway.fidelity.source import FidelityInputError
    from simgate.gateway.vault.store import VaultError
    from simgate.runner.errors import RunnerError, TaskFileError
    from simgate.runner.export.formats import ExportError
    from simgate.sandboxes.errors import SandboxUnavailable
    from simgate.sandboxes.install.installer import InstallError
    from simgate.sandboxes.install.spec import SpecError
    from simgate.simulators.base import SimulationError
    from simgate.simulators.schema import SchemaSynthesisError

    for error in (KeyFileError, CassetteError, ConfigError, GatewayError, ReplayMiss, FidelityInputError,
                  VaultError, RunnerError, TaskFileError, ExportError, SandboxUnavailable, InstallError, SpecError,
                  SimulationError, SchemaSynthesisError):
        assert issubclass(error, SimgateError), error
    assert json.loads(json.dumps(str(ReplayMiss("no recording"))))  # still an MCPError with its message


# --------------------------------------------------------------------------------------- hostile files
# A file someone else wrote, given to the command that reads it: JSON nested deeper than Python's recursion
# limit, an integer longer than Python converts, bytes that are not UTF-8, YAML aliases that expand to
# millions of values or into themselves. Each is one line naming the file, exit 2, nothing written.

DEEP_JSON = "[" * 100_000 + "]" * 100_000 + "\n"
LAUGHS = "".join(f"    l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n" for n in range(1, 8))
PIPELINE = "dir: {t}/out\ngateway: " + DEAD + "/mcp\nllm: {base_url: " + DEAD + "/v1, model: m}\nstages:\n"

HOSTILE: dict[str, tuple[list[str], str | bytes, str]] = {
    "cassette nested too deep": (["cache", "import", "{f}", "--cache-dir", "{t}/out"], DEEP_JSON, "nested too deeply"),
    "trajectories with a huge integer": (["export", "trajectories", "{f}", "--out", "{t}/out"],
                                         '{"id": "t", "repeat": ' + "9" * 5000 + "}\n", "Exceeds the limit"),
    "trajectories not UTF-8": (["export", "trajectories", "{f}", "--out", "{t}/out"], b"\xff\xfe{}\n", "not UTF-8"),
    "tasks nested too deep": (["run", "--tasks", "{f}", "--gateway", DEAD, "--out", "{t}/out", *LLM], DEEP_JSON,
                              "nested too deeply"),
    "dedup input nested too deep": (["dedup", "{f}", "--out", "{t}/out"], DEEP_JSON, "not a task line"),
    "vault nested too deep": (["vault", "list", "--vault", "{f}"], DEEP_JSON, "nested too deeply"),
    "pipeline nested too deep": (["pipeline", "run", "{f}"], "[" * 50_000 + "]" * 50_000, "nested too deeply"),
    "pipeline of a billion laughs": (["pipeline", "run", "{f}"],
                                     PIPELINE + "  synth:\n    l0: &l0 [lol]\n" + LAUGHS, "billion laughs"),
    "pipeline with a cyclic alias": (["pipeline", "run", "{f}"], PIPELINE + "  synth: &s {again: *s}\n", "a cycle"),
    "pipeline without synth": (["pipeline", "run", "{f}"], PIPELINE + "  dedup: {threshold: 0.7}\n", "no input"),
    "config of a billion laughs": (["config", "check", "{f}"], "mcpServers: {}\nx:\n    l0: &l0 [lol]\n" + LAUGHS,
                                   "billion laughs"),
    "onboard spec nested too deep": (["onboard", "{f}", "--out", "{t}/out"], "[" * 50_000 + "]" * 50_000,
                                     "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_file_is_one_line_and_exit_code_2(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    arguments, content, expected = HOSTILE[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMGATE_SERVERS_DIR", str(tmp_path / "servers"))
    file = tmp_path / ("input.yaml" if arguments[0] in ("pipeline", "config", "onboard") else "input.jsonl")
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content.replace("{t}", str(tmp_path)) if content.startswith("dir:") else content)
    with pytest.raises(SystemExit) as exited:
        main([argument.replace("{f}", str(file)).replace("{t}", str(tmp_path)) for argument in arguments])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ------------------------------------------------------------------------------------ refused by a gateway
# What a running gateway refuses reaches the user the same way: one line, exit 2.


def test_a_mode_for_an_unknown_tool_is_one_line_and_exit_code_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = {"gateway": {"cache_dir": str(tmp_path / "cache"), "ready_when": ["fx"]},
              "mcpServers": {"fx": fixture_server("misbehaving_server.py"), "down": {"command": "/bin/false"}}}
    with running_gateway(config, tmp_path / "gw") as gateway:
        for command, expected in ((["mode", "set", "live", "--server", "fx", "--tool", "ech"],
                                   "simgate mode set: unknown tool 'ech' on server 'fx' (did you mean 'echo'?)"),
                                  (["mode", "clear", "--server", "fx", "--tool", "echo"],
                                   "simgate mode clear: no run-time mode is set for tool 'echo' of server 'fx'")):
            with pytest.raises(SystemExit) as exited:
                main([*command, "--url", gateway.url])
            err = capsys.readouterr().err
            assert exited.value.code == 2 and "Traceback" not in err, err
            assert err.strip().splitlines() == [expected], err
        assert httpx.get(gateway.url + "/admin/modes", timeout=10).json()["tools"] == {}
        # A server whose tool list is not known (down, nothing recorded): taken, with a warning, exit 0.
        with pytest.raises(SystemExit) as exited:
            main(["mode", "set", "live", "--server", "down", "--tool", "anything", "--url", gateway.url])
        out, err = capsys.readouterr()
        assert exited.value.code == 0 and json.loads(out)["tools"] == {"down": {"anything": "live"}}, err
        assert [line.split(" (")[0] for line in err.strip().splitlines()] == [
            "simgate mode set: warning: tool 'anything' was not checked: the tool list of server 'down' is not known"]
