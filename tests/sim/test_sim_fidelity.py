"""Fidelity: one small scenario through the live cluster and through the simulator.

The live side is `centralized_simulation.py`'s own machinery (a coordinator and two
workers as separate processes on 127.0.0.1, port 0, real UDP, the sim engine); the
simulated side is `sllm simulate` with the same flags. Both replay the same seeded
workload, so they must agree on what a client sees:

- p50 and p99 time to first token within 10%, or within 10 ms for small values (the
  live side adds a few milliseconds of interpreter, event-loop and loopback time per
  round trip that the simulated network's 0.25 ms floor does not);
- the warm start rate and the warm placement rate each within 0.1 absolute (one request
  in ~30 moves either by 0.03).

The numbers measured here are recorded in docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio

import pytest

from sllm.experiments import centralized
from sllm.sim import cli
from sllm.sim.report import RunReport

pytestmark = pytest.mark.integration

FLAGS = [
    *("--workers", "2", "--duration", "6", "--rate", "4", "--seed", "7"),
    *("--models", "2", "--policy", "startup-aware", "--drain", "20"),
]
RELATIVE = 0.10
ABSOLUTE_S = 0.010
WARM_RATE_ABSOLUTE = 0.10


def simulated() -> RunReport:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return cli.simulate(parser.parse_args(["simulate", *FLAGS, "--quiet"])).run


def warm_rates(report: RunReport) -> dict[str, float]:
    assert report.placements is not None
    return {
        "warm_start_rate": report.warm_start_rate,
        "warm_placement_rate": report.placements.warm_placement_rate,
    }


def test_live_and_simulated_agree() -> None:
    args = centralized.build_parser().parse_args(
        [*FLAGS, "--coordinator-port", "0", "--base-worker-port", "0"]
    )
    live = asyncio.run(centralized.run(args))
    sim = simulated()
    assert live.requests == sim.requests > 0
    assert live.completed == live.requests, live.failures
    rows = []
    for q in ("p50", "p99"):
        measured, predicted = getattr(live.latency.ttft, q), getattr(sim.latency.ttft, q)
        rows.append(f"TTFT {q}: live {measured:.4f} s, simulated {predicted:.4f} s")
        tolerance = max(RELATIVE * measured, ABSOLUTE_S)
        assert abs(measured - predicted) <= tolerance, rows[-1]
    live_rates, sim_rates = warm_rates(live), warm_rates(sim)
    for key in ("warm_start_rate", "warm_placement_rate"):
        rows.append(f"{key}: live {live_rates[key]}, simulated {sim_rates[key]}")
        assert abs(live_rates[key] - sim_rates[key]) <= WARM_RATE_ABSOLUTE, rows[-1]
    print("\n".join(rows))
