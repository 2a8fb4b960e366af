"""`sllm bench placement`: the typed result, its JSON and the target lines, from a
hand-built result and from one small run (the rates themselves are not checked)."""

from __future__ import annotations

import json

import pytest

from sllm.bench import placement


def test_the_target_lines_compare_sizes_of_one_run() -> None:
    result = placement.PlacementBench(
        placement=[
            placement.PlacementRate(policy="startup-aware", workers=100, decisions_per_s=90_000),
            placement.PlacementRate(policy="startup-aware", workers=10_000, decisions_per_s=30_000),
        ],
        udp_reports_per_s=None,
    )
    (line,) = placement.scaling_check(result)
    assert line.startswith("startup-aware: 30,000 decisions/s at 10,000 workers (target >= 20,000")
    assert "met); time per decision at 10,000 is 3.00x that at 100 (target <= 2x: NOT met)" in line
    assert result.as_dict() == {
        "placement": [
            {"policy": "startup-aware", "workers": 100, "decisions_per_s": 90_000},
            {"policy": "startup-aware", "workers": 10_000, "decisions_per_s": 30_000},
        ]
    }


def test_a_small_run_gives_its_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "SECONDS_PER_CASE", 0.05)
    result = placement.run([10], ["least-loaded"], udp=False, quiet=True)
    (rate,) = result.placement
    assert (rate.policy, rate.workers) == ("least-loaded", 10) and rate.decisions_per_s > 0
    document = json.loads(json.dumps(result.as_dict()))
    assert list(document) == ["placement"]  # no UDP figure without the UDP run
