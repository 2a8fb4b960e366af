"""Packages import only packages below them: the layer order of `sllm`, written once and checked.

Why: a cycle between packages (the runtime importing the API that imports the runtime) means
neither can be read, tested or replaced alone, and the pure core stays pure only while
nothing above it leaks in. The order, bottom to top, is `LAYERS`:

- ``logs``, ``records``: helpers that import nothing of ours;
- ``wire`` (the UDP message types and codec), then ``core`` (the pure state machines);
- ``workload`` (arrivals, traces, model sizes), ``catalog`` (the served models, plain
  data), ``hub`` (Hugging Face sources), ``sources`` (what a model's source holds),
  ``store`` (checkpoints on disk), ``loading`` (checkpoints read fast into memory),
  ``engines`` (what runs a request), ``registry`` (the models deployed at runtime);
- ``config`` (settings from the environment), ``hosts`` (the core's machines on a driver);
- ``sim`` (the simulator), ``api`` (the HTTP apps), ``runtime`` (the live services: it
  builds the servers and mounts the apps), ``experiments``, ``bench``,
  ``admin_cli`` (the admin API's commands), ``cli``, ``__main__``.

The rules: a module imports only modules of its own package and of packages below it;
and `core` imports, of ours, only ``wire`` and ``records`` (`CORE_MAY_IMPORT`), whatever
the order allows. A lower package that needs something of a higher one declares a
`typing.Protocol` for it and is handed an implementation (`sllm.catalog.EngineRules`).

What counts as an import: every ``import`` and ``from ... import`` anywhere in a module
(inside functions, and under ``if TYPE_CHECKING:`` too: a type-only import still ties the
lower package to the higher one's names, and mypy reads it as a real cycle), relative ones
resolved. Modules are parsed with `ast`, never imported. Not counted: modules named in
strings (the engine registry's ``"module:Class"`` entries, read by `importlib`).

A new top-level package or module fails `test_every_package_has_a_place_in_the_order`
until it is placed in `LAYERS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sllm

SOURCE_ROOT = Path(sllm.__file__).parent

# Bottom to top; each name is a package (a folder) or a top-level module of `sllm`.
# ``__init__`` is `sllm/__init__.py` itself: everything may read its version, it imports nothing.
LAYERS: tuple[str, ...] = (
    "__init__",
    "logs",
    "records",
    "wire",
    "core",
    "workload",
    "catalog",
    "hub",
    "sources",
    "store",
    "loading",
    "engines",
    "registry",
    "config",
    "hosts",
    "sim",
    "api",
    "runtime",
    "experiments",
    "bench",
    "admin_cli",
    "cli",
    "__main__",
)
CORE_MAY_IMPORT = frozenset({"wire", "records"})


@dataclass(frozen=True, slots=True)
class Import:
    """One import of one of our packages by a module of another."""

    where: str  # file:line, relative to src/sllm
    importer: str  # the importing module's package
    imported: str  # the imported module's package

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.imported}"


def package_of(parts: tuple[str, ...]) -> str:
    """The layer unit of a module, from its path's parts under src/sllm."""
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def imports_in(source: str, relative: Path, packages: frozenset[str]) -> Iterator[Import]:
    """Every import in `source` (the module at `relative` under src/sllm) of a package of
    ours other than its own."""
    parts = relative.parts
    importer = package_of(parts)
    tree = ast.parse(source, str(relative))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [_absolute(node, parts)]
            if targets[0] == "sllm":  # `from sllm import wire`: the names are the modules
                targets = [f"sllm.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            names = target.split(".")
            if names[0] != "sllm":
                continue
            imported = names[1] if len(names) > 1 and names[1] in packages else "__init__"
            if imported != importer:
                yield Import(f"{relative}:{node.lineno}", importer, imported)


def _absolute(node: ast.ImportFrom, parts: tuple[str, ...]) -> str:
    """The absolute module name of a ``from`` import, relative ones resolved."""
    if node.level == 0:
        return node.module or ""
    folder = ["sllm", *parts[:-1]]
    base = folder[: len(folder) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def our_packages(root: Path = SOURCE_ROOT) -> frozenset[str]:
    return frozenset(package_of(path.relative_to(root).parts) for path in root.rglob("*.py"))


def all_imports(root: Path = SOURCE_ROOT) -> list[Import]:
    packages = our_packages(root)
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        found.extend(imports_in(path.read_text(encoding="utf-8"), relative, packages))
    return found


def upward(imports: list[Import], layers: tuple[str, ...] = LAYERS) -> list[Import]:
    """The imports of a package above the importer's own."""
    rank = {name: index for index, name in enumerate(layers)}
    return [
        i
        for i in imports
        if i.importer in rank and i.imported in rank and rank[i.imported] > rank[i.importer]
    ]


def outside_core_allowance(imports: list[Import]) -> list[Import]:
    return [i for i in imports if i.importer == "core" and i.imported not in CORE_MAY_IMPORT]


def _listing(found: list[Import]) -> str:
    """One line for each import, for an assertion's message."""
    return "".join(f"\n  {i}" for i in found)


def test_every_package_has_a_place_in_the_order() -> None:
    unplaced = sorted(our_packages() - set(LAYERS))
    assert not unplaced, f"place these in LAYERS (tests/test_layering.py): {unplaced}"


def test_no_package_imports_one_above_it() -> None:
    found = upward(all_imports())
    order = " < ".join(LAYERS)
    assert not found, f"{len(found)} imports point up the layer order {order}:{_listing(found)}"


def test_the_core_imports_only_wire_and_records() -> None:
    found = outside_core_allowance(all_imports())
    allowed = sorted(CORE_MAY_IMPORT)
    assert not found, f"the core may import only {allowed} of ours:{_listing(found)}"


# -- the checker checks -------------------------------------------------------------------

PACKAGES = frozenset({"__init__", "api", "core", "runtime", "wire", "records", "cli"})


def _imports(source: str, path: str) -> list[str]:
    return [str(i) for i in imports_in(source, Path(path), PACKAGES)]


@pytest.mark.parametrize(
    ("source", "path", "expected"),
    [
        ("import sllm.runtime.http", "api/x.py", "api/x.py:1: api imports runtime"),
        ("from sllm.runtime import http", "api/x.py", "api/x.py:1: api imports runtime"),
        ("from sllm import runtime", "api/x.py", "api/x.py:1: api imports runtime"),
        ("from sllm import __version__", "api/x.py", "api/x.py:1: api imports __init__"),
        ("from ..runtime.http import X", "api/x.py", "api/x.py:1: api imports runtime"),
        ("from ...runtime import X", "api/sub/x.py", "api/sub/x.py:1: api imports runtime"),
        ("from .. import runtime", "api/x.py", "api/x.py:1: api imports runtime"),
        ("from sllm.api import x", "cli.py", "cli.py:1: cli imports api"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sllm.runtime import a",
            "api/x.py",
            "api/x.py:3: api imports runtime",
        ),
        ("def f():\n    from sllm.runtime import a", "api/x.py", "api/x.py:2: api imports runtime"),
    ],
)
def test_the_checker_finds_each_form_of_import(source: str, path: str, expected: str) -> None:
    assert _imports(source, path) == [expected]


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("from sllm.api.errors import ApiError", "api/x.py"),  # its own package
        ("from . import errors", "api/x.py"),
        ("from .errors import ApiError", "api/x.py"),
        ("import json\nfrom fastapi import FastAPI", "api/x.py"),  # not ours
        ("import sllmx", "api/x.py"),
    ],
)
def test_the_checker_ignores_imports_within_a_package_or_not_ours(source: str, path: str) -> None:
    assert _imports(source, path) == []


def test_an_upward_import_is_reported_and_a_downward_one_is_not() -> None:
    down = Import("runtime/a.py:1", "runtime", "api")
    up = Import("api/b.py:2", "api", "runtime")
    unknown = Import("new/c.py:3", "new", "api")  # unplaced: the placement test catches it
    assert upward([down, up, unknown]) == [up]


def test_the_core_allowance_is_narrower_than_the_order() -> None:
    allowed = Import("core/a.py:1", "core", "wire")
    below_but_not_allowed = Import("core/b.py:2", "core", "logs")
    assert upward([below_but_not_allowed]) == []
    assert outside_core_allowance([allowed, below_but_not_allowed]) == [below_but_not_allowed]
