"""Integration: `decentralized_simulation.py`'s status blocks show the cluster's totals.

Before, each block printed one random node's counters, and a node counts only its own
decisions, so "requests" went down from one block to the next. Now every block sums every
node's counters: with no node killed, each block hears every node, and no total ever goes
down. The last block (after the drain) prints the placements the final report shows.
Three nodes, a block every second over a few seconds of arrivals.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sllm.experiments.centralized import FINAL_STATE_HEADER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
# Two small models keep every cold start, and so the drain, to seconds.
ARGUMENTS = (
    *("--nodes", str(NODES), "--duration", "4", "--rate", "6", "--models", "2"),
    *("--base-port", "0", "--drain", "15", "--seed", "3", "--status-interval", "1"),
)
RUN_TIMEOUT_S = 40.0
TOTALS = re.compile(
    r"(?P<answered>\d+)/(?P<nodes>\d+) nodes answered  requests (?P<requests>\d+)  "
    r"warm placement rate (?P<rate>[0-9.]+%)  cold placements (?P<cold>\d+)  "
    r"rejected (?P<rejected>\d+)"
)


def test_the_status_totals_never_go_down(tmp_path, find_marked) -> None:
    report_path = tmp_path / "report.json"
    marker = uuid.uuid4().hex
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["SLLM_TEST_MARKER"] = marker
    done = subprocess.run(
        [sys.executable, "decentralized_simulation.py", *ARGUMENTS, "--json", str(report_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert find_marked(marker) == [], "a node process outlived the run"
    report = json.loads(report_path.read_text())

    blocks = [match.groupdict() for match in TOTALS.finditer(done.stdout)]
    assert len(blocks) >= 3, done.stdout  # at least two periodic blocks and the final one
    for block in blocks:
        assert (block["answered"], block["nodes"]) == (str(NODES), str(NODES)), done.stdout
    for key in ("requests", "cold", "rejected"):
        counts = [int(block[key]) for block in blocks]
        assert counts == sorted(counts), (key, counts, done.stdout)
    assert int(blocks[-1]["requests"]) > int(blocks[0]["requests"])

    final = done.stdout[done.stdout.index(FINAL_STATE_HEADER) :].split("FINAL REPORT")[0]
    last = TOTALS.search(final)
    assert last is not None and last.groupdict() == blocks[-1]
    assert blocks[-1]["cold"] == str(report["cold_placements"])
    assert blocks[-1]["rate"] == f"{report['warm_placement_rate']:.1%}"
    # Every request was decided by some node at least once (a retry is decided again).
    assert int(blocks[-1]["requests"]) >= report["requests"]
