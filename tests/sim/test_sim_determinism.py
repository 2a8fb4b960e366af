"""One seed, one history: the same inputs give byte-identical reports (but wall time)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from sllm.sim import cli
from sllm.sim.report import dumps

FLAGS = [
    *("--workers", "4", "--duration", "30", "--seed", "11", "--models", "4"),
    *("--loss", "0.02", "--duplicate", "0.01", "--jitter-ms", "0.2"),
    *("--kill-workers", "1", "--kill-at", "8", "--restart-after", "6"),
    *("--kill-coordinator-at", "12", "--random-faults", "2", "--quiet"),
]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sllm")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["simulate", *argv])


def test_two_runs_in_process_give_identical_json(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.json", "b.json"):
        args = parse([*FLAGS, "--json", str(tmp_path / name), "--no-wall-time"])
        assert args.run(args) == 0
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    report = json.loads(outputs[0])
    assert "wall_seconds" not in report
    assert report["requests"] == report["completed"] + report["failed"] > 0
    assert report["events"] > 0


def test_wall_seconds_is_the_only_key_that_varies() -> None:
    reports = [cli.simulate(parse(FLAGS)).as_dict() for _ in range(2)]
    for report in reports:
        assert isinstance(report["wall_seconds"], float) and report["wall_seconds"] >= 0
        del report["wall_seconds"]
    assert dumps(reports[0]) == dumps(reports[1])


def test_another_seed_gives_another_history() -> None:
    first = cli.simulate(parse([*FLAGS, "--no-wall-time"]))
    other = cli.simulate(parse([*FLAGS[:-1], "--seed", "12", "--no-wall-time", "--quiet"]))
    assert dumps(first.as_dict()) != dumps(other.as_dict())


def test_the_report_has_the_live_scripts_keys_plus_events_and_wall_seconds() -> None:
    report = cli.simulate(parse(["--workers", "2", "--duration", "5", "--quiet"])).as_dict()
    live_keys = {
        "mode",
        "policy",
        "seed",
        "duration_s",
        "interrupted",
        "missed_state_samples",
        "requests",
        "completed",
        "failed",
        "failures",
        "retried",
        "lost",
        "unfinished",
        "warm_start_rate",
        "cold_starts",
        "warm_placement_rate",
        "warm_placements",
        "cold_placements",
        "latency",
        "active_workers",
        "workers",
    }
    assert live_keys | {"events", "wall_seconds"} <= set(report)
    assert set(report) - live_keys == {"events", "wall_seconds", "simulation"}
    assert report["mode"] == "centralized"


def test_decentralized_mode_runs(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--mode", "decentralized", "--workers", "3", "--duration", "5"])
    assert args.run(args) == 0
    assert "FINAL REPORT" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags",
    [
        ["--workers", "0"],
        ["--loss", "1.5"],
        ["--kill-workers", "2"],
        ["--heal-at", "5"],
        ["--loss-window", "1:2"],
        ["--report-interval", "20"],
    ],
)
def test_bad_flags_exit_2(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(flags)
    assert args.run(args) == 2
    assert capsys.readouterr().err.startswith("sllm simulate:")
