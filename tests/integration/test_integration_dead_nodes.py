"""Integration: `decentralized_simulation.py --kill`, a small version of the guide's run.

Five node processes on loopback; two are killed (SIGKILL) halfway through the arrivals.
Requests sent to them during the detection window, and those queued there, must be
placed again elsewhere; only requests that had started on a killed node may fail, with
``worker_lost``; and every request gets an answer (``lost`` is 0). Before the client held
its requests, the ones on a killed node waited for an hour and the run reported them
``unfinished``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KILLED = 2
# Eight requests a second for 6 s: about 2 s of gossip detection puts several on the
# killed nodes, and two small models keep every cold start (and the drain) to seconds.
ARGUMENTS = (
    *("--nodes", "5", "--duration", "6", "--kill", str(KILLED), "--rate", "8"),
    *("--models", "2", "--base-port", "0", "--drain", "15", "--seed", "7"),
    *("--status-interval", "1"),
)
RUN_TIMEOUT_S = 40.0


def test_a_killed_node_costs_at_most_the_requests_it_had_started(tmp_path, find_marked) -> None:
    report_path = tmp_path / "report.json"
    marker = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["SLLM_TEST_MARKER"] = marker
    command = [sys.executable, "decentralized_simulation.py", *ARGUMENTS]
    done = subprocess.run(
        [*command, "--json", str(report_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert find_marked(marker) == [], "a node process outlived the run"
    report = json.loads(report_path.read_text())
    assert len(report["kill"]["killed"]) == KILLED and report["kill"]["recovered"]
    assert report["lost"] == 0, report["failures"]
    assert set(report["failures"]) <= {"worker_lost"}, report["failures"]
    assert report["completed"] + report["failed"] == report["requests"]
    assert report["retried"] > 0  # requests reached the killed nodes and ran elsewhere
    assert "lost (no answer) 0" in done.stdout
    # The status blocks after the kill sum the live nodes' counters and say whose are gone.
    killed = ", ".join(f"{name} (killed)" for name in report["kill"]["killed"])
    assert f"left out of the totals: {killed}" in done.stdout, done.stdout
    assert f"{5 - KILLED}/5 nodes answered" in done.stdout, done.stdout
