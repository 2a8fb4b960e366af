"""Placement on a mixed fleet, and admission by deadline: hand-built reports, a fake clock."""

from __future__ import annotations

import random

from core_builders import report, request, view_of

from sllm.core.coordinator import OVER_DEADLINE, Coordinator
from sllm.core.cost import CostModel
from sllm.core.placement import CANDIDATES_PER_TIER, Estimator, load_time_on, make_policy
from sllm.core.tiers import Tier
from sllm.core.view import ClusterView
from sllm.wire.messages import LoadEnd
from sllm.workload import default_catalog

GB = 10**9
TIMEOUT = 5.0
COST = CostModel()
CATALOG = {spec.name: spec for spec in default_catalog(11)}
MODEL = "llama-2-7b"  # 13.48 GB
HUGE = "llama-3.1-70b"  # 141.2 GB: more than an H200's 141 GB


def test_startup_aware_finds_the_one_worker_large_enough() -> None:
    # The least-loaded candidates are all too small; the large one is the busiest.
    small = [report(f"small-{i}", memory_total=80 * GB) for i in range(CANDIDATES_PER_TIER + 2)]
    large = report("large", memory_total=192 * GB, queue_depth=5, running=8)
    view = view_of(*small, large)
    policy = make_policy("startup-aware", COST, random.Random(0))
    choice = policy.choose(view, request(HUGE), CATALOG[HUGE])
    assert choice is not None and choice.worker.worker_id == "large"


def test_the_estimate_of_a_worker_too_small_is_infinite() -> None:
    estimator = Estimator(COST)
    view = view_of(report("small", memory_total=80 * GB))
    entry = next(view.entries())
    cost = estimator.request_cost(request(HUGE), CATALOG[HUGE])
    assert estimator.ttft(entry, cost) == float("inf")


def test_a_cold_start_goes_to_the_faster_disk() -> None:
    disk = {MODEL: int(Tier.DISK)}
    slow = report("slow", models=disk, disk_bandwidth_Bps=0.5e9)
    fast = report("fast", models=disk, disk_bandwidth_Bps=3.5e9, queue_depth=1)
    policy = make_policy("startup-aware", COST, random.Random(0))
    choice = policy.choose(view_of(slow, fast), request(), CATALOG[MODEL])
    assert choice is not None and choice.worker.worker_id == "fast"
    size = CATALOG[MODEL].size_bytes
    assert load_time_on(fast, Tier.DISK, size, COST) == (COST.engine_start_s + size / 3.5e9)
    # A disk slower than the store loads from the store.
    assert load_time_on(slow, Tier.DISK, size, COST) == COST.load_time(size, Tier.REMOTE)
    # A report that says nothing: the cost model's disk.
    assert load_time_on(report("x"), Tier.DISK, size, COST) == COST.load_time(size, Tier.DISK)


def coordinator(deadline_s: float | None) -> Coordinator:
    return Coordinator(
        "startup-aware", CATALOG, COST, TIMEOUT, random.Random(0), 0.0, deadline_s=deadline_s
    )


def test_admission_rejects_when_the_wait_exceeds_the_deadline() -> None:
    warm = {MODEL: int(Tier.GPU)}
    # One slot, 40 requests ahead of this one, each about 0.6 s: a wait of ~24 s, and the
    # cold start elsewhere waits for a 100 s load backlog.
    busy = report("busy", models=warm, slots=1, running=1, queue_depth=40)
    loading = report("loading", load_backlog_s=100.0)
    for deadline, action in ((60.0, "serve"), (10.0, "reject")):
        c = coordinator(deadline)
        c.handle(busy, 0.0)
        c.handle(loading, 0.0)
        decision = c.place(request(), 0.0)
        assert decision.action == action, deadline
        if action == "reject":
            assert decision.reason == OVER_DEADLINE
            assert decision.estimated_wait_s > deadline
            assert c.counters.rejected == 1


def test_admission_never_refuses_a_models_own_cold_start() -> None:
    # Nothing waits anywhere, but HUGE's load from the store takes ~113 s: above the
    # deadline, and still admitted, or the model would never be loaded at all.
    c = coordinator(10.0)
    c.handle(report("big", memory_total=192 * GB), 0.0)
    decision = c.place(request(HUGE), 0.0)
    assert decision.action == "cold_start"
    assert decision.estimated_wait_s > 100.0


def test_a_request_for_a_model_on_its_way_waits_for_its_load() -> None:
    """MODEL is on its way to the GPU of "loading" (listed there, its load ends in 90 s);
    "idle" would load it from the store in about 13 s. The request goes where the load is
    under way (ranking as if the model were there: no second copy), and its estimate
    counts the 90 s. A deadline that the 90 s miss sends it instead to the fastest worker
    within the deadline, the cold start on "idle"; one that the 13 s miss too refuses it."""
    on_its_way = report(
        "loading",
        models={MODEL: int(Tier.GPU)},
        loads=(LoadEnd(model=MODEL, ready_in_s=90.0),),
        load_backlog_s=90.0,
    )
    idle = report("idle")
    store_load_s = COST.load_time(CATALOG[MODEL].size_bytes, Tier.REMOTE)
    assert 10.0 < store_load_s < 20.0
    for deadline, action, worker in (
        (None, "serve", "loading"),
        (120.0, "serve", "loading"),
        (60.0, "cold_start", "idle"),
        (10.0, "reject", ""),
    ):
        c = coordinator(deadline)
        c.handle(on_its_way, 0.0)
        c.handle(idle, 0.0)
        decision = c.place(request(), 0.0)
        assert (decision.action, decision.worker_id) == (action, worker), deadline
        if action == "cold_start":
            assert store_load_s < decision.estimated_wait_s < 20.0
        else:
            assert 90.0 < decision.estimated_wait_s < 91.0
        if action == "reject":
            assert decision.reason == OVER_DEADLINE


def test_a_request_behind_a_loads_first_batch_starts_a_copy_where_a_gpu_has_room() -> None:
    """MODEL is on its way to "loading" (90 s to go) with one slot, and one request already
    waits for it there. The next one would wait for the load and that request, while an
    H200 with nothing on its GPU loads the model from the store in about 13 s: it starts a
    copy there, and where that GPU is full of models nobody is using. Not where it is full
    and the worker busy (the copy would evict a model in use), nor where it waits for a
    load of its own; and the load's first batch still follows the load."""
    size = CATALOG[MODEL].size_bytes
    on_its_way = {
        "models": {MODEL: int(Tier.GPU)},
        "loads": (LoadEnd(model=MODEL, ready_in_s=90.0),),
        "load_backlog_s": 90.0,
        "memory_used": size,
        "slots": 1,
    }
    other = (LoadEnd(model=HUGE, ready_in_s=5.0),)
    for waiting, elsewhere, worker in (
        (1, {}, "spare"),
        (1, {"memory_used": 141 * GB - size // 2}, "spare"),  # idle: its models serve nobody
        (1, {"memory_used": 141 * GB - size // 2, "running": 1}, "loading"),
        (1, {"loads": other, "load_backlog_s": 5.0}, "loading"),
        (0, {}, "loading"),  # the first batch
    ):
        c = coordinator(None)
        c.handle(report("loading", queue_depth=waiting, **on_its_way), 0.0)
        c.handle(report("spare", **elsewhere), 0.0)
        decision = c.place(request(), 0.0)
        assert decision.worker_id == worker, (waiting, elsewhere)
        if worker == "spare":
            assert decision.action == "cold_start" and decision.estimated_wait_s < 20.0
        else:
            assert decision.action == "serve" and decision.estimated_wait_s > 90.0


def test_a_burst_behind_a_load_starts_a_copy_for_the_requests_to_come() -> None:
    """MODEL is on its way to "loading" (its load ends 2 s before a copy's from the store
    would), and one request waits there beyond the first batch: a copy on the empty
    "spare" is not sooner for this request, so with no other requests for the model it
    waits for the load. After a burst of the model's requests, those still to come while
    a copy loads would queue behind the same load: the request starts the copy."""
    store_load_s = COST.load_time(CATALOG[MODEL].size_bytes, Tier.REMOTE)
    slots = 4
    loading = report(
        "loading",
        models={MODEL: int(Tier.GPU)},
        loads=(LoadEnd(model=MODEL, ready_in_s=store_load_s - 2.0),),
        load_backlog_s=store_load_s - 2.0,
        memory_used=CATALOG[MODEL].size_bytes,
        slots=slots,
        queue_depth=slots,  # the first batch, and one more
    )
    for burst, worker in ((0, "loading"), (120, "spare")):  # none, or two a second
        c = coordinator(None)
        c.handle(loading, 0.0)
        c.handle(report("spare", slots=slots), 0.0)
        for _ in range(burst):
            c.view.arrivals.arrived(MODEL, 0.0)
        decision = c.place(request(), 0.0)
        assert decision.worker_id == worker, burst


def test_the_coordinator_counts_each_request_of_a_known_model_once() -> None:
    """The rate placement reads counts a request when it arrives: not again when a held
    request is decided anew, and not at all for a model name not in the catalog (names
    off the wire would grow the count without bound)."""
    c = Coordinator(
        "startup-aware",
        CATALOG,
        COST,
        TIMEOUT,
        random.Random(0),
        0.0,
        deadline_s=1.0,
        hold_s=30.0,
    )
    c.handle(report("busy", slots=1, running=1, queue_depth=40), 0.0)
    assert c.view.arrivals.rate_per_s(MODEL) == 0.0
    assert c.place(request(rid="a"), 0.0).action == "hold"
    once = c.view.arrivals.rate_per_s(MODEL)
    assert once > 0.0
    for tick in range(1, 5):
        assert c.release(tick * 0.25) == []  # still over the deadline: held
    assert c.view.arrivals.rate_per_s(MODEL) == once
    c.place(request(model="no-such-model", rid="b"), 1.0)
    assert c.view.arrivals.rate_per_s("no-such-model") == 0.0


def test_a_warm_copy_within_the_deadline_serves_what_the_copy_on_its_way_would_refuse() -> None:
    """A hot model's second copy is loading (90 s to go, its queue empty, so the least
    loaded holder and the ranked choice); the first copy is warm with about 24 s of queue.
    Admission sends the request to the warm copy rather than refuse it; a node too, which
    decides among the candidates it probed, when it probed only the copy on its way; a
    deadline that the warm copy's queue misses as well refuses it."""
    on_its_way = report(
        "loading",
        models={MODEL: int(Tier.GPU)},
        loads=(LoadEnd(model=MODEL, ready_in_s=90.0),),
        load_backlog_s=90.0,
        slots=1,
    )
    warm = report("warm", models={MODEL: int(Tier.GPU)}, slots=1, running=1, queue_depth=40)
    for deadline, among, action, worker in (
        (60.0, (), "serve", "warm"),
        (60.0, ("loading",), "serve", "warm"),
        (10.0, (), "reject", ""),
    ):
        c = coordinator(deadline)
        c.handle(on_its_way, 0.0)
        c.handle(warm, 0.0)
        decision = c.place(request(), 0.0, among=among)
        assert (decision.action, decision.worker_id) == (action, worker), (deadline, among)
        if action == "serve":
            assert 10.0 < decision.estimated_wait_s < 60.0
            assert c.counters.warm_placements == 1
        else:
            assert decision.reason == OVER_DEADLINE and decision.estimated_wait_s > 90.0


def test_every_policy_counts_the_wait_for_a_load_in_its_estimate() -> None:
    on_its_way = report(
        "loading", models={MODEL: int(Tier.GPU)}, loads=(LoadEnd(model=MODEL, ready_in_s=30.0),)
    )
    warm = report("warm", models={MODEL: int(Tier.GPU)})
    estimator = Estimator(COST)
    view = view_of(on_its_way, warm)
    entries = {entry.worker_id: entry for entry in view.entries()}
    assert estimator.wait_for_load(entries["loading"], MODEL) == 30.0
    assert estimator.wait_for_load(entries["warm"], MODEL) == 0.0
    assert estimator.wait_for_load(entries["loading"], HUGE) == 0.0  # not loading there
    seed = make_policy("seed", COST, random.Random(0)).choose(
        view_of(on_its_way), request(), CATALOG[MODEL]
    )
    assert seed is not None and 30.0 < seed.estimated_wait_s < 31.0


def test_without_a_deadline_nothing_is_refused_for_waiting() -> None:
    c = coordinator(None)
    c.handle(report("busy", slots=1, running=1, queue_depth=60, load_backlog_s=500.0), 0.0)
    assert c.place(request(), 0.0).action == "cold_start"


def test_the_view_knows_its_largest_gpu_through_reports_and_removals() -> None:
    view = view_of(report("a", memory_total=80 * GB), report("b", memory_total=192 * GB))
    assert view.largest_gpu_bytes == 192 * GB
    view.apply_report(report("b", memory_total=141 * GB, seq=2, timestamp=101.0), 1.0)
    assert view.largest_gpu_bytes == 141 * GB
    view.remove("b")
    assert view.largest_gpu_bytes == 80 * GB
    view.remove("a")
    assert view.largest_gpu_bytes == 0


def test_a_checkpoint_that_fits_nowhere_costs_no_scan() -> None:
    class Counting(ClusterView):
        scans = 0

        def entries(self):  # type: ignore[no-untyped-def]
            Counting.scans += 1
            return super().entries()

    view = Counting(TIMEOUT)
    for i in range(CANDIDATES_PER_TIER + 2):
        view.apply_report(report(f"w{i}"), 0.0)
    policy = make_policy("startup-aware", COST, random.Random(0))
    choice = policy.choose(view, request(HUGE), CATALOG[HUGE])  # 141.2 GB > 141 GB
    assert choice is not None and choice.estimated_wait_s == float("inf")
    assert Counting.scans == 0
