"""The run report names each measure once: warm starts from outcomes, placements beside.

Hand-built outcomes through `build_report` and `render_report`, then one simulated run
of each architecture: both measures in the JSON and in the text, each label with one value.
"""

from __future__ import annotations

import argparse
import re

import pytest

from sllm.core.measures import (
    COLD_PLACEMENTS,
    COLD_STARTS,
    WARM_PLACEMENT_RATE,
    WARM_START_RATE,
    Placements,
)
from sllm.core.outstanding import RequestOutcome
from sllm.sim import cli
from sllm.sim.report import build_report, render_report

MEASURE_LABELS = (WARM_PLACEMENT_RATE, COLD_PLACEMENTS, WARM_START_RATE, COLD_STARTS)


def outcome(rid: str, *, ok: bool = True, cold_start: bool = False) -> RequestOutcome:
    return RequestOutcome(
        request_id=rid,
        model="m",
        ok=ok,
        reason="" if ok else "no_result",
        worker_id="w1",
        cold_start=cold_start,
        queue_s=0.1,
        ttft_s=0.2,
        e2e_s=0.3,
    )


def printed(text: str) -> dict[str, set[str]]:
    """Every value printed after each measure's label, in `text`."""
    found: dict[str, set[str]] = {label: set() for label in MEASURE_LABELS}
    for label in MEASURE_LABELS:
        for match in re.finditer(rf"(?<![a-z]){label} ([0-9.]+%?)", text):
            found[label].add(match.group(1))
    return found


def test_the_report_counts_warm_starts_from_completed_requests_only() -> None:
    outcomes = [
        outcome("a"),
        outcome("b"),
        outcome("c"),
        outcome("d", cold_start=True),
        outcome("e", ok=False, cold_start=True),  # failed: in neither count
    ]
    report = build_report(outcomes, {}, 1, placements=Placements(warm=9, cold=1))
    document = report.as_dict()
    assert (document["completed"], document["cold_starts"]) == (4, 1)
    assert document["warm_start_rate"] == 0.75
    assert (document["warm_placements"], document["cold_placements"]) == (9, 1)
    assert document["warm_placement_rate"] == 0.9
    assert "cache_hit_rate" not in document  # the old name meant either; it means neither

    text = render_report(report)
    assert printed(text) == {
        WARM_START_RATE: {"75.0%"},
        COLD_STARTS: {"1"},
        WARM_PLACEMENT_RATE: {"90.0%"},
        COLD_PLACEMENTS: {"1"},
    }
    assert "cache hit" not in text


def test_without_placements_the_report_prints_only_the_warm_start_figures() -> None:
    report = build_report([outcome("a"), outcome("b", cold_start=True)], {}, 1)
    assert report.placements is None
    assert "warm_placement_rate" not in report.as_dict()
    assert printed(render_report(report))[WARM_PLACEMENT_RATE] == set()
    assert printed(render_report(report))[WARM_START_RATE] == {"50.0%"}


@pytest.mark.parametrize("mode", ["centralized", "decentralized"])
def test_a_simulated_run_reports_both_measures(mode: str) -> None:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    flags = ["--workers", "3", "--duration", "5", "--rate", "4", "--models", "2", "--quiet"]
    report = cli.simulate(parser.parse_args(["simulate", *flags, "--mode", mode])).run
    assert report.completed > 0
    placements = report.placements
    assert placements is not None
    placed = placements.warm_placements + placements.cold_placements
    # Every completed request was placed at least once (more after a retry).
    assert placed >= report.completed
    assert placements.warm_placement_rate == round(placements.warm_placements / placed, 6)
    completed = report.completed
    assert report.warm_start_rate == round((completed - report.cold_starts) / completed, 6)
    text = render_report(report)
    for label, values in printed(text).items():
        assert len(values) == 1, (label, values, text)
