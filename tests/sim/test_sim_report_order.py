"""The run report lists workers by number: ``node-2`` before ``node-10``, in JSON and text."""

from __future__ import annotations

import random

from sllm.sim.report import WorkerSamples, build_report, render_report, worker_order


def test_workers_are_listed_by_number_not_as_text() -> None:
    ids = [f"node-{i}" for i in range(12)]
    shuffled = random.Random(7).sample(ids, len(ids))
    samples = {worker_id: WorkerSamples([1.0], [0.5]) for worker_id in shuffled}
    report = build_report([], samples, len(ids))
    assert [w.worker_id for w in report.workers.per_worker] == ids
    per_worker = report.as_dict()["workers"]["per_worker"]  # type: ignore[index]
    assert [w["id"] for w in per_worker] == ids
    text = render_report(report)
    rows = [line.split()[0] for line in text.splitlines() if line.startswith("node-")]
    assert rows == ids


def test_worker_order_reads_every_number_and_keeps_ties_apart() -> None:
    ids = ["rack-10/gpu-1", "rack-2/gpu-10", "rack-2/gpu-9", "node-1", "node-01", "node", "b"]
    assert sorted(ids, key=worker_order) == [
        "b",
        "node",
        "node-01",
        "node-1",
        "rack-2/gpu-9",
        "rack-2/gpu-10",
        "rack-10/gpu-1",
    ]
