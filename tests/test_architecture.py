"""The package's structure: imports flow one way (lazy ones included), no cycles, small modules.

Floors, lowest first. A module may import from its own floor's package and from lower floors only.
``models`` sits on the ground floor of the learned side: it imports the base modules and nothing else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vlabench"
FLOORS: list[tuple[str, ...]] = [
    ("contracts", "fileio", "devices", "processes"),
    ("models",),
    ("language",),
    ("sim",),
    ("tasks",),
    ("experts",),
    ("env",),
    ("suite",),
    ("data",),
    ("agents", "wrappers"),
    ("train",),
    ("eval",),
    ("report",),
    ("pipeline",),
    ("cli",),
]
RANK = {part: i for i, parts in enumerate(FLOORS) for part in parts}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
DATA_TABLES = {"vlabench.sim.library:_named"}
"""Functions that only spell out a data table (the object catalogue), exempt from the length limit."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The vlabench module an import of ``name`` loads (a module, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """vlabench modules ``module`` imports anywhere in its body, lazy imports included."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` loads the submodule; `from pkg import name` loads the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for n in names:
            if n.startswith("vlabench"):
                target = _resolve(n)
                if target and target != module:
                    found.add(target)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _component(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package itself (vlabench/__init__.py)


def test_every_component_has_a_floor():
    missing = sorted({c for m in MODULES if (c := _component(m)) and c not in RANK})
    assert not missing, f"add these to FLOORS: {missing}"


def test_imports_only_go_down():
    bad = []
    for src, targets in GRAPH.items():
        a = _component(src)
        for dst in targets:
            b = _component(dst)
            if a is None or b is None or a == b:
                continue  # the package entry point, and imports within one package, are checked for cycles
            if RANK[b] >= RANK[a]:
                bad.append(f"{src} -> {dst}")
    assert not bad, "imports that reach up or sideways:\n" + "\n".join(bad)


def test_models_import_only_the_base_modules():
    base = set(FLOORS[0])
    bad = [f"{src} -> {dst}" for src, ts in GRAPH.items() if _component(src) == "models"
           for dst in ts if _component(dst) not in base | {"models"}]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w == "vlabench":  # `from vlabench import __version__`: the entry point, not a floor
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in GRAPH:
        if m not in index:
            visit(m)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_function_sizes(module):
    path = MODULES[module]
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path} has {len(text.splitlines())} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and f"{module}:{n.name}" not in DATA_TABLES
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_walker_sees_lazy_imports():
    # vlabench.agents.spec imports the checkpoint loader inside PolicySpec.build/describe only
    assert "vlabench.models.checkpoint" in GRAPH["vlabench.agents.spec"]
