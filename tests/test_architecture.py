"""Fast in-memory checks of the seams: modes written once, every mode has an executor, the stage order
declared in one place. No server is started (the real-gateway behaviour is in test_modes.py & co.)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from simgate.gateway.assembly import build_executors, build_pipeline
from simgate.gateway.cache.store import DiskStore
from simgate.gateway.config.execution import Mode, RecordMode, Source
from simgate.gateway.config.models import GatewayConfig
from simgate.gateway.pipeline.modes import ModeResolver, RouteByMode
from simgate.gateway.pipeline.redact import RedactingSessions, RedactingShadowLog, Redactor
from simgate.gateway.prometheus import GatewayMetrics
from simgate.gateway.upstream.pool import UpstreamPool

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runner", "gateway", "simulators", "sandboxes")
DEFINED_IN = REPO_ROOT / "gateway" / "config" / "execution.py"
# simulators/ sits below gateway/ and cannot import its enums: its fallback sources stay a Literal.
ALLOWED = {("simulators/fidelity/gate.py", frozenset({"cache", "live"}))}


def _string_collections(tree: ast.AST) -> list[tuple[int, frozenset[str]]]:
    """Tuples, lists, sets and Literal[...] subscripts made only of string constants."""
    found = []
    for node in ast.walk(tree):
        elements = None
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements = node.elts
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
            elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if elements and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements):
            found.append((node.lineno, frozenset(e.value for e in elements)))  # type: ignore[attr-defined]
    return found


def test_mode_names_are_written_only_in_the_execution_module() -> None:
    """A list of modes, record modes or sources anywhere else is a second definition that drifts."""
    names = [frozenset(Mode), frozenset(RecordMode), frozenset(Source)]
    wrong = []
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path == DEFINED_IN:
                continue
            relative = str(path.relative_to(REPO_ROOT))
            for line, values in _string_collections(ast.parse(path.read_text())):
                if len(values) >= 2 and any(values <= group for group in names) \
                        and (relative, values) not in ALLOWED:
                    wrong.append(f"{relative}:{line}: {sorted(values)}")
    assert not wrong, "\n".join(wrong)


def test_modes_compare_and_serialize_as_their_names() -> None:
    config = GatewayConfig.model_validate({"gateway": {"mode": "replay", "record": "new_episodes"}})
    assert config.gateway.mode is Mode.REPLAY and config.gateway.mode == "replay"
    assert config.model_dump(mode="json")["gateway"]["mode"] == "replay"
    assert '"record":"new_episodes"' in config.model_dump_json()
    with pytest.raises(ValueError, match="'live', 'replay', 'simulated', 'hybrid' or 'shadow'"):
        GatewayConfig.model_validate({"gateway": {"mode": "recorded"}})


def _parts(tmp_path: Path) -> dict:
    config = GatewayConfig.model_validate({"gateway": {"state_dir": str(tmp_path)}})
    redactor = Redactor()
    sessions = RedactingSessions(redactor, keep_history=False)
    return dict(config=config, redactor=redactor, sessions=sessions, store=DiskStore(tmp_path / "cache"),
                pool=UpstreamPool(config, tmp_path), shadow_log=RedactingShadowLog(tmp_path / "shadow", redactor))


def test_every_mode_has_an_executor_and_the_stage_order_is_the_declared_one(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    try:
        executors = build_executors(parts["config"], pool=parts["pool"], store=parts["store"],
                                    sessions=parts["sessions"], simulator=None, shadow_log=parts["shadow_log"],
                                    redactor=parts["redactor"])
        assert set(executors.by_mode) == set(Mode)
        pipeline = build_pipeline(parts["config"], executors, metrics=GatewayMetrics(), redactor=parts["redactor"],
                                  sessions=parts["sessions"], modes=ModeResolver(parts["config"], parts["sessions"]))
        assert [type(stage).__name__ for stage in pipeline.stages] == [
            "ObserveCalls", "RedactSecrets", "AttachProvenance", "Authorize", "ValidateArguments", "ChooseMode",
            "RateLimits", "InjectFaults", "AssignCacheKey"]
    finally:
        parts["store"].close()
        parts["shadow_log"].close()


def test_a_mode_without_an_executor_fails_at_start() -> None:
    async def answer(call):  # never called
        raise AssertionError

    with pytest.raises(ValueError, match="no executor for mode.*shadow"):
        RouteByMode({mode: answer for mode in Mode if mode is not Mode.SHADOW})


def test_one_canonical_json_where_1_and_1_0_are_the_same_value() -> None:
    """The cache key, the simulators' seeds and memo, and the trajectory comparison agree on sameness."""
    from simgate.canonical import canonical_json, digest
    from simgate.gateway.cache.cache_keys import cache_key
    from simgate.runner.fidelity.trajectory_metrics import tool_calls
    from simgate.simulators.base import SimulationRequest, ToolSpec
    from simgate.simulators.schema import SchemaSimulator

    assert canonical_json({"b": [2.0, (1, 2.5)], "a": 1.0}) == '{"a":1,"b":[2,[1,2.5]]}'
    assert digest({"x": 1.0}) == digest({"x": 1}) != digest({"x": 1.5})
    assert cache_key("s", "t", "f", {"x": 1.0}) == cache_key("s", "t", "f", {"x": 1})
    # The schema simulator seeds its answer from the arguments: the same call must get the same answer.
    tool = ToolSpec(name="quote", output_schema={"type": "object", "required": ["price", "ref"], "properties": {
        "price": {"type": "number"}, "ref": {"type": "string"}}})
    answers = [SchemaSimulator().answer(SimulationRequest(server="s", tool=tool, arguments={"amount": amount}))
               for amount in (1, 1.0, 2)]
    assert answers[0] == answers[1] != answers[2]
    events = [{"name": "s__t", "arguments": {"n": 1.0}}], [{"name": "s__t", "arguments": {"n": 1}}]
    assert tool_calls({"tool_events": events[0]}) == tool_calls({"tool_events": events[1]})


def test_every_configurable_server_has_a_transport() -> None:
    """Each way a config can describe a server (a URL, or a command under each sandbox backend) is one
    class in the transport table."""
    from typing import get_args

    from simgate.gateway.config.models import ServerConfig
    from simgate.gateway.upstream.transport import TRANSPORTS, Transport, transport_for
    from simgate.sandboxes.policy import SandboxPolicy

    chosen = {"http": type(transport_for(ServerConfig.model_validate({"url": "http://127.0.0.1:1/mcp"})))}
    for backend in get_args(SandboxPolicy.model_fields["backend"].annotation):
        config = ServerConfig.model_validate({"command": "true", "sandbox": {"backend": backend}})
        chosen[backend] = type(transport_for(config))
    assert {kind: cls.__name__ for kind, cls in chosen.items()} == {
        "http": "HttpTransport", "none": "StdioTransport", "bwrap": "BwrapTransport", "docker": "DockerTransport"}
    assert all(isinstance(transport, Transport) for transport in TRANSPORTS.values())
