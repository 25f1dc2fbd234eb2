"""The house's rule (README, "How samcli is built"): each module imports only its own floor or the ones
below it, so the engine never depends on the study, paper or CLI layers built on top of it."""
from __future__ import annotations

import ast
from pathlib import Path

import samcli

FLOORS = {
    "samcli.errors": 0, "samcli.ascent": 0, "samcli._version": 0, "samcli.objective": 0, "samcli.spec": 0,
    "samcli.curvature": 1, "samcli.methods": 1, "samcli.msam": 1,
    "samcli.config": 2,
    "samcli.data": 3, "samcli.models": 3, "samcli.runs": 3, "samcli.task": 3,
    "samcli.sharpness": 4,
    "samcli.train": 5,
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
