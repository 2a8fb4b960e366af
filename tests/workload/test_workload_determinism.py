"""The workload package never reads the clock or the global random: only injected Randoms."""

from __future__ import annotations

import ast
from pathlib import Path

import sllm.workload

PACKAGE_DIR = Path(sllm.workload.__file__).parent
FORBIDDEN_IMPORTS = {"time", "asyncio", "socket", "threading", "secrets"}
# Module-level functions of `random` draw from the hidden global generator.
ALLOWED_RANDOM_ATTRIBUTES = {"Random"}
CLOCK_READS = {"today", "now", "utcnow", "fromtimestamp"}


def test_no_clock_no_global_random() -> None:
    sources = sorted(PACKAGE_DIR.glob("*.py"))
    assert sources
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
                assert not names & FORBIDDEN_IMPORTS, f"{source.name} imports {names}"
            elif isinstance(node, ast.ImportFrom):
                module = (node.module or "").split(".")[0]
                assert module not in FORBIDDEN_IMPORTS, f"{source.name} imports {module}"
                if module == "random":
                    imported = {alias.name for alias in node.names}
                    assert imported <= ALLOWED_RANDOM_ATTRIBUTES, f"{source.name}: {imported}"
                if module == "datetime":
                    imported = {alias.name for alias in node.names}
                    assert imported <= {"date"}, f"{source.name}: {imported}"
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
            ):
                assert node.attr in ALLOWED_RANDOM_ATTRIBUTES, f"{source.name}: random.{node.attr}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in CLOCK_READS, f"{source.name} reads the clock: {node.attr}"
