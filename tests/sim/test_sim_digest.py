"""The experiments' digest: figures from the JSON, written between docs/simulator.md's markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sllm.experiments.digest import (
    BEGIN,
    END,
    DigestError,
    digest,
    load_results,
    update_document,
    write_digest,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulator.md"


def _latency(p99: float) -> dict[str, float]:
    return {"p50": 0.04, "p95": p99 / 2, "p99": p99, "mean": 1.0}


def _exp1_policy(warm: float, p99: float, vs_seed: float) -> dict[str, Any]:
    return {
        "warm_start_rate": warm,
        "ttft": _latency(p99),
        "vs_seed": {"ttft_p99": vs_seed},
        "failed": 3,
    }


def _evenness(gini: float) -> dict[str, float]:
    return {"gini": gini}


def results() -> dict[str, dict[str, Any]]:
    exp1_mode = {
        "seed": _exp1_policy(0.951, 92.0, 1.0),
        "least-loaded": _exp1_policy(0.215, 171.0, 1.86),
    }
    exp3_mode = {
        "least-loaded": {
            "gpu_utilization": _evenness(0.036),
            "queue_depth": _evenness(0.041),
            "completed_gini": 0.02,
        }
    }
    arm = {"failures": {"no_decision": 41}, "success_rate": 0.966}
    return {
        "exp1": {
            "setup": {
                "workers": 16,
                "models": 10,
                "rate_rps": 8.0,
                "duration_s": 900.0,
                "seed": 0,
                "baseline": "seed",
            },
            "centralized": exp1_mode,
            "decentralized": exp1_mode,
        },
        "exp2": {
            "setup": {
                "workers": 16,
                "rate_rps": 8.0,
                "duration_s": 300.0,
                "kill_at_s": 100.0,
                "coordinator_down_s": 10.0,
                "killed_workers": ["worker-1", "worker-2"],
                "seed": 0,
            },
            "centralized": {
                "coordinator": {**arm, "view_recovered_s": 0.99, "time_to_recovery_s": 11.0},
                "workers": {**arm, "failure_detected_s": 10.2, "time_to_recovery_s": 0.0},
            },
            "decentralized": {
                "nodes": {**arm, "failure_detected_s": 8.9, "detection_bound_s": 38.9}
            },
        },
        "exp3": {
            "setup": {"workers": 16, "models": 8, "rate_rps": 24.0, "duration_s": 300.0},
            "centralized": exp3_mode,
            "decentralized": exp3_mode,
        },
    }


def test_the_digest_quotes_each_experiments_figures() -> None:
    text = digest(results())
    assert text.startswith(BEGIN) and text.endswith(END)
    assert (
        "| least-loaded | 21.5% / 21.5% | 0.040 | 171.0 | 1.86x / 1.86x | 1.00x | 3 / 3 |" in text
    )
    assert "knew every worker again 0.99 s after it came back" in text
    assert "recovered 11.00 s after the kill; the outage cost 3.4% of the requests" in text
    assert "dropped them 10.20 s after the kill" in text
    assert "marked them dead 8.90 s after the kill (the stated detection bound is 38.90 s)" in text
    assert "| least-loaded | 0.036 / 0.036 | 0.041 / 0.041 | 0.020 / 0.020 |" in text


def test_only_the_section_between_the_markers_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    for name, document in results().items():
        (folder / f"{name}.json").write_text(json.dumps(document), encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n\n{BEGIN}\nstale 0.54\n{END}\n\nafter\n", encoding="utf-8")
    write_digest(folder, page)
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nbefore\n\n" + BEGIN)
    assert text.endswith(END + "\n\nafter\n")
    assert "stale 0.54" not in text
    assert "8.90 s after the kill" in text
    write_digest(folder, page)  # again: the same page
    assert page.read_text(encoding="utf-8") == text


def test_a_missing_result_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(DigestError, match="python3 -m sllm experiment exp1 --out"):
        load_results(tmp_path)


def test_a_result_without_a_figure_and_a_page_without_markers_are_errors() -> None:
    broken = results()
    del broken["exp2"]["centralized"]["workers"]["failure_detected_s"]
    with pytest.raises(DigestError, match="failure_detected_s"):
        digest(broken)
    with pytest.raises(DigestError, match="no section between"):
        update_document("# no markers\n", digest(results()))


def test_the_simulator_guide_quotes_the_experiments_through_the_digest() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    section = text[text.index(BEGIN) : text.index(END)]
    assert "**exp1**" in section and "**exp2**" in section and "**exp3**" in section
