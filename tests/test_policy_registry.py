"""One registry of placement policies: every consumer offers exactly `POLICIES`.

A throwaway policy added to the registry (and only there) must be accepted by the
configuration, by the coordinator's and the node's flags, by ``sllm simulate`` and by
both live experiments, and must run in the simulator. Before the registry was the one
source, the configuration and the simulator kept a list of their own and refused it.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import pytest

from sllm import cli
from sllm.config import ConfigError, Settings
from sllm.core import placement
from sllm.core.placement import Estimator, LeastLoaded, PlacementPolicy, policy_names
from sllm.experiments import centralized, decentralized
from sllm.sim import cli as sim_cli

THROWAWAY = "throwaway-least-loaded"


def _throwaway(estimator: Estimator, rng: random.Random) -> PlacementPolicy:
    return LeastLoaded(estimator)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(placement.POLICIES, THROWAWAY, _throwaway)
    return THROWAWAY


def test_the_registry_lists_every_shipped_policy() -> None:
    assert policy_names() == (
        "seed",
        "least-loaded",
        "round-robin",
        "random",
        "power-of-two",
        "startup-aware",
    )


def test_the_configuration_accepts_a_registered_policy(registered: str) -> None:
    assert Settings.from_env({"PLACEMENT_POLICY": registered}).placement_policy == registered


def test_the_configuration_refuses_an_unregistered_policy() -> None:
    with pytest.raises(ConfigError, match=THROWAWAY):
        Settings.from_env({"PLACEMENT_POLICY": THROWAWAY})


@pytest.mark.parametrize("command", ["coordinator", "node"])
def test_the_service_flags_accept_a_registered_policy(registered: str, command: str) -> None:
    args = cli.build_parser().parse_args([command, "--policy", registered])
    assert args.policy == registered


def test_the_simulator_and_the_experiments_accept_a_registered_policy(registered: str) -> None:
    simulate = argparse.ArgumentParser()
    sim_cli.build_arguments(simulate)
    for parser in (simulate, centralized.build_parser(), decentralized.build_parser()):
        assert parser.parse_args(["--policy", registered]).policy == registered


def test_sllm_simulate_runs_a_registered_policy(registered: str, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    argv = ["simulate", "--policy", registered, "--duration", "5", "--workers", "2"]
    assert cli.main([*argv, "--quiet", "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["policy"] == registered
    assert report["completed"] > 0
