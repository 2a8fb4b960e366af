"""`sllm bench gateway` runs end to end on a small scale (the numbers are not checked)."""

from __future__ import annotations

import pytest

from sllm.bench.gateway import run

pytestmark = pytest.mark.integration


def test_the_gateway_benchmark_runs_small() -> None:
    result = run([1, 4], {1: 5, 4: 3}, streams=20, quiet=True)
    for row in result["overhead"]:
        for path in ("direct", "gateway"):
            assert row[path]["errors"] == 0, row
            assert row[path]["requests"] == row["concurrency"] * (
                5 if row["concurrency"] == 1 else 3
            )
    streams = result["streams"]
    assert streams["errors"] == 0
    assert streams["leaked_client_connections"] == 0, streams["sockets_after"]
    assert streams["worker_idle_after"]
    assert streams["worker_connections_kept_alive"] <= streams["worker_connections_bound"]
    assert streams["ok"]
    assert streams["peak_client_connections"] >= 15  # they were open at once
