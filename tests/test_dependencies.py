"""Every module the product imports is a declared dependency of the package (not one that arrives by
chance through another package or the test extra): deptry over gateway/, simulators/, sandboxes/ and
runner/ against pyproject.toml. `.ci/smoke-example` proves the same on a venv with no extras."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_deptry(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deptry", ".", "--no-ansi"], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_every_import_of_the_product_is_a_declared_dependency() -> None:
    result = run_deptry(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No dependency issues found" in result.stdout + result.stderr


def test_an_undeclared_import_is_caught(tmp_path: Path) -> None:
    # The check itself can fail: the same tree with `packaging` (imported by sandboxes/install/spec.py)
    # taken out of the declared dependencies is reported.
    for name in ("gateway", "simulators", "sandboxes", "runner", "simgate"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert '"packaging>=' in pyproject
    (tmp_path / "pyproject.toml").write_text(
        "\n".join(line for line in pyproject.splitlines() if '"packaging>=' not in line))
    result = run_deptry(tmp_path)
    assert result.returncode != 0
    assert "sandboxes/install/spec.py" in result.stdout + result.stderr
    assert "'packaging'" in result.stdout + result.stderr


def test_building_the_command_line_loads_no_heavy_library() -> None:
    # Every `simgate` command builds every parser; `serve` must not carry the data pipeline's libraries
    # (pyarrow, numpy and scipy: ~100 MB of the gateway's RSS when they were imported at module level),
    # nor Ray (an optional extra, imported only by `--ray`).
    code = ("import sys, simgate.gateway.cli; simgate.gateway.cli.build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'numpy', 'scipy', 'datasets', "
            "'datasketch', 'ray'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=REPO_ROOT, env={**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
