"""`sllm calibrate` measures this machine's load bandwidths into a file COST_MODEL reads.

The numbers are this machine's, so the test checks their plumbing, not their values:
the file holds exactly the two tier bandwidths, the cost model built from it (the way
the worker and coordinator build theirs, `sllm.cli._cost_model`) carries them, and every
other field keeps its shipped default.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sllm.cli import _cost_model, main
from sllm.config import Settings
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier

pytest.importorskip("torch", reason="calibration loads a checkpoint with torch")


def test_calibrate_writes_the_tier_bandwidths_the_cost_model_then_uses(tmp_path: Path) -> None:
    out = tmp_path / "calibration.json"
    arguments = ["calibrate", "--out", str(out), "--gb", "0.01", "--cache-dir", str(tmp_path)]
    assert main(arguments) == 0
    fields = json.loads(out.read_text())
    assert set(fields) == {"host_bandwidth_Bps", "disk_bandwidth_Bps"}
    assert all(value > 0 for value in fields.values())

    cost = _cost_model(Settings.from_env({"COST_MODEL": str(out)}))
    assert cost.bandwidth(Tier.HOST) == fields["host_bandwidth_Bps"]
    assert cost.bandwidth(Tier.DISK) == fields["disk_bandwidth_Bps"]
    assert cost.remote_bandwidth_Bps == CostModel().remote_bandwidth_Bps
