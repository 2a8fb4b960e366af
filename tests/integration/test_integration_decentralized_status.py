"""Integration: `decentralized_simulation.py`'s status blocks show the cluster's totals.

Before, each block printed one random node's counters, and a node counts only its own
decisions, so "requests" went down from one block to the next. Now every block sums every
node's counters: with no node killed, each block hears every node, and no total ever goes
down. The last block (after the drain) prints the placements the final report shows.
Three nodes, a block every second over a few seconds of arrivals.
"""

from __future__ import annotations

import re

import pytest
from guide_scripts import run_guide_script

from sllm.experiments.centralized import FINAL_STATE_HEADER

pytestmark = pytest.mark.integration

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
    done, report = run_guide_script(
        "decentralized_simulation.py",
        ARGUMENTS,
        tmp_path / "report.json",
        RUN_TIMEOUT_S,
        find_marked,
    )

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
