"""The house's rule (README, "How samcli is built"): each module imports only its own floor or the ones
below it, so the engine never depends on the study, paper or CLI layers built on top of it."""
from __future__ import annotations

import ast
from pathlib import Path

import samcli

FLOORS = {
    "samcli.errors": 0, "samcli.ascent": 0, "samcli._version": 0, "samcli.objective": 0, "samcli.losses": 0, "samcli.spec": 0,
    "samcli.curvature": 1, "samcli.methods": 1, "samcli.msam": 1, "samcli.rules": 1, "samcli.family": 1,
    "samcli.config": 2,
    "samcli.data": 3, "samcli.models": 3, "samcli.runs": 3, "samcli.task": 3, "samcli.targets": 3,
    "samcli.sharpness": 4,
    "samcli.train": 5, "samcli.optim": 5, "samcli.writer": 5,
    "samcli.study": 6, "samcli.paper": 6,
    "samcli.cli": 7, "samcli.render": 7, "samcli": 7,
}
ROOT = Path(samcli.__file__).parent


def _module(path: Path) -> str:
    parts = ["samcli", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> int:
    name = ".".join(module.split(".")[:2])
    assert name in FLOORS, f"{module} has no floor: add its package to FLOORS (and to the README's layer list)"
    return FLOORS[name]


def _runtime_imports(path: Path, module: str) -> set[str]:
    """samcli modules imported at run time (imports under `if TYPE_CHECKING:` only name types)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                if node.module:
                    found.add(".".join(base + [node.module]))
                else:       # `from .. import _version` imports the module samcli._version
                    found |= {".".join(base + [alias.name]) for alias in node.names}
            elif (node.module or "").startswith("samcli"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("samcli")}
    return found


def _upward(path: Path, module: str) -> list[str]:
    return [f"{module} (floor {_floor(module)}) imports {target} (floor {_floor(target)})"
            for target in sorted(_runtime_imports(path, module)) if _floor(target) > _floor(module)]


def test_no_module_imports_a_higher_floor():
    upward = [line for path in sorted(ROOT.rglob("*.py")) for line in _upward(path, _module(path))]
    assert not upward, "\n".join(upward)


def test_the_floor_check_flags_an_upward_import_but_not_a_type_only_one(tmp_path):
    source = tmp_path / "methods.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom .objective import Batch\n"
                      "if TYPE_CHECKING:\n    from .config import OptimizerConfig\n")
    assert _upward(source, "samcli.methods") == []
    source.write_text(source.read_text() + "from .study.grid import Study\n")
    assert _upward(source, "samcli.methods") == ["samcli.methods (floor 1) imports samcli.study.grid (floor 6)"]


def test_no_module_is_longer_than_400_lines():
    long = [f"{p.relative_to(ROOT)}: {n}" for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long


# ---- no import cycles ---------------------------------------------------------------------------
# Every runtime import counts, at module level or inside a function (a function-level import only
# postpones the cycle to the first call; it is still two modules that each need the other), and
# `from pkg import name` is an edge to pkg.name when that is a module. A package's __init__ running
# before its submodules is Python's order, not an edge. Cycles through `if TYPE_CHECKING:` imports
# are checked apart: they cannot fail at run time, but they are still layers that know each other.
# No known exceptions: a new cycle is a defect to remove, not to list.
KNOWN_CYCLES: list[set[str]] = []
KNOWN_TYPE_ONLY_CYCLES: list[set[str]] = []


def _imports(path: Path, module: str, type_only: bool = False) -> set[str]:
    """samcli modules `module` imports at run time (with `type_only`, under `if TYPE_CHECKING:` too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    skipped = set() if type_only else {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
        and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING" for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            if node.level:
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").startswith("samcli"):
                base = node.module
            else:
                continue
            found.update(f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("samcli"))
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(component)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def _import_graph(type_only: bool = False) -> dict[str, set[str]]:
    return {_module(p): _imports(p, _module(p), type_only) for p in sorted(ROOT.rglob("*.py"))}


def _assert_cycles_known(cycles: list[set[str]], known: list[set[str]]) -> None:
    new = [sorted(c) for c in cycles if c not in known]
    assert not new, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in new)
    gone = [sorted(c) for c in known if c not in cycles]
    assert not gone, f"these known cycles are gone: remove them from the known list: {gone}"


def test_no_import_cycles_among_samcli_modules():
    _assert_cycles_known(import_cycles(_import_graph()), KNOWN_CYCLES)


def test_no_import_cycles_through_type_only_imports_either():
    runtime = import_cycles(_import_graph())
    _assert_cycles_known([c for c in import_cycles(_import_graph(type_only=True)) if c not in runtime],
                         KNOWN_TYPE_ONLY_CYCLES)


def test_the_cycle_check_finds_a_cycle_and_not_a_chain(tmp_path):
    chain = {"a": {"b"}, "b": {"c"}, "c": set(), "d": {"d"}}
    assert import_cycles(chain) == [{"d"}]
    assert sorted(map(sorted, import_cycles({**chain, "c": {"a"}}))) == [["a", "b", "c"], ["d"]]
    source = tmp_path / "grid.py"        # `from . import spec` is the module spec; a function's import counts
    source.write_text("from typing import TYPE_CHECKING\nfrom . import spec\nfrom .rundir import RunRecord\n"
                      "if TYPE_CHECKING:\n    from .table import x\ndef f():\n    from .report import y\n")
    found = {"samcli.study.spec", "samcli.study.rundir", "samcli.study.report"}
    assert _imports(source, "samcli.study.grid") == found
    assert _imports(source, "samcli.study.grid", type_only=True) == found | {"samcli.study.table"}
