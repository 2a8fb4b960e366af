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
