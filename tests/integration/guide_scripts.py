"""Running one of the guide's root scripts (`centralized_simulation.py`,
`decentralized_simulation.py`) as a user would, for the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_guide_script(
    script: str,
    arguments: Sequence[str],
    report_path: Path,
    timeout_s: float,
    find_marked: Callable[[str], list[int]],
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run `script` from the project root with `arguments` and ``--json report_path``,
    without PYTHONPATH (the scripts find the package themselves) and with a fresh process
    marker; check that it succeeded and that no process it started outlived it; return
    what it printed and its JSON report."""
    marker = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["SLLM_TEST_MARKER"] = marker
    done = subprocess.run(
        [sys.executable, script, *arguments, "--json", str(report_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert find_marked(marker) == [], f"a process started by {script} outlived it"
    return done, json.loads(report_path.read_text())
