"""Integration: `decentralized_simulation.py --kill`, a small version of the guide's run.

Five node processes on loopback; two are killed (SIGKILL) halfway through the arrivals.
Requests sent to them during the detection window, and those queued there, must be
placed again elsewhere; only requests that had started on a killed node may fail, with
``worker_lost``; and every request gets an answer (``lost`` is 0). Before the client held
its requests, the ones on a killed node waited for an hour and the run reported them
``unfinished``.
"""

from __future__ import annotations

import pytest
from guide_scripts import run_guide_script

pytestmark = pytest.mark.integration

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
    done, report = run_guide_script(
        "decentralized_simulation.py",
        ARGUMENTS,
        tmp_path / "report.json",
        RUN_TIMEOUT_S,
        find_marked,
    )
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
