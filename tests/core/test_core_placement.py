"""Placement policies and the coordinator, on reports built by hand and a fake clock."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from core_builders import GB, report, request, view_of

from sllm.core.coordinator import OVER_DEADLINE, Coordinator, retry_after_s
from sllm.core.cost import CostModel
from sllm.core.placement import (
    CANDIDATES_PER_TIER,
    Estimator,
    PlacementPolicy,
    make_policy,
    policy_names,
)
from sllm.core.tiers import Tier
from sllm.core.view import ClusterView, WorkerEntry
from sllm.wire.messages import (
    SUMMARY_MAX_MODELS,
    ClusterStateRequest,
    ClusterStateResponse,
    InferenceRequest,
    ScheduleRequest,
    ScheduleResponse,
)
from sllm.workload import default_catalog

TIMEOUT = 5.0
COST = CostModel()
CATALOG = {spec.name: spec for spec in default_catalog(11)}
MODEL = "llama-2-7b"  # 13.48 GB
OTHER = "llama-3.2-1b"


def policy(name: str, seed: int = 0) -> PlacementPolicy:
    return make_policy(name, COST, random.Random(seed))


def chosen(name: str, view: ClusterView, req: ScheduleRequest | None = None) -> str:
    req = req or request()
    choice = policy(name).choose(view, req, CATALOG[req.model])
    assert choice is not None
    return choice.worker.worker_id


def coordinator(name: str, seed: int = 0) -> Coordinator:
    return Coordinator(name, CATALOG, COST, TIMEOUT, random.Random(seed), started_at=0.0)


def place_many(coord: Coordinator, count: int, model: str = MODEL, now: float = 1.0) -> list[str]:
    placed = []
    for i in range(count):
        response = coord.place(request(model, rid=f"r{i}"), now)
        assert response.action != "reject", response.reason
        placed.append(response.worker_id)
    return placed


def test_make_policy_knows_every_name() -> None:
    assert set(policy_names()) == {
        "seed",
        "least-loaded",
        "round-robin",
        "random",
        "power-of-two",
        "startup-aware",
    }
    for name in policy_names():
        assert policy(name).name == name
    with pytest.raises(KeyError, match="startup-aware"):
        policy("best-effort")


# -- seed: the guide's score ----------------------------------------------------------


def test_seed_prefers_the_loaded_worker() -> None:
    view = view_of(
        report("cold"),
        report("warm", models={MODEL: 0}, queue_depth=5, running=4, gpu_utilization=0.5),
    )
    # warm: 1000 - 10*5 - 100*0.5 = 900 > cold: 0
    assert chosen("seed", view) == "warm"


def test_seed_leaves_the_loaded_worker_when_its_queue_is_much_longer() -> None:
    # warm: 1000 - 10*101 - 0 = -10 < cold: 0
    view = view_of(
        report("cold"),
        report("warm", models={MODEL: 0}, queue_depth=101, queue_capacity=200),
    )
    assert chosen("seed", view) == "cold"
    # ... and stays at 99: 1000 - 990 = 10 > 0
    view = view_of(
        report("cold"),
        report("warm", models={MODEL: 0}, queue_depth=99, queue_capacity=200),
    )
    assert chosen("seed", view) == "warm"


@pytest.mark.parametrize(("queue_depth", "winner"), [(9, "queued"), (11, "busy")])
def test_seed_weighs_ten_queued_against_one_full_gpu(queue_depth: int, winner: str) -> None:
    # busy: 1000 - 0 - 100*1.0 = 900; queued: 1000 - 10*q - 0
    view = view_of(
        report("busy", models={MODEL: 0}, running=8, gpu_utilization=1.0),
        report("queued", models={MODEL: 0}, queue_depth=queue_depth),
    )
    assert chosen("seed", view) == winner


def test_seed_counts_what_it_sent_since_the_report() -> None:
    view = view_of(report("a", models={MODEL: 0}), report("b", models={MODEL: 0}))
    seed = policy("seed")
    first = seed.choose(view, request(), CATALOG[MODEL])
    assert first is not None
    view.record_placement(first.worker.worker_id, MODEL, 0.0)
    second = seed.choose(view, request(), CATALOG[MODEL])
    assert second is not None
    assert {first.worker.worker_id, second.worker.worker_id} == {"a", "b"}


# -- the load-balancing baselines ---------------------------------------------------------


def test_least_loaded_picks_the_minimum() -> None:
    view = view_of(
        report("a", running=3),
        report("b", running=1, queue_depth=1),
        report("c", running=1),
        report("d", running=8, queue_depth=9),
    )
    assert chosen("least-loaded", view) == "c"


def test_round_robin_cycles_through_every_worker() -> None:
    coord = coordinator("round-robin")
    ids = [f"w{i}" for i in range(5)]
    for worker_id in ids:
        coord.handle(report(worker_id), 0.0)
    placed = place_many(coord, 15)
    assert sorted(placed[:5]) == ids
    assert placed[5:10] == placed[:5]
    assert placed[10:] == placed[:5]


@pytest.mark.parametrize("name", ["random", "power-of-two"])
def test_random_policies_are_deterministic_for_a_seed(name: str) -> None:
    def run(seed: int) -> list[str]:
        coord = coordinator(name, seed)
        for i in range(20):
            coord.handle(report(f"w{i}"), 0.0)
        return place_many(coord, 40)

    assert run(7) == run(7)
    assert len(set(run(7))) > 5  # it does spread


@pytest.mark.parametrize("name", ["random", "power-of-two", "round-robin"])
def test_sampling_policies_only_return_accepting_workers(name: str) -> None:
    coord = coordinator(name, 3)
    for i in range(10):
        full = i not in (2, 5, 8)
        depth = 4 if full else 0
        coord.handle(report(f"w{i}", running=2, slots=2, queue_depth=depth, queue_capacity=4), 0.0)
    # Three workers with 4 free queue places each take exactly 12 requests.
    placed = place_many(coord, 12)
    assert set(placed) <= {"w2", "w5", "w8"}
    assert Counter(placed) == {"w2": 4, "w5": 4, "w8": 4}
    assert coord.place(request(rid="one-too-many"), 1.0).reason == "queues_full"


# -- startup-aware: the physics ---------------------------------------------------------


def queue_to_outwait_a_host_load(req: ScheduleRequest, slots: int) -> int:
    """The shortest queue on a busy warm worker that costs more than loading from host memory.

    Behind a busy worker with `q` queued, a request waits for q + 1 requests to finish,
    spread over the slots, each as long as itself: (q + 1) / slots * e2e. A cold start on an
    idle worker holding the checkpoint in host memory costs the host -> GPU load instead.
    Both then pay the same prefill.
    """
    spec = CATALOG[req.model]
    _, e2e = COST.service_time(spec, req.prompt_tokens, req.output_tokens)
    host_load = COST.load_time(spec.size_bytes, Tier.HOST)
    ahead = math.floor(host_load * slots / e2e) + 1  # the first `ahead` that costs more
    return ahead - 1


def test_startup_aware_physics_of_the_crossover() -> None:
    req = request(prompt=512, output=128)
    spec = CATALOG[MODEL]
    q = queue_to_outwait_a_host_load(req, slots=8)
    # 13.48 GB from host memory: 0.5 s + 0.68 s; a 128-token answer takes 0.54 s, so about
    # 17 requests queued on 8 busy slots outweigh the load.
    assert COST.load_time(spec.size_bytes, Tier.HOST) == pytest.approx(1.177, abs=1e-3)
    assert COST.service_time(spec, 512, 128)[1] == pytest.approx(0.539, abs=1e-3)
    assert q == 17


@pytest.mark.parametrize("queue_depth", [0, 5, 16])
def test_startup_aware_prefers_a_warm_worker_with_a_short_queue(queue_depth: int) -> None:
    req = request()
    assert queue_depth < queue_to_outwait_a_host_load(req, slots=8)
    view = view_of(
        report("warm", models={MODEL: 0}, running=8, queue_depth=queue_depth),
        report("host", models={MODEL: 1}),
        report("empty"),
    )
    choice = policy("startup-aware").choose(view, req, CATALOG[MODEL])
    assert choice is not None
    assert choice.worker.worker_id == "warm"
    assert choice.tier is Tier.GPU
    assert choice.reason == "warm"
    _, e2e = COST.service_time(CATALOG[MODEL], 512, 128)
    prefill = COST.prefill_time(CATALOG[MODEL], 512)
    assert choice.estimated_wait_s == pytest.approx((queue_depth + 1) / 8 * e2e + prefill)


@pytest.mark.parametrize("extra", [0, 1, 10])
def test_startup_aware_cold_starts_from_host_when_waiting_costs_more(extra: int) -> None:
    req = request()
    queue_depth = queue_to_outwait_a_host_load(req, slots=8) + extra
    view = view_of(
        report("warm", models={MODEL: 0}, running=8, queue_depth=queue_depth),
        report("host", models={MODEL: 1}),
        report("empty"),
    )
    choice = policy("startup-aware").choose(view, req, CATALOG[MODEL])
    assert choice is not None
    assert choice.worker.worker_id == "host"
    assert choice.tier is Tier.HOST
    assert choice.reason == "cold_start_from_host"
    expected = COST.load_time(CATALOG[MODEL].size_bytes, Tier.HOST) + COST.prefill_time(
        CATALOG[MODEL], 512
    )
    assert choice.estimated_wait_s == pytest.approx(expected)


def test_startup_aware_counts_the_load_backlog() -> None:
    # The host copy is no bargain behind 30 s of loads already queued on that worker.
    req = request()
    view = view_of(
        report("warm", models={MODEL: 0}, running=8, queue_depth=30),
        report("host", models={MODEL: 1}, load_backlog_s=30.0),
    )
    assert chosen("startup-aware", view, req) == "warm"


def test_startup_aware_prefers_disk_to_remote() -> None:
    view = view_of(report("remote"), report("disk", models={MODEL: 2}))
    choice = policy("startup-aware").choose(view, request(), CATALOG[MODEL])
    assert choice is not None
    assert choice.worker.worker_id == "disk"
    assert choice.reason == "cold_start_from_disk"


def test_startup_aware_joins_a_load_it_started() -> None:
    coord = coordinator("startup-aware")
    for i in range(3):
        coord.handle(report(f"w{i}"), 0.0)
    first = coord.place(request(rid="a"), 1.0)
    second = coord.place(request(rid="b"), 1.0)
    assert first.action == "cold_start"
    assert second.action == "serve"  # the model is arriving there: no second load
    assert second.worker_id == first.worker_id


# -- decisions count their own effect ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "models"),
    [("least-loaded", {}), ("startup-aware", {MODEL: 0}), ("seed", {MODEL: 0})],
)
def test_a_burst_between_reports_spreads(name: str, models: dict[str, int]) -> None:
    coord = coordinator(name)
    for i in range(10):
        coord.handle(report(f"w{i}", models=models), 0.0)
    counts = Counter(place_many(coord, 50))
    assert len(counts) == 10
    assert max(counts.values()) <= math.ceil(50 / 10) + 1


# -- the coordinator ----------------------------------------------------------------------


def test_unknown_model_is_rejected() -> None:
    coord = coordinator("least-loaded")
    coord.handle(report("w"), 0.0)
    response = coord.place(request("no-such-model"), 1.0)
    assert response.action == "reject"
    assert response.reason == "unknown_model"
    assert response.worker_id == ""
    assert coord.counters.by_action == {("unknown", "reject"): 1}


@pytest.mark.parametrize("name", policy_names())
def test_no_workers_is_rejected(name: str) -> None:
    coord = coordinator(name)
    assert coord.place(request(), 0.0).reason == "no_workers"
    coord.handle(report("w"), 0.0)
    assert coord.place(request(), 1.0).action == "cold_start"
    # The worker falls silent; the next decision expires it first.
    assert coord.place(request(), TIMEOUT + 1.0).reason == "no_workers"


@pytest.mark.parametrize("name", policy_names())
def test_full_queues_are_rejected(name: str) -> None:
    coord = coordinator(name)
    for i in range(4):
        coord.handle(report(f"w{i}", running=8, queue_depth=64, models={MODEL: 0}), 0.0)
    coord.handle(report("not-ready", ready=False, models={MODEL: 0}), 0.0)
    response = coord.place(request(), 1.0)
    assert (response.action, response.reason) == ("reject", "queues_full")
    assert coord.counters.rejected == 1


@pytest.mark.parametrize("name", policy_names())
def test_no_ready_worker_is_not_saturation(name: str) -> None:
    """Workers that said they are stopping stay in the view until their timeout, but a
    request meets no full queue: the reason says "no ready workers" at once (503), and
    "queues_full" (429) is kept for ready workers whose queues are full."""
    coord = coordinator(name)
    for i in range(3):
        coord.handle(report(f"w{i}", models={MODEL: 0}), 0.0)
    assert coord.place(request(rid="before"), 0.5).action == "serve"
    for i in range(3):  # each sends its last report, as a stopping worker does
        coord.handle(report(f"w{i}", ready=False, models={MODEL: 0}, seq=2), 1.0)
    response = coord.place(request(rid="after"), 1.0 + TIMEOUT / 10)
    assert (response.action, response.reason) == ("reject", "no_ready_workers")
    assert len(coord.view) == 3  # still live: the reason is readiness, not liveness
    # One ready worker back, with a full queue: that is saturation again.
    coord.handle(report("w1", running=8, queue_depth=64, models={MODEL: 0}, seq=3), 1.5)
    assert coord.place(request(rid="full"), 1.5).reason == "queues_full"


def test_counters_and_responses() -> None:
    coord = coordinator("startup-aware")
    coord.handle(report("w", models={MODEL: 0}, port=9100, http_port=8100), 0.0)
    served = coord.place(request(MODEL, rid="a"), 1.0)
    cold = coord.place(request(OTHER, rid="b"), 1.0)
    rejected = coord.place(request("nope", rid="c"), 1.0)
    assert isinstance(served, ScheduleResponse)
    assert (served.request_id, served.worker_id, served.action) == ("a", "w", "serve")
    assert (served.host, served.port, served.http_port) == ("host-w", 9100, 8100)
    assert served.estimated_wait_s >= 0.0
    assert cold.action == "cold_start"
    assert cold.reason == "cold_start_from_remote"
    assert rejected.action == "reject"
    counters = coord.counters
    assert (counters.reports, counters.requests) == (1, 3)
    assert (counters.warm_placements, counters.cold_placements, counters.rejected) == (1, 1, 1)
    assert counters.warm_placement_rate == 0.5
    assert counters.by_action == {
        (MODEL, "serve"): 1,
        (OTHER, "cold_start"): 1,
        ("unknown", "reject"): 1,
    }


def test_handle_dispatches_every_message() -> None:
    coord = coordinator("least-loaded")
    joined = coord.handle(report("w", port=9001), 0.0)
    assert [(n.event, dict(n.fields)) for n in joined.notices] == [
        ("worker_joined", {"worker": "w", "port": 9001})
    ]
    assert joined.replies == ()
    again = coord.handle(report("w", seq=2, timestamp=101.0), 1.0)
    assert again.notices == ()
    placed = coord.handle(request(), 1.5)
    assert len(placed.replies) == 1
    assert isinstance(placed.replies[0], ScheduleResponse)
    state = coord.handle(ClusterStateRequest(request_id="s", offset=0, limit=4), 1.5)
    assert isinstance(state.replies[0], ClusterStateResponse)
    odd = coord.handle(
        InferenceRequest(request_id="x", model=MODEL, prompt_tokens=1, output_tokens=1), 1.5
    )
    assert odd.replies == ()
    assert [n.event for n in odd.notices] == ["unexpected_message"]


def test_expire_at_next_deadline() -> None:
    coord = coordinator("least-loaded")
    assert coord.next_deadline() is None
    coord.handle(report("a"), 1.0)
    coord.handle(report("b"), 2.0)
    assert coord.next_deadline() == 1.0 + TIMEOUT
    assert coord.expire(1.0 + TIMEOUT - 0.001) == ()
    # A driver that wakes at the deadline finds the worker gone, not a deadline in the past.
    lost = coord.expire(1.0 + TIMEOUT)
    assert [(n.event, n.fields["worker"]) for n in lost] == [("worker_lost", "a")]
    assert coord.next_deadline() == 2.0 + TIMEOUT


def test_cluster_state_pages_sorted_by_id() -> None:
    coord = Coordinator("seed", CATALOG, COST, TIMEOUT, random.Random(0), started_at=10.0)
    many_models = {spec.name: i % 4 for i, spec in enumerate(CATALOG.values())}
    for i, worker_id in enumerate(["w5", "w1", "w3", "w0", "w4", "w2"]):
        coord.handle(
            report(
                worker_id,
                queue_depth=i,
                running=1,
                gpu_utilization=i / 10,
                models=many_models,
            ),
            12.0,
        )
    coord.place(request(), 13.0)
    first = coord.cluster_state(ClusterStateRequest(request_id="s1", offset=0, limit=4), 14.0)
    second = coord.cluster_state(ClusterStateRequest(request_id="s2", offset=4, limit=4), 14.0)
    beyond = coord.cluster_state(ClusterStateRequest(request_id="s3", offset=6, limit=4), 14.0)
    assert [w.worker_id for w in first.workers] == ["w0", "w1", "w2", "w3"]
    assert [w.worker_id for w in second.workers] == ["w4", "w5"]
    assert beyond.workers == ()
    assert (first.offset, second.offset) == (0, 4)
    assert first.request_id == "s1"
    assert first.policy == "seed"
    assert first.active_workers == 6
    assert first.total_requests == 1
    assert first.cache_hits + first.cold_starts == 1  # the wire's names for the placements
    assert first.queue_depth_mean == pytest.approx(sum(range(6)) / 6)
    assert first.queue_depth_max == 5
    assert first.gpu_utilization_mean == pytest.approx(sum(i / 10 for i in range(6)) / 6)
    assert first.uptime_s == pytest.approx(4.0)
    summary = first.workers[0]
    assert len(summary.models) == SUMMARY_MAX_MODELS
    assert summary.models == dict(list(many_models.items())[:SUMMARY_MAX_MODELS])
    assert summary.last_report_age_s == pytest.approx(2.0)
    assert (summary.host, summary.port, summary.running) == ("host-w0", 9000, 1)


def test_cluster_state_of_an_empty_cluster() -> None:
    state = coordinator("random").cluster_state(
        ClusterStateRequest(request_id="s", offset=0, limit=4), 3.0
    )
    assert state.active_workers == 0
    assert state.workers == ()
    assert (state.queue_depth_mean, state.queue_depth_max, state.gpu_utilization_mean) == (0, 0, 0)


# -- decision cost does not grow with the cluster -------------------------------------------


def busy_cluster(size: int) -> ClusterView:
    """Warm and host-memory holders all behind long queues, the rest idle and empty.

    Nothing is pruned here: every source could still beat the best estimate, so
    startup-aware examines its full candidate set (but one GPU holder: every worker has
    the same slots, so the least loaded holder is the best of them).
    """
    view = ClusterView(TIMEOUT)
    for i in range(size):
        models: dict[str, int] = {}
        kind = i % 10
        if kind == 0:
            models = {MODEL: int(Tier.GPU)}
        elif kind in (1, 2):
            models = {MODEL: int(Tier.HOST)}
        busy = kind <= 2
        view.apply_report(
            report(
                f"w{i:05d}",
                models=models,
                running=8 if busy else 0,
                queue_depth=40 + i % 7 if busy else 0,
            ),
            0.0,
        )
    return view


def examined(
    monkeypatch: pytest.MonkeyPatch, name: str, view: ClusterView, req: ScheduleRequest
) -> tuple[int, int, str]:
    """(ttft estimates made, entries scanned, the choice) for one decision."""
    estimates = 0
    scanned = 0
    original_ttft = Estimator.ttft
    original_entries = view.entries

    def counting_ttft(self: Estimator, *args: Any, **kwargs: Any) -> float:
        nonlocal estimates
        estimates += 1
        return original_ttft(self, *args, **kwargs)

    def counting_entries() -> Iterator[WorkerEntry]:
        nonlocal scanned
        for entry in original_entries():
            scanned += 1
            yield entry

    policy_under_test = policy(name)
    with monkeypatch.context() as patch:
        patch.setattr(Estimator, "ttft", counting_ttft)
        patch.setattr(view, "entries", counting_entries)
        choice = policy_under_test.choose(view, req, CATALOG[req.model])
    assert choice is not None
    return estimates, scanned, choice.worker.worker_id


def test_startup_aware_examines_a_bounded_set(monkeypatch: pytest.MonkeyPatch) -> None:
    req = request(output=1024)  # long answers: waiting behind 40 costs more than any load
    small = examined(monkeypatch, "startup-aware", busy_cluster(100), req)
    large = examined(monkeypatch, "startup-aware", busy_cluster(5_000), req)
    assert small[0] == large[0] == 1 + 2 * CANDIDATES_PER_TIER
    assert small[1] == large[1] == 0  # never scans the cluster
    assert small[2] == "w00003"  # the first idle, empty worker: a cold start from remote
    assert large[2] == "w00003"


def test_a_holder_with_more_slots_can_beat_a_less_loaded_one() -> None:
    # Behind the least loaded GPU holder, one with twice the slots has no wait at all.
    view = view_of(
        report("narrow", models={MODEL: int(Tier.GPU)}, slots=8, running=8),
        report("wide", models={MODEL: int(Tier.GPU)}, slots=16, running=9),
        *(report(f"h{i}", models={MODEL: int(Tier.GPU)}, running=10) for i in range(3)),
    )
    assert not view.same_slots
    policy = make_policy("startup-aware", COST, random.Random(0))
    choice = policy.choose(view, request(), CATALOG[MODEL])
    assert choice is not None and choice.worker.worker_id == "wide"
    view.remove("wide")
    assert view.same_slots
    choice = policy.choose(view, request(), CATALOG[MODEL])
    assert choice is not None and choice.worker.worker_id == "narrow"


def test_same_slots_follows_reports_and_removals() -> None:
    view = view_of(report("a", slots=8), report("b", slots=8))
    assert view.same_slots
    view.apply_report(report("b", slots=4, seq=2, timestamp=101.0), 1.0)
    assert not view.same_slots
    view.apply_report(report("a", slots=4, seq=2, timestamp=101.0), 1.0)
    assert view.same_slots
    view.apply_report(report("c", slots=2), 1.0)
    assert not view.same_slots
    view.remove("c")
    assert view.same_slots


@pytest.mark.parametrize("size", [100, 5_000])
def test_seed_scans_every_worker(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    estimates, scanned, _ = examined(monkeypatch, "seed", busy_cluster(size), request())
    assert scanned == size
    assert estimates == 1  # only the winner gets an estimate, for the reply


def test_model_larger_than_the_gpu_is_rejected() -> None:
    coord = coordinator("least-loaded")
    coord.handle(report("w", memory_total=20 * 10**9), 0.0)
    response = coord.place(request("llama-2-13b"), 1.0)  # 26 GB of weights
    assert (response.action, response.reason) == ("reject", "model_too_large")
    assert coord.place(request("llama-2-7b"), 1.0).action == "cold_start"  # 13.5 GB fits


def test_a_model_whose_only_fitting_worker_is_full_is_told_to_retry() -> None:
    """A worker it fits exists but takes no request now: that is saturation (429, retry
    shortly), not a model that fits nowhere (400)."""
    coord = coordinator("startup-aware")
    coord.handle(report("small", memory_total=20 * 10**9), 0.0)
    coord.handle(report("large", memory_total=80 * 10**9, queue_depth=64), 0.0)  # full
    response = coord.place(request("llama-2-13b"), 1.0)
    assert (response.action, response.reason) == ("reject", "queues_full")
    coord.handle(report("large", memory_total=80 * 10**9, seq=2, timestamp=101.0), 1.0)
    assert coord.place(request("llama-2-13b"), 2.0).worker_id == "large"


@pytest.mark.parametrize(
    ("reason", "estimated_wait_s", "retry_after"),
    [
        ("queues_full", 0.0, 1),
        (OVER_DEADLINE, 0.2, 1),  # at least a second
        (OVER_DEADLINE, 12.2, 13),  # when the estimate says a slot or a load is free
        (OVER_DEADLINE, 5000.0, 60),  # at most what the official openai client honours
        ("no_workers", 0.0, 15),
        ("no_ready_workers", 0.0, 15),
        ("not_enough_gpus", 0.0, 15),
        ("model_too_large", 0.0, None),  # asking again cannot help
        ("unknown_model", 0.0, None),
    ],
)
def test_a_refusal_says_how_long_to_wait_before_asking_again(
    reason: str, estimated_wait_s: float, retry_after: int | None
) -> None:
    assert retry_after_s(reason, estimated_wait_s) == retry_after


@pytest.mark.parametrize(
    "message",
    [request(), ClusterStateRequest(request_id="s", offset=0, limit=4)],
    ids=["schedule", "cluster_state"],
)
def test_workers_expired_while_handling_are_announced(message: Any) -> None:
    coord = coordinator("least-loaded")
    coord.handle(report("a"), 0.0)
    coord.handle(report("b"), 3.0)
    outcome = coord.handle(message, TIMEOUT + 1.0)
    assert [(n.event, n.fields["worker"]) for n in outcome.notices] == [("worker_lost", "a")]
    assert coord.expire(TIMEOUT + 1.0) == ()  # announced once, not again


@pytest.mark.parametrize("name", policy_names())
def test_a_model_on_several_gpus_is_placed_only_where_there_are_that_many(name: str) -> None:
    from sllm.workload import ModelSpec

    wide = ModelSpec("wide-70b", 70.0, 140 * 10**9, gpus=4)
    catalog = {**CATALOG, wide.name: wide}
    coord = Coordinator(name, catalog, COST, TIMEOUT, random.Random(0), started_at=0.0)
    # The small workers are idle and hold the model warm, so every policy would take
    # one of them if GPUs did not count.
    for index in range(6):
        coord.view.apply_report(
            report(f"small-{index}", gpus=2, models={wide.name: int(Tier.GPU)}), 0.0
        )
    coord.view.apply_report(report("big", gpus=4, queue_depth=5, running=8), 0.0)
    for index in range(5):
        response = coord.place(request(wide.name, rid=f"w{index}"), 1.0)
        assert response.worker_id == "big", (name, response)
    # a model on one GPU still goes anywhere
    assert coord.place(request(MODEL, rid="small"), 1.0).action != "reject"


@pytest.mark.parametrize("name", policy_names())
def test_a_model_is_placed_only_where_its_weights_fit(name: str) -> None:
    """Every policy, seed's fit-blind score included: a worker too small for the weights
    is passed over for one they fit, however idle it is (the baseline's requests used to
    be refused ``model_too_large`` there, a failure of the baseline's own making)."""
    coord = coordinator(name)
    for index in range(6):
        coord.view.apply_report(report(f"small-{index}", memory_total=20 * GB), 0.0)
    coord.view.apply_report(report("large", queue_depth=5, running=8, gpu_utilization=0.9), 0.0)
    for index in range(5):
        response = coord.place(request("llama-2-13b", rid=f"l{index}"), 1.0)  # 26 GB
        assert response.worker_id == "large", (name, response)
    # a model the small workers hold still goes anywhere
    assert coord.place(request(MODEL, rid="small"), 1.0).action != "reject"


@pytest.mark.parametrize(
    ("workers", "reason"),
    [
        # (GPUs, GB of GPU memory, queue depth) per worker; the model: 4 GPUs, 140 GB
        ([(2, 141, 0)], "not_enough_gpus"),  # one may join: 503
        ([(2, 141, 0), (4, 80, 0)], "model_too_large"),  # asking again cannot help
        ([(2, 141, 0), (4, 80, 0), (4, 320, 64)], "queues_full"),  # the one it fits is full
    ],
)
def test_a_model_that_fits_no_accepting_worker_is_refused_saying_why(
    workers: list[tuple[int, int, int]], reason: str
) -> None:
    from sllm.workload import ModelSpec

    wide = ModelSpec("wide-70b", 70.0, 140 * GB, gpus=4)
    coord = Coordinator(
        "seed", {**CATALOG, wide.name: wide}, COST, TIMEOUT, random.Random(0), started_at=0.0
    )
    for index, (gpus, memory_gb, queue_depth) in enumerate(workers):
        worker = report(
            f"w{index}", gpus=gpus, memory_total=memory_gb * GB, queue_depth=queue_depth
        )
        coord.view.apply_report(worker, 0.0)
    response = coord.place(request(wide.name), 1.0)
    assert (response.action, response.reason) == ("reject", reason)


def test_a_model_no_worker_has_gpus_enough_for_is_rejected_saying_so() -> None:
    from sllm.workload import ModelSpec

    wide = ModelSpec("wide-70b", 70.0, 140 * 10**9, gpus=8)
    coord = Coordinator(
        "startup-aware", {wide.name: wide}, COST, TIMEOUT, random.Random(0), started_at=0.0
    )
    coord.view.apply_report(report("a", gpus=4), 0.0)
    response = coord.place(request(wide.name), 1.0)
    assert (response.action, response.reason) == ("reject", "not_enough_gpus")


@pytest.mark.parametrize("name", policy_names())
def test_placement_among_candidates_decides_among_them_alone(name: str) -> None:
    """A node's probed candidates: their reports are fresh, so an idle worker outside them
    (whose copy may be stale) is not chosen however good it looks."""
    coord = coordinator(name)
    coord.view.apply_report(report("idle-but-stale", models={MODEL: int(Tier.GPU)}), 0.0)
    coord.view.apply_report(report("a", queue_depth=3, running=8), 0.0)
    coord.view.apply_report(report("b", queue_depth=2, running=8), 0.0)
    for index in range(6):
        response = coord.place(request(rid=f"c{index}"), 1.0, among=("a", "b"))
        assert response.worker_id in ("a", "b"), (name, response)


def test_placement_among_candidates_counts_what_was_sent_to_them_since() -> None:
    """The candidates' pending placements go with them into the decision, so that
    requests placed among the same two alternate rather than pile onto one."""
    coord = coordinator("least-loaded")
    coord.view.apply_report(report("a", running=4), 0.0)
    coord.view.apply_report(report("b", running=4), 0.0)
    placed = [coord.place(request(rid=f"p{i}"), 1.0, among=("a", "b")).worker_id for i in range(6)]
    assert Counter(placed) == {"a": 3, "b": 3}, placed


@pytest.mark.parametrize(
    ("candidates", "why"),
    [
        ((), "no candidate"),
        (("gone",), "none the view knows"),
        (("full",), "every candidate's queue full"),
        (("tiny",), "none large enough for the model"),
    ],
)
def test_placement_among_candidates_falls_back_to_the_whole_view(
    candidates: tuple[str, ...], why: str
) -> None:
    coord = coordinator("startup-aware")
    coord.view.apply_report(report("other"), 0.0)
    coord.view.apply_report(report("full", queue_depth=64, queue_capacity=64, running=8), 0.0)
    coord.view.apply_report(report("tiny", memory_total=4 * 10**9), 0.0)
    response = coord.place(request(), 1.0, among=candidates)
    assert response.worker_id == "other", why
