"""The experiments' headline numbers, written into docs/simulator.md by a command.

Why: numbers quoted in prose go stale as the code changes (exp3's Gini, exp1's warm start
rates and ratios, exp2's detection time all had). So the section of docs/simulator.md that
quotes them is generated from the JSON the experiments write, between two marker lines:

    python3 -m sllm experiment exp1 --out results/    # and exp2, exp3
    python3 -m sllm experiment digest --out results/ --doc docs/simulator.md

`digest` reads ``exp1.json``, ``exp2.json`` and ``exp3.json`` from the results folder and
replaces what stands between `BEGIN` and `END` in the document (the rest of the document,
its explanations included, is left as it is). A missing or unreadable result is an error
naming the command that makes it. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BEGIN = "<!-- experiment digest: begin (generated; edit src/sllm/experiments/digest.py) -->"
END = "<!-- experiment digest: end -->"
DIGESTED = ("exp1", "exp2", "exp3")
MODES = ("centralized", "decentralized")


class DigestError(ValueError):
    """A result that cannot be digested, or a document without the markers."""


def load_results(folder: Path) -> dict[str, dict[str, Any]]:
    """The JSON document of each digested experiment in `folder`."""
    results: dict[str, dict[str, Any]] = {}
    for name in DIGESTED:
        path = folder / f"{name}.json"
        try:
            results[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DigestError(
                f"{path}: {error}; make it with `python3 -m sllm experiment {name} --out {folder}`"
            ) from error
    return results


def _percent(share: float) -> str:
    return f"{share:.1%}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(row) for row in rows)]


def _failures(arm: Mapping[str, Any]) -> str:
    failures: Mapping[str, int] = arm["failures"]
    return ", ".join(f"{count} `{reason}`" for reason, count in failures.items()) or "none"


def exp1_lines(document: Mapping[str, Any]) -> list[str]:
    setup = document["setup"]
    central, gossip = document["centralized"], document["decentralized"]
    rows = []
    for policy, figures in central.items():
        spread = gossip[policy]
        rows.append(
            (
                policy,
                f"{_percent(figures['warm_start_rate'])} / {_percent(spread['warm_start_rate'])}",
                f"{figures['ttft']['p50']:.3f}",
                f"{figures['ttft']['p99']:.1f}",
                " / ".join(_ratio(f["vs_seed"]["ttft_p99"]) for f in (figures, spread)),
                _ratio(spread["ttft"]["p99"] / max(figures["ttft"]["p99"], 1e-9)),
                f"{figures['failed']} / {spread['failed']}",
            )
        )
    header = [
        "policy",
        "warm start rate (cen / dec)",
        "TTFT p50 (s, cen)",
        "TTFT p99 (s, cen)",
        f"p99 vs {setup['baseline']} (cen / dec)",
        "dec p99 / cen p99",
        "failed (cen / dec)",
    ]
    return [
        f"**exp1** ({setup['workers']} workers, {setup['models']} models, "
        f"{setup['rate_rps']:g} req/s for {setup['duration_s']:g} s):",
        "",
        *_table(header, rows),
    ]


def exp2_lines(document: Mapping[str, Any]) -> list[str]:
    setup = document["setup"]
    coordinator = document["centralized"]["coordinator"]
    workers = document["centralized"]["workers"]
    nodes = document["decentralized"]["nodes"]
    kill_at, down = setup["kill_at_s"], setup["coordinator_down_s"]
    killed = len(setup["killed_workers"])
    them = "it" if killed == 1 else "them"
    return [
        f"**exp2** ({setup['workers']} workers, {setup['rate_rps']:g} req/s for "
        f"{setup['duration_s']:g} s, faults at {kill_at:g} s):",
        "",
        f"- Coordinator down from {kill_at:g} s to {kill_at + down:g} s: the restarted "
        f"coordinator knew every worker again {_seconds(coordinator['view_recovered_s'])} "
        f"after it came back; service recovered "
        f"{_seconds(coordinator['time_to_recovery_s'])} after the kill; the outage cost "
        f"{_percent(1 - coordinator['success_rate'])} of the requests "
        f"({_failures(coordinator)}).",
        f"- {killed} of {setup['workers']} workers killed for good: the coordinator dropped "
        f"{them} {_seconds(workers['failure_detected_s'])} after the kill; "
        f"{_percent(1 - workers['success_rate'])} of the requests failed "
        f"({_failures(workers)}).",
        f"- Decentralized, the same {_count(killed, 'node')} killed for good: every live node "
        f"had marked {them} dead {_seconds(nodes['failure_detected_s'])} after the kill (the "
        f"stated detection bound is {_seconds(nodes['detection_bound_s'])}); "
        f"{_percent(nodes['success_rate'])} of the requests succeeded "
        f"(failed: {_failures(nodes)}).",
    ]


def exp3_lines(document: Mapping[str, Any]) -> list[str]:
    setup = document["setup"]
    central, gossip = document["centralized"], document["decentralized"]
    rows = [
        (
            policy,
            f"{figures['gpu_utilization']['gini']:.3f} / "
            f"{gossip[policy]['gpu_utilization']['gini']:.3f}",
            f"{figures['queue_depth']['gini']:.3f} / {gossip[policy]['queue_depth']['gini']:.3f}",
            f"{figures['completed_gini']:.3f} / {gossip[policy]['completed_gini']:.3f}",
        )
        for policy, figures in central.items()
    ]
    header = [
        "policy",
        "utilization Gini (cen / dec)",
        "queue depth Gini (cen / dec)",
        "completed Gini (cen / dec)",
    ]
    return [
        f"**exp3** ({setup['workers']} workers, {setup['models']} models, "
        f"{setup['rate_rps']:g} req/s for {setup['duration_s']:g} s; Gini 0: every worker "
        "alike, 1: one worker has it all):",
        "",
        *_table(header, rows),
    ]


def digest(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The generated section, markers included."""
    seeds = {results["exp1"]["setup"].get("seed", 0), results["exp2"]["setup"].get("seed", 0)}
    try:
        lines = [
            BEGIN,
            "",
            f"Seed {', '.join(map(str, sorted(seeds)))}, both architectures, generated from "
            "the experiments' JSON by `python3 -m sllm experiment digest`:",
            "",
            *exp1_lines(results["exp1"]),
            "",
            *exp2_lines(results["exp2"]),
            "",
            *exp3_lines(results["exp3"]),
            "",
            END,
        ]
    except (KeyError, TypeError) as error:
        raise DigestError(f"a result lacks a figure the digest needs: {error!r}") from error
    return "\n".join(lines)


def update_document(document: str, section: str) -> str:
    """`document` with what stands between its markers (and they) replaced by `section`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise DigestError(f"the document has no section between {BEGIN!r} and {END!r}")
    return document[:start] + section + document[end + len(END) :]


def write_digest(results_folder: Path, document_path: Path) -> None:
    """Regenerate `document_path`'s digest from the results in `results_folder`."""
    section = digest(load_results(results_folder))
    try:
        text = document_path.read_text(encoding="utf-8")
    except OSError as error:
        raise DigestError(f"{document_path}: {error}") from error
    document_path.write_text(update_document(text, section), encoding="utf-8")
