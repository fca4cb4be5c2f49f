"""Each real third-party server of the catalog, started offline straight from its install.

For every server in `tests/real_servers.py`: prepare a fresh sandbox, launch the installed
entry point (no uvx/npx) with the official SDK's stdio client, check tools/list carries
the catalog's tools, then make the example calls in order and check their outcome and
content. Install root: $SIMGATE_SERVERS_DIR (default ~/.cache/simgate-test-servers),
filled by `.ci/install-servers`. Skipped when nothing is installed there (or for an optional
server whose Python is missing); a required server missing from a populated root fails.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, ImageContent, TextContent

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_servers as rs

pytestmark = pytest.mark.anyio

START_AND_CALL_TIMEOUT_S = 90


def _text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def _check_call(call: rs.ExampleCall, result: CallToolResult, work: str) -> None:
    text = _text(result)
    where = f"{call.tool}({json.dumps(call.arguments)[:120]}) -> isError={result.is_error} {text[:400]!r}"
    assert result.content, f"empty content: {where}"
    if call.expect == "isError":
        assert result.is_error, f"expected isError: {where}"
    else:
        assert not result.is_error, f"unexpected isError: {where}"
    if call.image:
        images = [c for c in result.content if isinstance(c, ImageContent)]
        assert images and all(i.data for i in images), f"expected a non-empty image: {where}"
    else:
        assert text.strip(), f"empty text: {where}"
    if call.equals is not None:
        assert text == call.equals.replace(rs.WORK, work), where
    for piece in call.contains:
        assert piece.replace(rs.WORK, work) in text, f"missing {piece!r}: {where}"
    if call.matches is not None:
        assert re.fullmatch(call.matches, text), f"does not match {call.matches!r}: {where}"


@pytest.mark.parametrize("name", [s.name for s in rs.SERVERS])
async def test_real_server_offline(name: str, tmp_path: Path) -> None:
    root = rs.default_install_root()
    server = rs.get(name)
    if not rs.installed(name, root):
        if not rs.installed_servers(root):
            pytest.skip(f"no real server installed under {root}: run .ci/install-servers")
        if server.optional:
            pytest.skip(f"optional {name} not installed under {root} (needs Python {server.python})")
        pytest.fail(f"{name} not installed under {root} while others are: run .ci/install-servers")
    work = rs.prepare_work_dir(name, tmp_path)
    command, args, env = rs.server_command(name, root, tmp_path)
    assert Path(command).is_absolute(), command
    assert "uvx" not in command and "npx" not in command
    params = StdioServerParameters(command=command, args=args, env=env, cwd=work)

    with open(tmp_path / "stderr.log", "w+") as errlog:  # noqa: ASYNC230 - a local file, before any I/O
        try:
            with anyio.fail_after(START_AND_CALL_TIMEOUT_S):
                async with (
                    stdio_client(params, errlog=errlog) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    listed = await session.list_tools()
                    names = {t.name for t in listed.tools}
                    missing = set(server.tools) - names
                    assert not missing, f"tools/list lacks {sorted(missing)}; has {sorted(names)}"
                    for call in server.calls:
                        result = await session.call_tool(call.tool, rs.expand(call.arguments, tmp_path))
                        _check_call(call, result, str(work))
        except BaseException:
            errlog.seek(0)
            sys.stderr.write(f"--- {name} stderr ---\n{errlog.read()[-4000:]}\n")
            raise


def test_catalog_shape() -> None:
    """The catalog covers both registries, servers pinned to mcp<2, and 1+ example calls each."""
    names = [s.name for s in rs.SERVERS]
    assert len(names) == len(set(names)) >= 10
    assert {s.registry for s in rs.SERVERS} == {"pypi", "npm"}
    assert sum("mcp<2" in s.constraints for s in rs.SERVERS) >= 2
    for s in rs.SERVERS:
        assert s.calls and any(c.expect == "ok" for c in s.calls), s.name
        for c in s.calls:
            if c.equals is not None and c.expect == "ok":
                assert c.equals.strip(), (s.name, c.tool)
