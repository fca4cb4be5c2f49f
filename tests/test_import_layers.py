"""The layering of DESIGN.md, checked on the source: imports point only down runner → gateway →
simulators → sandboxes → the base layer (the modules directly in `simgate/`: errors, files, canonical JSON,
results, the HTML shell), anywhere in a module, deferred imports included; the runner takes from below only
what it is allowed to (the gateway as a client and its shared config, the simulators' fidelity and synthesis —
never a helper from a lower layer: helpers live in the base layer); every import goes through the one
`simgate` namespace; and no package has an import cycle among its modules' top-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runner", "gateway", "simulators", "sandboxes")  # the top-level folders, linked into simgate/
LAYERS = (*PACKAGES, "base")  # each may import only those after it
# What the runner may import from the layers below, with why (prefixes of module names).
RUNNER_MAY_IMPORT = {
    "simgate.gateway.cli": "its sub-commands join the one `simgate` command",
    "simgate.gateway.config.execution": "the modes a run asks the gateway for",
    "simgate.gateway.cache.store": "onboarding takes its invalid probe calls back out of the store it seeded",
    "simgate.gateway.naming": "how the gateway names a server's tools (`server__tool`), to read them back",
    "simgate.gateway.upstream.start_hints": "onboarding reads a server's stderr as the gateway does, to say why it "
                                            "never answered on stdio",
    "simgate.simulators.fidelity": "call-level fidelity metrics, which trajectory fidelity and onboarding build on",
    "simgate.simulators.schema": "onboarding's schema-derived probe arguments are the schema simulator's synthesis",
    "simgate.sandboxes.workdir": "onboarding diffs a probed server's work directory, which the sandbox names",
}


def _layer(module: str) -> str | None:
    """The layer of a `simgate.…` module name, or None for a module outside the project."""
    parts = module.split(".")
    if parts[0] != "simgate":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "base"


def _modules() -> dict[str, Path]:
    """Every module of the project by its import name (the packages as their folders, seen through simgate/)."""
    found = {}
    for path in (REPO_ROOT / "simgate").glob("*.py"):
        if path.stem == "__main__":
            continue  # `python -m simgate`: the command line's entry, above every layer
        found[f"simgate.{path.stem}".removesuffix(".__init__")] = path
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            name = ".".join(("simgate", *path.relative_to(REPO_ROOT).with_suffix("").parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_imports_point_only_down_the_layers() -> None:
    wrong = []
    for name, path in _modules().items():
        layer = LAYERS.index(_layer(name) or "")
        for imported in _imports(path, top_level_only=False):
            target = _layer(imported)
            if target is not None and LAYERS.index(target) < layer:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def test_runner_imports_from_below_only_what_it_is_allowed() -> None:
    wrong = []
    for name, path in _modules().items():
        if _layer(name) != "runner":
            continue
        for imported in _imports(path, top_level_only=False):
            if _layer(imported) in (None, "runner", "base"):
                continue
            if not any(imported == allowed or imported.startswith(f"{allowed}.") for allowed in RUNNER_MAY_IMPORT):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_import_of_the_project_goes_through_the_simgate_namespace() -> None:
    # From a source tree the folders also import by their bare names (`gateway.app`): a module loaded under
    # both names would exist twice, with two copies of its state and classes that do not compare equal.
    wrong = [f"{name} imports {imported}" for name, path in _modules().items()
             for imported in _imports(path, top_level_only=False) if imported.split(".")[0] in PACKAGES]
    for path in sorted((REPO_ROOT / "tests").glob("*.py")) + sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        wrong += [f"{path.relative_to(REPO_ROOT)} imports {imported}"
                  for imported in _imports(path, top_level_only=False) if imported.split(".")[0] in PACKAGES]
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_cycle_inside_a_package(package: str) -> None:
    modules = {name: path for name, path in _modules().items() if _layer(name) == package}
    graph = {name: {m for m in _imports(path, top_level_only=True) if m in modules and m != name}
             for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
