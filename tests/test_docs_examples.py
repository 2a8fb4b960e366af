"""The README's and docs' examples work as written: the values they show are accepted.

An example that fails the rule it illustrates (``API_KEYS=key1,key2`` against the
8-character minimum) sends a reader to an error on the first try.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sllm.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "src/sllm/config.py"]
# `API_KEYS=a,b` in a command, or the value column of the README's configuration table,
# or the config module's docstring table.
API_KEYS_EXAMPLE = re.compile(
    r"API_KEYS=([^\s`'\"\\]+)|\| `API_KEYS` \| \w+ \| `([^`]+)`|API_KEYS +none +``([^`]+)``"
)


def api_keys_examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCUMENTS:
        for match in API_KEYS_EXAMPLE.finditer(path.read_text(encoding="utf-8")):
            value = next(group for group in match.groups() if group)
            found.append((path.relative_to(ROOT).as_posix(), value))
    return found


def test_the_docs_show_api_keys_examples() -> None:
    shown = {path for path, _ in api_keys_examples()}
    assert {"README.md", "docs/deployment.md", "src/sllm/config.py"} <= shown


@pytest.mark.parametrize(("path", "value"), api_keys_examples())
def test_every_api_keys_example_is_accepted(path: str, value: str) -> None:
    settings = Settings.from_env({"API_KEYS": value})
    assert len(settings.api_keys) == len(value.split(",")), (path, value)


def test_the_readme_installs_the_cpu_build_of_torch_from_pytorchs_index() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    installs = [line for line in readme.splitlines() if re.match(r"pip install torch\b", line)]
    assert installs, "no torch install line"
    for line in installs:
        assert "--index-url https://download.pytorch.org/whl/cpu" in line, line


# -- docs/benchmarks.md opens with one table of current results -----------------------------

BENCHMARKS = ROOT / "docs/benchmarks.md"
RESULT_COLUMNS = ["measure", "target", "result", "date", "command"]


def current_results() -> tuple[list[str], list[list[str]], int]:
    """The header and rows of the first table of docs/benchmarks.md, and how many tables
    come before its history."""
    text = BENCHMARKS.read_text(encoding="utf-8")
    before_history = text.split("\n## History", 1)[0]
    tables = re.findall(r"(?:^\|.*\|\n)+", before_history, flags=re.MULTILINE)
    assert tables, "docs/benchmarks.md has no table before its history"
    lines = tables[0].strip().splitlines()
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    return cells[0], cells[2:], len(tables)


def test_the_benchmarks_doc_opens_with_one_table_of_current_results() -> None:
    text = BENCHMARKS.read_text(encoding="utf-8")
    headings = re.findall(r"^##+ .*", text, flags=re.MULTILINE)
    assert headings[:2] == ["## Current results", "## History"], headings[:2]
    header, rows, tables = current_results()
    assert tables == 1
    assert header == RESULT_COLUMNS
    assert len(rows) >= 6
    for row in rows:
        assert len(row) == len(RESULT_COLUMNS), row
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[3]), row
        assert re.fullmatch(r"`[^`]+`", row[4]), row


def _bench_names() -> set[str]:
    import argparse

    from sllm.cli import build_parser

    def choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(action.choices)

    return set(choices(choices(build_parser())["bench"]))


def test_every_benchmark_has_a_current_result_and_every_command_parses() -> None:
    from sllm.cli import build_parser

    _, rows, _ = current_results()
    benchmarks: set[str] = set()
    for row in rows:
        words = row[4].strip("`").split()
        if words[0] == "PYTHONPATH=src":
            words = words[1:]
        if words[:3] == ["python3", "-m", "sllm"]:
            args = build_parser().parse_args(words[3:])  # exits on a bad argument
            if args.command == "bench":
                benchmarks.add(words[4])
        else:
            assert words[0] == "python3" and (ROOT / words[1]).is_file(), row[4]
    assert benchmarks == _bench_names()
