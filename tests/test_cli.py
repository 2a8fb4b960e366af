"""The `sllm` command's own surface: ``--version`` and what ``--help`` says.

Help texts are checked phrase by phrase, with whitespace folded, because argparse wraps
them to the terminal's width.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sllm
from sllm.cli import build_parser
from sllm.experiments.launcher import child_environment


def test_version_prints_the_package_version_and_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sllm", "--version"],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sllm {sllm.__version__}\n"


def test_the_package_metadata_reads_the_same_version() -> None:
    """One source of truth: pyproject.toml takes the version from `sllm.__version__`."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sllm.__version__"}


def help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_the_worker_and_node_are_not_described_as_sim_only(capsys) -> None:
    top = help_of(capsys)
    assert "sim engine" not in top
    worker = help_of(capsys, "worker")
    assert "each model's engine" in worker
    node = help_of(capsys, "node")
    assert "runs requests with the sim engine," not in node
    assert "each model's engine (the sim engine unless MODEL_CATALOG names another" in node


def test_http_ports_say_they_serve_the_front_door(capsys) -> None:
    coordinator = help_of(capsys, "coordinator")
    assert "--http-port HTTP_PORT HTTP port of the front door (OpenAI API), health" in coordinator
    assert "HTTP_PORT (coordinator, default 8080): the front door (OpenAI API)" in coordinator
    worker = help_of(capsys, "worker")
    assert "HTTP port of the model requests the front door proxies here, health" in worker
    node = help_of(capsys, "node")
    assert "front door, health and metrics HTTP port" in node


def test_openapi_has_a_description(capsys) -> None:
    text = help_of(capsys, "openapi")
    assert "Print the OpenAPI document of the front door's OpenAI-compatible routes" in text
