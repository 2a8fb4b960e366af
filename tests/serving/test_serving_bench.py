"""`sllm bench gateway` runs end to end on a small scale (the numbers are not checked), in
both core modes where there are two cores."""

from __future__ import annotations

import os
import statistics

import pytest

from sllm.bench.gateway import run

pytestmark = pytest.mark.integration


def test_the_gateway_benchmark_runs_small() -> None:
    cores = os.sched_getaffinity(0)
    own_core = len(cores) >= 2
    result = run([1, 4], {1: 5, 4: 3}, streams=20, quiet=True, own_core=own_core)
    modes = [result.overhead]
    if own_core:
        assert result.overhead_front_door_own_core is not None
        modes.append(result.overhead_front_door_own_core)
    for row in (row for rows in modes for row in rows):
        for path in (row.direct, row.gateway):
            assert path.load.errors == 0, row
            assert path.load.requests == row.concurrency * (5 if row.concurrency == 1 else 3)
            assert path.front_door_cpu_ms_per_request >= 0
            assert path.worker_cpu_ms_per_request >= 0
        paired = [
            front - alone
            for front, alone in zip(row.gateway.round_p50_ms, row.direct.round_p50_ms, strict=True)
        ]
        assert row.added_p50_paired_ms == round(statistics.median(paired), 3)
    assert os.sched_getaffinity(0) == cores  # the load generator's cores given back
    streams = result.streams
    assert streams is not None
    assert streams.load.errors == 0
    assert streams.leaked_client_connections == 0, streams.sockets_after
    assert streams.worker_idle_after
    assert streams.sockets_after["workers"] <= streams.worker_connections_bound
    assert streams.ok
    assert streams.peak_client_connections >= 15  # they were open at once
    # The JSON keeps the keys docs/benchmarks.md describes.
    document = result.as_dict()
    assert list(document)[:3] == ["benchmark", "tokens", "overhead"]
    row_keys = document["overhead"][0]  # type: ignore[index]
    assert {"concurrency", "rounds", "direct", "gateway", "added_p50_paired_ms"} <= set(row_keys)
    assert document["streams"]["leaked_client_connections"] == 0  # type: ignore[index]
