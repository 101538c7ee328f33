"""The package's architecture, checked from the source: no import cycles, the core never imports the edges.

The graph is built with :mod:`ast` from every ``import`` in ``flowsim/`` (module level and inside functions),
each edge pointing at the most specific module an import names: ``from ..solvers import FilippovDriver`` is
an edge to ``flowsim.solvers`` (its ``__init__``), ``from ..solvers.base import AbstractDriver`` an edge to
``flowsim.solvers.base``. A module inside a package therefore imports its siblings by their files, not
through the package ``__init__`` that re-exports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowsim"
EDGES = "flowsim.lab"  # the CLI, configurations, experiments, plotting, validation
MAX_LINES = 900


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <dots><name> import ...`` inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module → the flowsim modules it imports (anywhere in its source)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # `from pkg import sub` names the submodule where one exists, else the package itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target.startswith("flowsim") and target != name:
                    while target not in modules and "." in target:  # `import flowsim.x.y` as a name path
                        target = target.rsplit(".", 1)[0]
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_should():
    """Guards the parser: known edges of the layout are found (a graph of no edges would pass the tests below)."""
    graph = import_graph()
    assert "flowsim.simulation" in graph["flowsim"]
    assert any(t.startswith("flowsim.solvers") for t in graph["flowsim.simulation"])
    assert any(t.startswith("flowsim.simulation") for t in graph["flowsim.lab.experiment"])
    assert sum(len(v) for v in graph.values()) > 100


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles between flowsim modules:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_subpackages_form_layers():
    """Between the top-level units (``flowsim.solvers``, ``flowsim.results``, ``flowsim.analysis``, ...) imports
    point one way: the architecture ``ls`` shows is a stack, not a tangle."""
    units: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if module == "flowsim":  # the package root re-exports the public API from everywhere
            continue
        unit = ".".join(module.split(".")[:2])
        deps = units.setdefault(unit, set())
        deps.update(".".join(t.split(".")[:2]) for t in targets if t != "flowsim")
    for unit, deps in units.items():
        deps.discard(unit)
    for dep in {d for deps in units.values() for d in deps}:
        units.setdefault(dep, set())
    cycles = _cycles(units)
    assert not cycles, "subpackages that import each other:\n" + "\n".join(" ↔ ".join(c) for c in cycles)


def test_the_core_never_imports_the_edges():
    graph = import_graph()
    bad = {
        m: sorted(t for t in targets if t == EDGES or t.startswith(EDGES + "."))
        for m, targets in graph.items()
        if not (m == EDGES or m.startswith(EDGES + ".")) and m != "flowsim.__main__"
    }
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"modules outside {EDGES} import it: {bad}"


def test_only_plotting_imports_matplotlib():
    users = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "matplotlib" or n.startswith("matplotlib.") for n in names):
                users.append(name)
    assert sorted(set(users)) == ["flowsim.lab.plotting"]


def test_no_module_is_too_long():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them into named steps): {long}"


def test_importing_flowsim_loads_neither_the_edges_nor_matplotlib():
    code = (
        "import sys, flowsim; "
        "bad = [m for m in sys.modules if m.startswith('flowsim.lab') or m.startswith('matplotlib')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("old", "name"),
    [
        ("flowsim.kinks", "solve_filippov"),
        ("flowsim.references", "svm_l2"),
        ("flowsim.integrate", "StiffDriver"),
        ("flowsim.trajectory", "Trajectory"),
        ("flowsim.stream", "resume"),
        ("flowsim.solve", "simulate"),
        ("flowsim.plotting", "plot_rate_fits"),
        ("flowsim.validate", "run_validation"),
    ],
)
def test_old_module_paths_still_import(old, name):
    """User code and notebooks written against the flat layout keep working (flowsim._compat)."""
    import importlib

    module = importlib.import_module(old)
    assert callable(getattr(module, name)) or isinstance(getattr(module, name), type)


def test_python_dash_m_flowsim_help():
    run = subprocess.run([sys.executable, "-m", "flowsim", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert "run" in run.stdout and "validate" in run.stdout
