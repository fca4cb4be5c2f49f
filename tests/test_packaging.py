"""`pip install simgate` as a user gets it: a wheel built from the tree holds one top-level name, `simgate`
(the four layer folders inside it, followed through simgate/'s links), the page's static files, and a
`simgate` that runs from that install alone, away from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("gateway", "runner", "simulators", "sandboxes")


def _source_copy(tmp_path: Path) -> Path:
    """The files a wheel is built from, links kept as links (the build must follow them itself)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in (*LAYERS, "simgate"):
        shutil.copytree(REPO_ROOT / name, source / name, symlinks=True, ignore=ignore)
    assert all((source / "simgate" / name).is_symlink() for name in LAYERS)
    return source


def test_the_wheel_installs_one_top_level_name_and_runs_from_it(tmp_path: Path) -> None:
    source = _source_copy(tmp_path)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("simgate-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"simgate"}, sorted(tops)
    for expected in ("simgate/__main__.py", "simgate/errors.py", "simgate/gateway/app.py",
                     "simgate/runner/commands.py", "simgate/simulators/__init__.py",
                     "simgate/sandboxes/__init__.py", "simgate/gateway/ui/static/index.html",
                     "simgate/gateway/ui/static/views/recordings.js"):
        assert expected in names, expected

    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                                "--disable-pip-version-check", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # `bin/` holds the `simgate` script (--target puts it there); the only package is simgate.
    assert {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")} - {"bin"} == {"simgate"}
    # Away from the tree: the install's own copy is what runs, and the bare folder names are not importable.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    code = ("import importlib.util, simgate.gateway.cli as cli, simgate.runner.commands\n"
            "print(cli.__file__)\n"
            "print([n for n in ('gateway', 'runner', 'simulators', 'sandboxes') if importlib.util.find_spec(n)])")
    probe = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    where, bare = probe.stdout.splitlines()
    assert Path(where).is_relative_to(site), where
    assert bare == "[]"
    helped = subprocess.run([sys.executable, "-m", "simgate", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout and "pipeline" in helped.stdout
