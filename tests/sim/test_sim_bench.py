"""`sllm bench simulator` runs a small case and reports speed and the target comparison."""

from __future__ import annotations

import argparse
import json

import pytest

from sllm.bench import simulator


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sllm bench")
    simulator.add_parser(parser.add_subparsers(dest="benchmark", required=True))
    return parser.parse_args(["simulator", *argv])


def test_a_small_run_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--hours", "0.005", "--workers", "20", "--rate", "20", "--json"])
    assert args.run(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["requests"] > 0
    assert result["worker_reports"] >= 20 * 18  # every worker, every second
    assert result["events_per_wall_s"] > 0 and result["requests_per_wall_s"] > 0
    assert result["projected_target_wall_s"] is None  # not the target's 1,000 workers
    # One core at most: the process's CPU time cannot exceed the wall time by much.
    assert 0 <= result["cpu_s"] <= result["wall_s"] * 1.1 + 0.05
    steal = result["machine_steal_s"]
    assert steal is None or steal >= 0


def test_the_text_output_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--hours", "0.001", "--workers", "50", "--rate", "5", "--profile"])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "run with --workers 1000 to compare" in out
    assert "cpu " in out
    assert "profile: core" in out


def test_the_target_comparison() -> None:
    result = simulator.run(0.001, 1000, 5.0, 2, 0, profile=False)
    assert result.projected_target_wall_s is not None and result.projected_target_wall_s > 0
    text = "\n".join(simulator.describe(result))
    assert "target: 1 simulated hour of 1,000 workers, >= 1,000,000 requests" in text
    assert "projected" in text
    assert "anchor: a simulator with neither cold starts nor a control plane" in text
    to_anchor = result.requests_per_wall_s_to_anchor_high
    assert abs(to_anchor - result.requests_per_wall_s / 5_000) <= 0.01
    ratio = result.wall_to_target_ratio
    assert ratio == round(result.projected_target_wall_s / simulator.TARGET_WALL_S, 2)
    assert result.as_dict()["wall_to_target_ratio"] == ratio
