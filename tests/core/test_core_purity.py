"""The core stays sans-I/O: no event loop, sockets, threads, wall clock or global random.

Every module under ``src/sllm/core`` is parsed (never imported, so nothing it does at import
time can hide a violation) and its imports and calls are checked. The checker itself is
tested on synthetic snippets, so a broken checker cannot pass silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sllm.core

CORE_DIR = Path(sllm.core.__file__).parent
# Modules whose presence means I/O, concurrency or the wall clock.
FORBIDDEN_MODULES = frozenset({"asyncio", "socket", "threading", "time", "selectors", "subprocess"})
# `random.Random` (a seeded generator, passed in) is allowed; the module-level functions share
# one hidden global generator and are not.
ALLOWED_RANDOM_ATTRS = frozenset({"Random"})


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Every forbidden import or global-random use in `source`, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    random_aliases: set[str] = set()  # names bound to the `random` module
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    flag(node, f"import {alias.name}")
                if alias.name == "random":
                    random_aliases.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                flag(node, f"from {node.module} import ...")
            if node.module == "random":
                for alias in node.names:
                    if alias.name not in ALLOWED_RANDOM_ATTRS:
                        flag(node, f"from random import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr not in ALLOWED_RANDOM_ATTRS
        ):
            flag(node, f"{node.value.id}.{node.attr} (the global random generator)")
    return found


def core_modules() -> list[Path]:
    return sorted(CORE_DIR.rglob("*.py"))


def test_core_package_has_the_expected_modules() -> None:
    names = {path.stem for path in core_modules()}
    assert {"tiers", "cost", "view", "placement", "worker", "coordinator"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda path: path.name)
def test_core_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), str(path)) == []


# -- the checker checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import asyncio",
        "import socket as s",
        "import threading",
        "import selectors",
        "import subprocess",
        "import asyncio.events",
        "from time import monotonic",
        "from asyncio import sleep",
        "import random\nx = random.random()",
        "import random\nrandom.shuffle([1, 2])",
        "import random\nrandom.choice([1])",
        "import random\nrandom.randint(1, 2)",
        "import random\nrandom.uniform(0, 1)",
        "import random\nrandom.randrange(3)",
        "import random\nrandom.sample([1], 1)",
        "import random as r\nr.random()",
        "import random\nf = random.random",  # a reference is as bad as a call
        "from random import choice",
        "def f():\n    import time\n    return time.time()",
    ],
)
def test_checker_flags_impure_code(snippet: str) -> None:
    assert violations(snippet) != []


@pytest.mark.parametrize(
    "snippet",
    [
        "import random\nrng = random.Random(7)\nrng.random()",
        "import random\ndef f(rng: random.Random) -> float:\n    return rng.uniform(0, 1)",
        "from random import Random\nRandom(1).choice([1])",
        "import math\nimport bisect\nfrom collections import OrderedDict",
        "from sllm.core.tiers import Tier",
        "timeout = 3\ntime_s = 1.0",  # names that merely look like modules
    ],
)
def test_checker_accepts_pure_code(snippet: str) -> None:
    assert violations(snippet) == []


def test_checker_reports_file_and_line() -> None:
    found = violations("x = 1\nimport time\n", "core/fake.py")
    assert found == ["core/fake.py:2: import time"]
