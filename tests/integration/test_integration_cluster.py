"""Integration: a coordinator and workers as separate processes on 127.0.0.1.

Placement by policy, a worker's death, a coordinator's restart, and clean exits on
SIGTERM and SIGINT. Every service logs JSON and is started with `ServiceProcess`; the
test talks to the coordinator over UDP as `sllm status` does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time

import pytest

from sllm.wire import ScheduleRequest, ScheduleResponse

pytestmark = pytest.mark.integration

REPORT_INTERVAL_S = 0.1  # the `live_env` fixture's values
WORKER_TIMEOUT_S = 0.6
MODEL = "llama-3.2-1b"
JOIN_TIMEOUT_S = 5.0
# The promise to operators: a signal ends a service within this long.
EXIT_BOUND_S = 5.0
# Scheduling noise on two busy cores: a report or an expiry check can be this late.
SLACK_S = 1.0


async def schedule(cluster, request_id: str) -> ScheduleResponse:
    request = ScheduleRequest(
        request_id=request_id, model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
    )
    return await cluster.client.request(request, cluster.address, ScheduleResponse, 2.0)


async def test_reports_arrive_and_least_loaded_spreads_a_burst(
    live_cluster, eventually, check_status, find_marked
) -> None:
    async with live_cluster as cluster:
        await cluster.start_coordinator("least-loaded")
        await cluster.start_workers("w1", "w2")
        state = await eventually(
            lambda: _state_with(cluster, {"w1", "w2"}), JOIN_TIMEOUT_S, "both workers reported"
        )
        check_status(state, ["w1", "w2"])
        assert state["policy"] == "least-loaded"
        assert len(find_marked(cluster.env["SLLM_TEST_MARKER"])) == 3

        # A burst, all in flight at once: the coordinator counts what it placed since the
        # last report, so the least-loaded choice alternates instead of piling up.
        burst = await asyncio.gather(*(schedule(cluster, f"burst-{i}") for i in range(8)))
        chosen = [decision.worker_id for decision in burst]
        assert set(chosen) == {"w1", "w2"}
        assert all(decision.action != "reject" for decision in burst)
        after = await cluster.state()
        assert after is not None
        assert after["total_requests"] == 8

    # Leaving the block stopped every process this test started.
    assert find_marked(cluster.env["SLLM_TEST_MARKER"]) == []


async def test_round_robin_alternates_between_workers(live_cluster, eventually) -> None:
    async with live_cluster as cluster:
        await cluster.start_coordinator("round-robin")
        await cluster.start_workers("w1", "w2")
        await eventually(lambda: _ids_are(cluster, {"w1", "w2"}), JOIN_TIMEOUT_S, "joined")
        chosen = [(await schedule(cluster, f"rr-{i}")).worker_id for i in range(6)]
    assert set(chosen) == {"w1", "w2"}
    assert all(a != b for a, b in itertools.pairwise(chosen)), chosen


async def test_a_killed_worker_is_dropped_after_the_timeout(live_cluster, eventually) -> None:
    async with live_cluster as cluster:
        await cluster.start_coordinator()
        victim, _ = await cluster.start_workers("w1", "w2")
        await eventually(lambda: _ids_are(cluster, {"w1", "w2"}), JOIN_TIMEOUT_S, "joined")

        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        # Right after the kill the coordinator still counts it: it cannot know yet.
        state = await cluster.state()
        answered_at = time.monotonic()
        assert state is not None
        ages = {worker["id"]: worker["last_report_age_s"] for worker in state["workers"]}
        assert set(ages) == {"w1", "w2"}
        last_seen = answered_at - ages["w1"]  # when its last report arrived (a bit later)

        await eventually(
            lambda: _ids_are(cluster, {"w2"}), WORKER_TIMEOUT_S + SLACK_S + 1.0, "w1 dropped"
        )
        gone_at = time.monotonic()

    # Not before WORKER_TIMEOUT of silence (less the reply's transit and the age's
    # rounding), and not long after it either.
    silent, since_kill = gone_at - last_seen, gone_at - killed_at
    assert silent >= WORKER_TIMEOUT_S - 0.1, f"dropped after only {silent:.3f} s of silence"
    assert since_kill <= WORKER_TIMEOUT_S + SLACK_S, f"dropped {since_kill:.3f} s after the kill"
    print(f"w1 dropped {silent:.3f} s after its last report, {since_kill:.3f} s after SIGKILL")


async def test_a_restarted_coordinator_relearns_the_cluster_from_reports(
    live_cluster, eventually
) -> None:
    async with live_cluster as cluster:
        old = await cluster.start_coordinator()
        workers = await cluster.start_workers("w1", "w2")
        await eventually(lambda: _ids_are(cluster, {"w1", "w2"}), JOIN_TIMEOUT_S, "joined")
        port = old.port

        await old.kill()
        assert await cluster.state(timeout=0.2) is None
        new = await cluster.start_coordinator(port=port)
        listening_at = time.monotonic()
        assert new.port == port
        await eventually(
            lambda: _ids_are(cluster, {"w1", "w2"}),
            REPORT_INTERVAL_S + SLACK_S,
            "the new coordinator heard from both workers",
        )
        recovered_s = time.monotonic() - listening_at
        state = await cluster.state()
        assert state is not None
        # Only the counters start again.
        assert state["total_requests"] == 0
        # The same worker processes, never restarted.
        assert all(worker.running for worker in workers)
        assert all(len(worker.events("listening")) == 1 for worker in workers)
    print(f"coordinator view recovered {recovered_s:.3f} s after restart")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_each_service_cleanly(live_cluster, eventually, signum) -> None:
    async with live_cluster as cluster:
        coordinator = await cluster.start_coordinator()
        (worker,) = await cluster.start_workers("w1")
        await eventually(lambda: _ids_are(cluster, {"w1"}), JOIN_TIMEOUT_S, "joined")
        for service in (worker, coordinator):  # the worker first: its goodbye is heard
            started = time.monotonic()
            os.kill(service.process.pid, signum)
            code = await asyncio.wait_for(service.process.wait(), EXIT_BOUND_S + 1.0)
            elapsed = time.monotonic() - started
            await service.kill()  # only finishes reading its log; it has exited
            assert code == 0, f"{service.name} exited {code}"
            assert elapsed < EXIT_BOUND_S, f"{service.name} took {elapsed:.2f} s"
            assert service.events("stopped"), f"{service.name} did not log 'stopped'"
            print(f"{service.name} exited 0 {elapsed:.3f} s after {signum.name}")


async def _state_with(cluster, ids: set[str]):
    state = await cluster.state()
    if state is None or {worker["id"] for worker in state["workers"]} != ids:
        return None
    return state


async def _ids_are(cluster, ids: set[str]) -> bool:
    return await cluster.worker_ids() == ids
