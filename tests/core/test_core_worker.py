"""WorkerState: queue, slots, loads and memory, driven by hand with a fake clock."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

import pytest

from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import (
    HANDED_BACK,
    MIGRATED,
    Action,
    CancelRequest,
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerResources,
    WorkerState,
    prestaged,
)
from sllm.wire.messages import LOADS_REPORTED_MAX, REPORT_MAX_MODELS, InferenceRequest
from sllm.workload import ModelSpec, default_catalog

GB = 10**9
COST = CostModel()
CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in default_catalog(11)}
TINY = "llama-3.2-1b"  # 2.48 GB
SMALL = "llama-3.2-3b"  # 6.42 GB
MID = "llama-2-7b"  # 13.48 GB
BIG = "llama-2-13b"  # 26 GB: more than the test GPU
# A 20 GB GPU holds MID + SMALL (19.9 GB) but not a third model; two slots, three queued.
RESOURCES = WorkerResources(
    gpu_bytes=20 * GB,
    host_bytes=100 * GB,
    disk_bytes=500 * GB,
    slots=2,
    queue_capacity=3,
    keep_alive_s=10.0,
)


def worker(
    preloaded: Mapping[str, Tier] | None = None,
    resources: WorkerResources = RESOURCES,
    catalog: Mapping[str, ModelSpec] = CATALOG,
) -> WorkerState:
    return WorkerState("w", resources, catalog, COST, preloaded)


def inference(rid: str, model: str = MID, prompt: int = 512, output: int = 64) -> InferenceRequest:
    return InferenceRequest(request_id=rid, model=model, prompt_tokens=prompt, output_tokens=output)


def start(rid: str, model: str = MID, batch: int = 1) -> StartRequest:
    return StartRequest(
        request_id=rid, model=model, prompt_tokens=512, output_tokens=64, batch_size=batch
    )


def of_type(actions: list[Action], kind: type) -> list[Action]:
    return [action for action in actions if isinstance(action, kind)]


def warm(model: str = MID) -> WorkerState:
    return worker({model: Tier.GPU})


# -- loading ------------------------------------------------------------------------------


def test_cold_start_loads_from_remote_then_runs() -> None:
    w = worker()
    assert w.submit(inference("r1"), 1.0) == [StartLoad(model=MID, source=Tier.REMOTE)]
    assert (w.queue_depth, w.running) == (1, 0)
    assert w.gpu_used == CATALOG[MID].size_bytes  # the load holds its room
    load_s = COST.load_time(CATALOG[MID].size_bytes, Tier.REMOTE)
    assert w.load_backlog_s(1.0) == pytest.approx(load_s)
    assert w.load_backlog_s(3.0) == pytest.approx(load_s - 2.0)
    assert w.load_backlog_s(1.0 + load_s + 5) == 0.0
    assert w.load_done(MID, 1.0 + load_s) == [start("r1")]
    assert (w.queue_depth, w.running) == (0, 1)
    assert w.tier_of(MID) is Tier.GPU
    # A checkpoint fetched from the remote store stays on disk and in host memory.
    assert w.host_used == w.disk_used == CATALOG[MID].size_bytes


@pytest.mark.parametrize("tier", [Tier.DISK, Tier.HOST])
def test_prestaged_checkpoint_loads_from_its_tier(tier: Tier) -> None:
    w = worker(prestaged(CATALOG, RESOURCES, tier))
    assert w.tier_of(MID) is tier
    assert w.submit(inference("r1"), 0.0) == [StartLoad(model=MID, source=tier)]


def test_prestaged_takes_models_in_catalog_order_while_they_fit() -> None:
    names = list(CATALOG)
    assert prestaged(CATALOG, RESOURCES, None) == {}
    on_disk = prestaged(CATALOG, RESOURCES, Tier.DISK)
    # 500 GB holds everything but the last 70B model (the first ten are 378.7 GB).
    assert on_disk == {name: Tier.DISK for name in names[:10]}
    in_host = prestaged(CATALOG, RESOURCES, Tier.HOST)
    # 100 GB holds the six smallest (78.9 GB); the 29.4 GB one after them does not fit.
    assert in_host == {name: Tier.HOST for name in names[:6]}
    w = worker(in_host)
    assert w.host_used == w.disk_used == sum(CATALOG[name].size_bytes for name in names[:6])


def test_preloaded_on_gpu_runs_at_once() -> None:
    w = warm()
    assert w.tier_of(MID) is Tier.GPU
    assert w.submit(inference("r1"), 0.0) == [start("r1")]


def test_loads_are_serialized() -> None:
    w = worker()
    assert w.submit(inference("a", TINY), 0.0) == [StartLoad(model=TINY, source=Tier.REMOTE)]
    assert w.submit(inference("b", SMALL), 0.1) == []  # waits for the load channel
    assert w.load_done(SMALL, 0.5) == []  # not the load under way: ignored
    assert w.load_backlog_s(0.1) == pytest.approx(
        COST.load_time(CATALOG[TINY].size_bytes, Tier.REMOTE)
        - 0.1
        + COST.load_time(CATALOG[SMALL].size_bytes, Tier.REMOTE)
    )
    actions = w.load_done(TINY, 3.0)
    assert actions == [start("a", TINY), StartLoad(model=SMALL, source=Tier.REMOTE)]
    assert w.load_done(SMALL, 9.0) == [start("b", SMALL)]
    assert w.running == 2


def test_one_load_serves_every_request_waiting_for_it() -> None:
    w = worker()
    assert w.submit(inference("a"), 0.0) == [StartLoad(model=MID, source=Tier.REMOTE)]
    assert w.submit(inference("b"), 0.5) == []
    assert w.load_done(MID, 12.0) == [start("a"), start("b", batch=2)]


def test_load_failed_fails_its_waiters_and_moves_on() -> None:
    w = worker()
    w.submit(inference("a"), 0.0)
    w.submit(inference("b", TINY), 0.0)
    w.submit(inference("c"), 1.0)
    assert w.load_failed(TINY, 2.0, "oom") == []  # not the load under way
    actions = w.load_failed(MID, 2.0, "oom")
    assert actions == [
        Finished(
            request_id="a",
            ok=False,
            reason="load_failed: oom",
            cold_start=True,
            queue_s=2.0,
            ttft_s=2.0,
            e2e_s=2.0,
        ),
        Finished(
            request_id="c",
            ok=False,
            reason="load_failed: oom",
            cold_start=True,
            queue_s=1.0,
            ttft_s=1.0,
            e2e_s=1.0,
        ),
        StartLoad(model=TINY, source=Tier.REMOTE),
    ]
    assert w.queue_depth == 1
    assert w.tier_of(MID) is Tier.REMOTE


# -- slots, queue, admission ------------------------------------------------------------------


def test_requests_start_up_to_slots_and_the_rest_queue() -> None:
    w = warm()
    assert w.submit(inference("r1"), 0.0) == [start("r1", batch=1)]
    assert w.submit(inference("r2"), 0.0) == [start("r2", batch=2)]
    assert w.submit(inference("r3"), 0.0) == []
    assert (w.running, w.queue_depth) == (2, 1)
    actions = w.request_done("r1", 1.0)
    assert actions == [
        Finished(
            request_id="r1",
            ok=True,
            reason="",
            cold_start=False,
            queue_s=0.0,
            ttft_s=1.0,
            e2e_s=1.0,
        ),
        start("r3", batch=2),
    ]
    assert (w.running, w.queue_depth) == (2, 0)
    assert w.completed_total == 1
    assert w.request_done("r1", 1.5) == []  # twice is once


def test_queue_capacity_is_enforced() -> None:
    w = warm()
    for i in range(2 + RESOURCES.queue_capacity):
        actions = w.submit(inference(f"r{i}"), 0.0)
        assert of_type(actions, Finished) == []
    assert w.queue_depth == RESOURCES.queue_capacity
    assert w.submit(inference("late"), 0.5) == [
        Finished(
            request_id="late",
            ok=False,
            reason="queue_full",
            cold_start=False,
            queue_s=0.0,
            ttft_s=0.0,
            e2e_s=0.0,
        )
    ]
    assert (w.accepted_total, w.rejected_total) == (5, 1)


@pytest.mark.parametrize(("model", "reason"), [("nope", "unknown_model"), (BIG, "model_too_large")])
def test_submit_rejects(model: str, reason: str) -> None:
    w = worker()
    assert w.submit(inference("r", model), 0.0) == [
        Finished(
            request_id="r", ok=False, reason=reason, cold_start=False, queue_s=0, ttft_s=0, e2e_s=0
        )
    ]
    assert w.queue_depth == 0
    assert w.rejected_total == 1


def test_not_ready_rejects() -> None:
    w = warm()
    w.ready = False
    assert w.submit(inference("r"), 0.0) == [
        Finished(
            request_id="r",
            ok=False,
            reason="not_ready",
            cold_start=False,
            queue_s=0,
            ttft_s=0,
            e2e_s=0,
        )
    ]
    assert w.report(0.0, "h", 1).ready is False


# -- GPU memory ------------------------------------------------------------------------------


def run_once(w: WorkerState, rid: str, model: str, now: float) -> None:
    """Load `model` if needed, run one request and finish it, all at `now`."""
    actions = w.submit(inference(rid, model), now)
    if of_type(actions, StartLoad):
        actions = w.load_done(model, now)
    assert start(rid, model) in actions
    assert of_type(w.request_done(rid, now), Finished)


def test_idle_lru_model_is_evicted_to_make_room() -> None:
    w = worker()
    run_once(w, "a", MID, 1.0)
    run_once(w, "b", SMALL, 2.0)  # 13.48 + 6.42 = 19.9 GB: both fit
    assert w.gpu_used == CATALOG[MID].size_bytes + CATALOG[SMALL].size_bytes
    actions = w.submit(inference("c", TINY), 3.0)
    assert actions == [
        Evict(model=MID, source=Tier.GPU, destination=Tier.HOST),
        StartLoad(model=TINY, source=Tier.REMOTE),
    ]
    assert w.gpu_used <= RESOURCES.gpu_bytes
    assert w.tier_of(MID) is Tier.HOST
    assert w.tier_of(SMALL) is Tier.GPU


def test_busy_model_is_not_evicted() -> None:
    w = worker()
    assert w.submit(inference("a", MID), 1.0) == [StartLoad(model=MID, source=Tier.REMOTE)]
    assert w.load_done(MID, 1.0) == [start("a", MID)]  # MID runs on, least recently used
    run_once(w, "b", SMALL, 2.0)
    actions = w.submit(inference("c", TINY), 3.0)
    assert actions == [
        Evict(model=SMALL, source=Tier.GPU, destination=Tier.HOST),
        StartLoad(model=TINY, source=Tier.REMOTE),
    ]
    assert w.tier_of(MID) is Tier.GPU


def test_load_waits_while_every_resident_model_is_busy() -> None:
    w = worker()
    w.submit(inference("a", MID), 0.0)
    w.load_done(MID, 1.0)
    w.submit(inference("b", SMALL), 1.0)
    assert w.load_done(SMALL, 2.0) == [start("b", SMALL)]
    assert w.submit(inference("c", TINY), 3.0) == []  # no room, nothing idle to evict
    assert w.gpu_used <= RESOURCES.gpu_bytes
    actions = w.request_done("b", 4.0)
    assert actions == [
        Finished(
            request_id="b", ok=True, reason="", cold_start=True, queue_s=1.0, ttft_s=3.0, e2e_s=3.0
        ),
        Evict(model=SMALL, source=Tier.GPU, destination=Tier.HOST),
        StartLoad(model=TINY, source=Tier.REMOTE),
    ]
    assert w.gpu_used <= RESOURCES.gpu_bytes


def blocked(hand_back: bool = True) -> WorkerState:
    """MID and SMALL busy on the GPU; two requests for TINY wait for a load with no room."""
    w = worker(resources=dataclasses.replace(RESOURCES, hand_back=hand_back))
    w.submit(inference("a", MID), 0.0)
    w.load_done(MID, 1.0)
    w.submit(inference("b", SMALL), 1.0)
    w.load_done(SMALL, 2.0)
    assert w.submit(inference("c", TINY), 3.0) == []
    assert w.submit(inference("d", TINY), 3.5) == []
    return w


def test_requests_waiting_for_a_blocked_load_are_handed_back_after_the_load_time() -> None:
    w = blocked()
    load_s = COST.load_time(CATALOG[TINY].size_bytes, Tier.REMOTE)
    assert w.next_deadline() == pytest.approx(3.0 + load_s)
    assert w.tick(3.0 + load_s - 0.01) == []  # not yet: a load would take as long
    actions = w.tick(3.0 + load_s)
    assert [(a.request_id, a.reason) for a in of_type(actions, Finished)] == [
        ("c", HANDED_BACK),
        ("d", HANDED_BACK),
    ]
    assert not of_type(actions, StartLoad)
    assert w.handed_back_total == 2 and w.queue_depth == 0
    # Its report no longer names the model as arriving, so nobody sends it more of them.
    assert TINY not in w.report(3.0 + load_s, "w", 9000).models
    assert w.next_deadline() != pytest.approx(3.0 + load_s)


def test_a_blocked_load_that_finds_room_in_time_keeps_its_requests() -> None:
    w = blocked()
    actions = w.request_done("b", 4.0)  # SMALL is idle: evicted, TINY loads
    assert StartLoad(model=TINY, source=Tier.REMOTE) in actions
    load_s = COST.load_time(CATALOG[TINY].size_bytes, Tier.REMOTE)
    assert not of_type(w.tick(3.0 + load_s), Finished)
    assert w.handed_back_total == 0


def test_hand_back_can_be_turned_off() -> None:
    assert not RESOURCES.hand_back  # the default
    w = blocked(hand_back=False)
    assert w.next_deadline() is None
    assert w.tick(1_000.0) == []
    assert w.queue_depth == 2


LONG = 100_000  # output tokens: a request still running whenever the tests look


def blocked_by_running(waiting: int, movable: bool = True, hand_back: bool = False) -> WorkerState:
    """MID runs one long request (and SMALL another, started later), and MID has one more
    waiting for a slot; `waiting` requests for TINY wait for a load with no room.
    Migration on."""
    resources = dataclasses.replace(RESOURCES, migrate=True, hand_back=hand_back, queue_capacity=8)
    w = worker(resources=resources)
    w.submit(inference("a", MID, output=LONG), 0.0, movable=movable)
    w.load_done(MID, 1.0)  # "a" starts at 1.0
    w.submit(inference("b", SMALL, output=LONG), 1.0, movable=movable)
    w.load_done(SMALL, 2.0)
    w.submit(inference("q", MID), 2.5)  # waits for a slot: both are taken
    for index in range(waiting):
        assert w.submit(inference(f"t{index}", TINY), 3.0) == []
    return w


def remote_load_s(model: str) -> float:
    return COST.load_time(CATALOG[model].size_bytes, Tier.REMOTE)


def test_a_blocked_load_migrates_the_cheapest_requests_in_its_way() -> None:
    """Two requests wait for TINY. In its way, SMALL has one request (running) and MID
    two: moving SMALL's costs the least (one request that may load SMALL elsewhere) and
    frees enough. Once the two waiting have lost that much time between them, SMALL's
    request migrates with the tokens it produced, SMALL leaves the GPU and TINY loads."""
    w = blocked_by_running(waiting=2)
    due = w.next_deadline()
    assert due == pytest.approx(3.0 + remote_load_s(SMALL) / 2)
    assert not of_type(w.tick(due - 0.01), Finished)  # not yet
    actions = w.tick(due)
    finished = {a.request_id: a for a in of_type(actions, Finished)}
    assert {rid: f.reason for rid, f in finished.items()} == {"b": MIGRATED}
    timing = COST.timing(CATALOG[SMALL])
    produced = timing.tokens_by(due - 2.0, 512, LONG, 1)  # "b" started at 2.0
    assert finished["b"].generated_tokens == produced > 0
    # Its first token came here: arrived at 1.0, started at 2.0, then the prefill.
    assert finished["b"].ttft_s == pytest.approx(1.0 + timing.prefill_time(512))
    assert CancelRequest(request_id="b") in actions
    assert Evict(model=SMALL, source=Tier.GPU, destination=Tier.HOST) in actions
    assert StartLoad(model=TINY, source=Tier.REMOTE) in actions
    # The slot it freed goes to MID's "q"; the TINY requests wait for their load.
    assert (w.migrated_total, w.handed_back_total, w.running, w.queue_depth) == (1, 0, 2, 2)
    assert w.request_done("b", due + 1.0) == []  # its end timer here finds nothing


def test_with_hand_back_too_the_cheaper_way_out_is_taken() -> None:
    """One request waits for TINY: handing it back (a TINY load elsewhere) costs less
    than migrating SMALL's (a SMALL load), so it goes back, at the time its load takes."""
    w = blocked_by_running(waiting=1, hand_back=True)
    assert remote_load_s(TINY) < remote_load_s(SMALL)
    due = w.next_deadline()
    assert due == pytest.approx(3.0 + remote_load_s(TINY))
    actions = w.tick(due)
    assert [(a.request_id, a.reason) for a in of_type(actions, Finished)] == [("t0", HANDED_BACK)]
    assert w.migrated_total == 0 and w.running == 2


def test_a_request_that_cannot_continue_elsewhere_never_migrates() -> None:
    """A streamed HTTP answer (`movable=False`) holds its model: with nothing that can
    move, the load waits for room (and with hand-back, its requests go back instead)."""
    w = blocked_by_running(waiting=2, movable=False)
    assert w.next_deadline() is None
    assert w.tick(1_000.0) == [] and w.queue_depth == 3
    w = blocked_by_running(waiting=2, movable=False, hand_back=True)
    actions = w.tick(w.next_deadline() or 0.0)
    assert {a.reason for a in of_type(actions, Finished)} == {HANDED_BACK}
    assert w.migrated_total == 0 and not of_type(actions, CancelRequest)


def test_tokens_by_counts_decode_steps_after_the_prefill() -> None:
    timing = COST.timing(CATALOG[MID])
    prefill = timing.prefill_time(512)
    step = timing.decode_step_time(2)
    assert timing.tokens_by(prefill / 2, 512, 64, 2) == 0
    assert timing.tokens_by(prefill, 512, 64, 2) == 1
    assert timing.tokens_by(prefill + 3.5 * step, 512, 64, 2) == 4
    assert timing.tokens_by(1e9, 512, 64, 2) == 64


def test_host_cache_evicts_least_recently_used() -> None:
    resources = WorkerResources(
        gpu_bytes=20 * GB, host_bytes=16 * GB, disk_bytes=500 * GB, slots=2, queue_capacity=3
    )
    w = worker(resources=resources)
    run_once(w, "a", MID, 1.0)  # host: MID (13.48 of 16 GB)
    w.submit(inference("b", SMALL), 2.0)
    actions = w.load_done(SMALL, 3.0)
    assert actions[0] == Evict(
        model=MID, source=Tier.HOST, destination=Tier.DISK
    )  # the disk copy stays
    assert w.tier_of(MID) is Tier.GPU  # still resident
    assert w.host_used == CATALOG[SMALL].size_bytes


def _idle_in_host(w: WorkerState, model: str, at: float) -> None:
    """Run one request for `model` at `at`, then let its keep-alive move it to host memory."""
    run_once(w, f"r-{model}", model, at)
    assert Evict(model=model, source=Tier.GPU, destination=Tier.HOST) in w.tick(at + 100.0)


def test_a_measured_host_copy_counts_at_its_real_bytes_and_evicts_what_no_longer_fits() -> None:
    """A float32 network from bfloat16 files takes twice the catalog's bytes in host
    memory: counted at those, the older copy no longer fits and is given up."""
    resources = dataclasses.replace(RESOURCES, host_bytes=30 * GB)
    w = worker(resources=resources)
    _idle_in_host(w, SMALL, 0.0)
    _idle_in_host(w, MID, 200.0)  # host: SMALL + MID by the catalog (19.9 of 30 GB)
    assert w.host_used == CATALOG[SMALL].size_bytes + CATALOG[MID].size_bytes
    doubled = 2 * CATALOG[MID].size_bytes
    assert w.host_copy_measured(MID, doubled, 400.0) == [
        Evict(model=SMALL, source=Tier.HOST, destination=Tier.DISK)
    ]
    assert w.host_used == doubled
    report = w.report(400.0, "127.0.0.1", 1)
    assert report.models == {MID: int(Tier.HOST), SMALL: int(Tier.DISK)}


def test_a_host_copy_measured_larger_than_host_memory_leaves_it() -> None:
    w = worker()
    _idle_in_host(w, MID, 0.0)
    assert w.host_copy_measured(MID, RESOURCES.host_bytes + 1, 200.0) == [
        Evict(model=MID, source=Tier.HOST, destination=Tier.DISK)
    ]
    assert w.tier_of(MID) is Tier.DISK
    assert w.host_used == 0


def test_a_measure_of_a_copy_that_went_back_to_the_gpu_changes_nothing() -> None:
    w = worker()
    _idle_in_host(w, MID, 0.0)
    assert w.submit(inference("again"), 200.0) == [StartLoad(model=MID, source=Tier.HOST)]
    assert w.host_copy_measured(MID, 3 * GB, 200.5) == []  # loading from it meanwhile
    w.load_done(MID, 201.0)
    assert w.host_copy_measured(MID, 3 * GB, 201.5) == []  # on the GPU
    assert w.host_used == CATALOG[MID].size_bytes
    assert w.host_copy_measured(SMALL, 3 * GB, 202.0) == []  # never in host memory


def test_a_duplicate_request_is_dropped_and_the_model_still_goes_idle() -> None:
    """A datagram the network delivers twice runs once, queued or running."""
    w = worker()
    assert w.submit(inference("a"), 0.0) == [StartLoad(model=MID, source=Tier.REMOTE)]
    assert w.submit(inference("a"), 0.5) == []  # queued behind its load
    assert w.load_done(MID, 1.0) == [start("a")]
    assert w.submit(inference("a"), 1.5) == []  # running
    assert of_type(w.request_done("a", 5.0), Finished)
    assert w.accepted_total == 1
    assert w.next_deadline() == 5.0 + RESOURCES.keep_alive_s  # nothing left running
    assert w.tick(15.0) == [Evict(model=MID, source=Tier.GPU, destination=Tier.HOST)]


# -- keep-alive --------------------------------------------------------------------------------


def test_keep_alive_expires_an_idle_model() -> None:
    w = worker()
    assert w.next_deadline() is None
    w.submit(inference("a"), 0.0)
    w.load_done(MID, 1.0)
    assert w.next_deadline() is None  # running
    w.request_done("a", 5.0)
    assert w.next_deadline() == 5.0 + RESOURCES.keep_alive_s
    assert w.tick(14.999) == []
    assert w.tier_of(MID) is Tier.GPU
    assert w.tick(15.0) == [Evict(model=MID, source=Tier.GPU, destination=Tier.HOST)]
    assert w.next_deadline() is None
    assert w.tier_of(MID) is Tier.HOST
    assert w.gpu_used == 0
    assert w.submit(inference("b"), 20.0) == [StartLoad(model=MID, source=Tier.HOST)]


def test_keep_alive_restarts_with_each_use() -> None:
    w = warm()
    w.submit(inference("a"), 3.0)
    w.request_done("a", 4.0)
    w.submit(inference("b"), 8.0)
    assert w.next_deadline() is None
    w.request_done("b", 9.0)
    assert w.tick(14.0) == []
    assert w.next_deadline() == 19.0


def test_queued_requests_keep_a_model_warm() -> None:
    w = worker({MID: Tier.GPU, SMALL: Tier.GPU})
    w.submit(inference("a", SMALL), 0.0)
    w.submit(inference("b", SMALL), 0.0)
    w.submit(inference("c", MID), 0.0)  # slots are full: MID has one queued
    assert w.tick(100.0) == []  # SMALL runs, MID has a request waiting
    assert w.next_deadline() is None


# -- results and timings -----------------------------------------------------------------------


def test_timings_of_a_cold_request() -> None:
    w = worker()
    w.submit(inference("r"), 1.0)
    w.load_done(MID, 3.0)
    w.first_token("r", 3.5)
    w.first_token("r", 3.7)  # only the first counts
    assert w.request_done("r", 4.0) == [
        Finished(
            request_id="r", ok=True, reason="", cold_start=True, queue_s=2.0, ttft_s=2.5, e2e_s=3.0
        )
    ]


def test_timings_of_a_warm_request() -> None:
    w = warm()
    w.submit(inference("r"), 10.0)
    w.first_token("r", 10.25)
    assert w.request_done("r", 11.0) == [
        Finished(
            request_id="r",
            ok=True,
            reason="",
            cold_start=False,
            queue_s=0.0,
            ttft_s=0.25,
            e2e_s=1.0,
        )
    ]


def test_a_request_arriving_during_the_load_is_a_cold_start() -> None:
    w = worker()
    w.submit(inference("a"), 0.0)
    w.submit(inference("b"), 2.0)
    w.load_done(MID, 5.0)
    finished = of_type(w.request_done("b", 6.0), Finished)
    assert finished == [
        Finished(
            request_id="b", ok=True, reason="", cold_start=True, queue_s=3.0, ttft_s=4.0, e2e_s=4.0
        )
    ]


def test_a_request_queued_for_a_slot_is_not_a_cold_start() -> None:
    w = warm()
    w.submit(inference("a"), 0.0)
    w.submit(inference("b"), 0.0)
    w.submit(inference("c"), 1.0)
    w.request_done("a", 2.0)
    w.first_token("c", 2.5)
    assert w.request_done("c", 3.0)[0] == Finished(
        request_id="c", ok=True, reason="", cold_start=False, queue_s=1.0, ttft_s=1.5, e2e_s=2.0
    )


# -- cancellation --------------------------------------------------------------------------------


def test_cancel_queued_request() -> None:
    w = warm()
    w.submit(inference("a"), 0.0)
    w.submit(inference("b"), 0.0)
    w.submit(inference("c"), 0.0)
    assert w.cancel("c", 2.0) == [
        Finished(
            request_id="c",
            ok=False,
            reason="cancelled",
            cold_start=False,
            queue_s=2.0,
            ttft_s=2.0,
            e2e_s=2.0,
        )
    ]
    assert w.queue_depth == 0
    w.request_done("a", 3.0)
    w.request_done("b", 4.0)
    # Nothing waits for the model any more, so keep-alive runs.
    assert w.next_deadline() == 4.0 + RESOURCES.keep_alive_s


def test_cancel_request_waiting_for_a_load() -> None:
    w = worker()
    w.submit(inference("a"), 0.0)
    assert w.cancel("a", 1.0) == [
        Finished(
            request_id="a",
            ok=False,
            reason="cancelled",
            cold_start=True,
            queue_s=1.0,
            ttft_s=1.0,
            e2e_s=1.0,
        )
    ]
    assert w.load_done(MID, 2.0) == []
    assert w.next_deadline() == 2.0 + RESOURCES.keep_alive_s


def test_cancel_running_request() -> None:
    w = warm()
    w.submit(inference("a"), 0.0)
    w.submit(inference("b"), 0.0)
    w.submit(inference("c"), 0.0)
    w.first_token("a", 0.5)
    actions = w.cancel("a", 1.0)
    assert actions == [
        CancelRequest(request_id="a"),
        Finished(
            request_id="a",
            ok=False,
            reason="cancelled",
            cold_start=False,
            queue_s=0.0,
            ttft_s=0.5,
            e2e_s=1.0,
        ),
        start("c", batch=2),
    ]
    assert w.completed_total == 0
    assert w.request_done("a", 2.0) == []  # the engine's late completion is ignored
    assert w.cancel("a", 2.0) == []
    assert w.cancel("never", 2.0) == []


# -- reports -------------------------------------------------------------------------------------


def test_report_summarizes_state() -> None:
    w = worker()
    w.submit(inference("a", TINY), 0.0)
    w.load_done(TINY, 1.0)
    w.submit(inference("b", SMALL), 2.0)  # loading
    w.submit(inference("c", MID), 2.0)  # queued behind SMALL's load
    first = w.report(3.0, "10.0.0.5", 9000, http_port=8000)
    second = w.report(4.0, "10.0.0.5", 9000, timestamp=1_700_000_000.0)
    assert second.seq > first.seq
    assert first.timestamp == 3.0
    assert second.timestamp == 1_700_000_000.0
    assert (first.node_id, first.host, first.port, first.http_port) == ("w", "10.0.0.5", 9000, 8000)
    # GPU first, then what is loading or queued to load; then the host and disk copies.
    assert first.models == {TINY: 0, SMALL: 0, MID: 0}
    assert next(iter(first.models)) == TINY
    assert first.models_omitted == 0
    assert (first.queue_depth, first.running, first.slots) == (2, 1, 2)
    assert first.queue_capacity == RESOURCES.queue_capacity
    assert first.gpu_utilization == 0.5
    assert first.memory_used == w.gpu_used == CATALOG[TINY].size_bytes + CATALOG[SMALL].size_bytes
    assert first.memory_total == RESOURCES.gpu_bytes
    assert first.load_backlog_s == pytest.approx(w.load_backlog_s(3.0))
    assert first.load_backlog_s > 0
    assert first.ready


def test_the_report_says_when_each_load_ends() -> None:
    """Loads run one at a time: SMALL's load ends first, MID's after it. A load blocked
    for room counts as waiting as long again as it has, and the report rounds to a tenth
    of a second. Nothing loading: no loads."""
    w = worker()
    assert w.report(0.0, "127.0.0.1", 9000).loads == ()
    w.submit(inference("b", SMALL), 2.0)  # loads from the store
    w.submit(inference("c", MID), 2.0)  # queued behind it
    small_s, mid_s = remote_load_s(SMALL), remote_load_s(MID)
    assert list(w.load_ends(3.0)) == [
        (SMALL, pytest.approx(2.0 + small_s - 3.0)),
        (MID, pytest.approx(2.0 + small_s - 3.0 + mid_s)),
    ]
    loads = w.report(3.0, "127.0.0.1", 9000).loads
    assert [(load.model, load.ready_in_s) for load in loads] == [
        (SMALL, round(small_s - 1.0, 1)),
        (MID, round(small_s - 1.0 + mid_s, 1)),
    ]
    # Blocked: TINY waits for room behind MID and SMALL, both busy, since 3.0.
    w = blocked_by_running(waiting=1)
    assert list(w.load_ends(3.0)) == [(TINY, pytest.approx(remote_load_s(TINY)))]
    assert list(w.load_ends(7.0)) == [(TINY, pytest.approx(4.0 + remote_load_s(TINY)))]
    assert w.load_backlog_s(7.0) == pytest.approx(remote_load_s(TINY))  # ranks a cold start


def test_a_report_names_at_most_a_few_loads() -> None:
    resources = dataclasses.replace(
        RESOURCES, gpu_bytes=200 * GB, queue_capacity=LOADS_REPORTED_MAX + 2
    )
    w = worker(resources=resources)
    models = [name for name in CATALOG if CATALOG[name].size_bytes <= resources.gpu_bytes]
    for index, model in enumerate(models[: LOADS_REPORTED_MAX + 2]):
        w.submit(inference(f"r{index}", model), 0.0)
    under_way = [model for model, _ in w.load_ends(1.0)]
    assert len(under_way) == LOADS_REPORTED_MAX + 2
    loads = w.report(1.0, "127.0.0.1", 9000).loads
    assert [load.model for load in loads] == under_way[:LOADS_REPORTED_MAX]
    assert [load.ready_in_s for load in loads] == sorted(load.ready_in_s for load in loads)


def test_report_caps_the_model_list() -> None:
    catalog = {spec.name: spec for spec in default_catalog(40)}
    resources = WorkerResources(disk_bytes=10_000 * GB, host_bytes=10_000 * GB)
    w = worker(prestaged(catalog, resources, Tier.DISK), resources, catalog)
    first_model = next(iter(catalog))
    w.submit(inference("a", first_model), 0.0)
    w.load_done(first_model, 1.0)
    summary = w.report(2.0, "h", 1)
    assert len(summary.models) == REPORT_MAX_MODELS
    assert summary.models_omitted == len(catalog) - REPORT_MAX_MODELS
    items = list(summary.models.items())
    assert items[0] == (first_model, int(Tier.GPU))
    assert all(tier == int(Tier.DISK) for _, tier in items[1:])


def test_report_lists_gpu_most_recently_used_first() -> None:
    w = worker()
    run_once(w, "a", MID, 1.0)
    run_once(w, "b", SMALL, 2.0)
    run_once(w, "c", MID, 3.0)
    models = list(w.report(4.0, "h", 1).models.items())
    assert models[:2] == [(MID, 0), (SMALL, 0)]


def summary_from_scratch(w: WorkerState) -> tuple[list[tuple[str, int]], int]:
    """What a report must list, read straight off the tiers: fastest tier first, most
    recently used first within a tier, models being loaded as on the GPU, capped."""
    arriving = ([w._load.model] if w._load is not None else []) + list(w._load_queue)
    listed: dict[str, int] = {}
    for models, tier in (
        (reversed(w._gpu), Tier.GPU),
        (arriving, Tier.GPU),
        (reversed(w._host), Tier.HOST),
        (reversed(w._disk), Tier.DISK),
    ):
        for model in models:
            if len(listed) < REPORT_MAX_MODELS:
                listed.setdefault(model, int(tier))
    held = set(w._gpu) | set(w._host) | set(w._disk) | set(arriving)
    return list(listed.items()), len(held) - len(listed)


@pytest.mark.parametrize("seed", range(12))
def test_report_stays_true_to_the_tiers_through_random_traffic(seed: int) -> None:
    """Reports reuse their summary of the tiers until something changes; after any mix of
    arrivals, loads, completions and expiries they still say what a fresh summary says,
    and the deadline is still the earliest expiry of an idle model (or the hand-back of a
    blocked load's requests)."""
    rng = random.Random(seed)
    catalog = {spec.name: spec for spec in default_catalog(40)}
    # Small host memory and disk, so that checkpoints are evicted from them too.
    resources = WorkerResources(
        gpu_bytes=30 * GB,
        host_bytes=60 * GB,
        disk_bytes=200 * GB,
        slots=2,
        keep_alive_s=5.0,
        hand_back=True,
    )
    w = worker(prestaged(catalog, resources, Tier.DISK), resources, catalog)
    names = [name for name, spec in catalog.items() if spec.size_bytes <= resources.gpu_bytes]
    now, running, loading = 0.0, [], []
    for step in range(400):
        now += rng.random()
        choice = rng.random()
        if choice < 0.4:
            actions = w.submit(inference(f"r{step}", rng.choice(names)), now)
        elif choice < 0.6 and loading:
            actions = w.load_done(loading.pop(0), now)
        elif choice < 0.85 and running:
            actions = w.request_done(running.pop(rng.randrange(len(running))), now)
        else:
            actions = w.tick(now)
        loading.extend(a.model for a in of_type(actions, StartLoad))  # type: ignore[attr-defined]
        running.extend(a.request_id for a in of_type(actions, StartRequest))  # type: ignore[attr-defined]
        if rng.random() < 0.5:
            report = w.report(now, "h", 1)
            assert (list(report.models.items()), report.models_omitted) == summary_from_scratch(w)
            assert report.memory_used == w.gpu_used
        # The first idle model in LRU order is the one that expires first.
        idle_expiries = [
            model.last_used + resources.keep_alive_s
            for model in w._gpu.values()
            if model.running == 0 and model.queued == 0
        ]
        hand_back = w._unblock_due()  # a blocked load's requests go back then
        if hand_back is not None:
            idle_expiries.append(hand_back)
        assert w.next_deadline() == min(idle_expiries, default=None)


# -- the report ---------------------------------------------------------------------------


def test_the_report_puts_each_value_in_its_own_field() -> None:
    # Every count differs from every other (RESOURCES has slots 2 and queue 3, and a busy
    # worker there would have 2 running and 2 queued), so two fields that trade places fail.
    resources = WorkerResources(
        gpu_bytes=40 * GB,
        host_bytes=100 * GB,
        disk_bytes=500 * GB,
        slots=4,
        queue_capacity=7,
        keep_alive_s=10.0,
    )
    w = worker({MID: Tier.GPU, TINY: Tier.HOST}, resources=resources)
    for i in range(3):  # three of the four slots run MID
        w.submit(inference(f"run{i}"), 1.0)
    for i in range(2):  # two wait for SMALL's load from the remote store
        w.submit(inference(f"wait{i}", SMALL), 2.0)
    report = w.report(3.0, "127.0.0.9", 7001, 8002, timestamp=1234.5)
    assert report.node_id == "w"
    assert (report.host, report.port, report.http_port) == ("127.0.0.9", 7001, 8002)
    assert report.models == {MID: Tier.GPU, SMALL: Tier.GPU, TINY: Tier.HOST}
    assert report.models_omitted == 0
    assert report.queue_depth == 2
    assert report.queue_capacity == 7
    assert report.running == 3
    assert report.slots == 4
    assert report.gpu_utilization == 0.75
    assert report.memory_used == CATALOG[MID].size_bytes + CATALOG[SMALL].size_bytes
    assert report.memory_total == 40 * GB
    load_s = COST.load_time(CATALOG[SMALL].size_bytes, Tier.REMOTE)
    assert report.load_backlog_s == pytest.approx(load_s - 1.0)
    assert report.ready is True
    assert report.seq == 1
    assert report.timestamp == 1234.5


def test_a_model_whose_engine_keeps_no_host_copy_is_never_reported_in_host_memory() -> None:
    """vLLM without sleep mode shuts an evicted engine down: its model is on disk only,
    and a report claiming host memory would make placement expect a fast reload."""
    catalog = {"m": ModelSpec("m", 1.0, 2 * GB), "n": ModelSpec("n", 1.0, 2 * GB)}
    resources = WorkerResources(keep_alive_s=10.0, slots=1)
    for keeps in (True, False):
        worker = WorkerState(
            "w",
            resources,
            catalog,
            CostModel(),
            {"m": Tier.DISK, "n": Tier.DISK},
            keeps_host_copy=lambda model, keeps=keeps: model == "n" or keeps,
        )
        request = InferenceRequest(request_id="r", model="m", prompt_tokens=1, output_tokens=1)
        worker.submit(request, 0.0)
        worker.load_done("m", 1.0)
        worker.request_done("r", 2.0)
        evictions = worker.tick(100.0)  # past the keep-alive: m leaves the GPU
        assert worker.tier_of("m") is (Tier.HOST if keeps else Tier.DISK)
        (evicted,) = [e for e in evictions if e.model == "m"]
        assert evicted.destination is (Tier.HOST if keeps else Tier.DISK)
        report = worker.report(100.0, "127.0.0.1", 1)
        assert report.models["m"] == int(Tier.HOST if keeps else Tier.DISK)


def test_a_worker_refuses_a_model_on_more_gpus_than_it_has_and_reports_its_gpus() -> None:
    catalog = {"wide": ModelSpec("wide", 70.0, 10 * GB, gpus=4)}
    worker = WorkerState("w", WorkerResources(gpus=2), catalog, CostModel())
    request = InferenceRequest(request_id="r", model="wide", prompt_tokens=1, output_tokens=1)
    (finished,) = worker.submit(request, 0.0)
    assert isinstance(finished, Finished) and finished.reason == "not_enough_gpus"
    assert worker.report(0.0, "127.0.0.1", 1).gpus == 2


def test_a_model_with_its_own_keep_alive_leaves_the_gpu_on_its_own_time() -> None:
    catalog = {
        "default": ModelSpec("default", 1.0, 2 * GB),
        "brief": ModelSpec("brief", 1.0, 2 * GB, keep_alive_s=5.0),
        "sticky": ModelSpec("sticky", 1.0, 2 * GB, keep_alive_s=1000.0),
    }
    worker = WorkerState(
        "w", WorkerResources(keep_alive_s=100.0, slots=3), catalog, CostModel(),
        {name: Tier.GPU for name in catalog},
    )  # fmt: skip
    # All idle since 0: "default" is first in LRU order, but "brief" expires first.
    assert worker.next_deadline() == 5.0
    assert [e.model for e in worker.tick(5.0) if isinstance(e, Evict)] == ["brief"]
    assert worker.next_deadline() == 100.0
    assert [e.model for e in worker.tick(100.0) if isinstance(e, Evict)] == ["default"]
    assert worker.next_deadline() == 1000.0
    assert worker.tier_of("sticky") is Tier.GPU
