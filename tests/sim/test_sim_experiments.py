"""The experiments run end to end in --quick mode and write JSON, Markdown and PNGs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sllm.experiments import plots, suite
from sllm.experiments.summary import RunOptions, gini


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sllm")
    suite.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["experiment", *argv])


@pytest.mark.parametrize("name", list(suite.EXPERIMENTS))
def test_experiment_writes_json_markdown_and_plots(name: str, tmp_path: Path) -> None:
    assert plots.unavailable() is None, "the dev extra installs matplotlib"
    args = parse([name, "--out", str(tmp_path), "--quick"])
    assert args.run(args) == 0
    results = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["experiment"] == name
    assert results["centralized"]
    markdown = (tmp_path / f"{name}.md").read_text()
    assert markdown.startswith(f"# {name}")
    assert results["decentralized"]
    assert "## Decentralized" in markdown and "not available" not in markdown.lower()
    pngs = sorted(tmp_path.glob(f"{name}-*.png"))
    assert pngs and [p.name for p in pngs] == sorted(results["plots"])
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG")
        assert f"({png.name})" in markdown


def test_without_matplotlib_plots_are_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    suite.run_experiment("exp2", tmp_path, RunOptions(quick=True))
    results = json.loads((tmp_path / "exp2.json").read_text())
    assert results["plots"] == []
    assert results["plots_skipped"] == "matplotlib is not installed"
    assert "Skipped: matplotlib is not installed" in (tmp_path / "exp2.md").read_text()
    assert not list(tmp_path.glob("*.png"))


def test_exp1_compares_every_policy_with_the_seed_baseline(tmp_path: Path) -> None:
    suite.run_experiment("exp1", tmp_path, RunOptions(quick=True))
    results = json.loads((tmp_path / "exp1.json").read_text())
    for mode in ("centralized", "decentralized"):
        policies = results[mode]
        assert set(policies) == {
            "seed",
            "least-loaded",
            "round-robin",
            "random",
            "power-of-two",
            "startup-aware",
        }
        assert policies["seed"]["vs_seed"]["ttft_p99"] == 1.0
        requests = {summary["requests"] for summary in policies.values()}
        assert len(requests) == 1  # the same workload for every policy


def test_exp2_measures_recovery(tmp_path: Path) -> None:
    suite.run_experiment("exp2", tmp_path, RunOptions(quick=True))
    arms = json.loads((tmp_path / "exp2.json").read_text())["centralized"]
    coordinator = arms["coordinator"]
    assert coordinator["failures"].get("no_decision", 0) > 0
    assert coordinator["time_to_recovery_s"] is not None
    assert 0.0 <= coordinator["view_recovered_s"] <= 1.0 + 0.01  # one report interval
    assert arms["workers"]["failure_detected_s"] is not None
    nodes = json.loads((tmp_path / "exp2.json").read_text())["decentralized"]["nodes"]
    assert nodes["faults"][0]["fault"] == "kill_worker"
    assert 0.0 < nodes["failure_detected_s"] <= nodes["detection_bound_s"]


def test_gini() -> None:
    assert gini([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert gini([0.0, 0.0, 0.0, 4.0]) == pytest.approx(0.75)
    assert gini([]) == 0.0
    assert gini([0.0, 0.0]) == 0.0
