"""The simulator is standard library only; matplotlib is imported lazily, in plots.py alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sllm.experiments.suite
import sllm.sim

SIM_DIR = Path(sllm.sim.__file__).parent
EXPERIMENTS_DIR = Path(sllm.experiments.suite.__file__).parent


def imported_modules(source: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_simulator_imports_only_the_standard_library_and_sllm() -> None:
    allowed = set(sys.stdlib_module_names) | {"sllm"}
    for source in sorted(SIM_DIR.glob("*.py")):
        extra = imported_modules(source, top_level_only=False) - allowed
        assert not extra, f"{source.name} imports {extra}"


def test_matplotlib_is_imported_lazily_and_only_for_plots() -> None:
    for source in sorted(EXPERIMENTS_DIR.glob("*.py")):
        assert "matplotlib" not in imported_modules(source, top_level_only=True), source.name
        if source.name != "plots.py":
            assert "matplotlib" not in imported_modules(source, top_level_only=False)
