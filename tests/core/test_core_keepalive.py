"""Learned retention (`sllm.core.keepalive`) and the worker acting on it, on a fake clock."""

from __future__ import annotations

import math

import pytest

from sllm.core.cost import CostModel
from sllm.core.keepalive import (
    BIN_S,
    HISTOGRAM_RANGE_S,
    MARGIN,
    MIN_SAMPLES,
    RATE_WINDOW_S,
    REUSE_HORIZON_S,
    IdleHistogram,
    Retention,
)
from sllm.core.tiers import Tier
from sllm.core.worker import (
    Evict,
    Finished,
    StartLoad,
    StartRequest,
    WorkerResources,
    WorkerState,
)
from sllm.wire import Codec
from sllm.wire.messages import DISK_BANDWIDTH_MAX_BPS, InferenceRequest
from sllm.workload import ModelSpec, default_catalog

GB = 10**9
COST = CostModel()
CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in default_catalog(11)}
TINY = "llama-3.2-1b"  # 2.48 GB
SMALL = "llama-3.2-3b"  # 6.42 GB
MID = "llama-2-7b"  # 13.48 GB
FIXED_KEEP_ALIVE_S = 10.0


def resources(**learned: object) -> WorkerResources:
    """A 20 GB GPU (MID + SMALL fit, not a third), a fixed keep-alive of 10 s."""
    return WorkerResources(
        gpu_bytes=20 * GB,
        host_bytes=100 * GB,
        disk_bytes=500 * GB,
        slots=2,
        queue_capacity=8,
        keep_alive_s=FIXED_KEEP_ALIVE_S,
        **learned,  # type: ignore[arg-type]
    )


def inference(rid: str, model: str) -> InferenceRequest:
    return InferenceRequest(request_id=rid, model=model, prompt_tokens=64, output_tokens=8)


def serve(w: WorkerState, rid: str, model: str, now: float) -> list[object]:
    """Submit, load if needed, run and finish one request, all at `now`; the actions."""
    actions: list[object] = list(w.submit(inference(rid, model), now))
    if any(type(a) is StartLoad for a in actions):
        actions += w.load_done(model, now)
    assert any(type(a) is StartRequest for a in actions)
    actions += w.request_done(rid, now)
    return actions


# -- the histogram -----------------------------------------------------------------------


def test_percentiles_are_upper_bin_edges() -> None:
    histogram = IdleHistogram()
    for idle in [0.2] * 5 + [30.5] * 90 + [100.0] * 5:
        histogram.observe(idle)
    assert histogram.percentile(5.0) == 1 * BIN_S  # the first bin [0, 1)
    assert histogram.percentile(50.0) == 31 * BIN_S
    assert histogram.percentile(99.0) == 101 * BIN_S


def test_too_few_idle_times_are_not_representative() -> None:
    histogram = IdleHistogram()
    for _ in range(MIN_SAMPLES - 1):
        histogram.observe(30.0)
    assert not histogram.representative
    histogram.observe(30.0)
    assert histogram.representative  # all in one bin: the CV is as high as it gets


def test_idle_times_spread_over_the_range_are_not_representative() -> None:
    histogram = IdleHistogram()
    bins = int(HISTOGRAM_RANGE_S / BIN_S)
    for index in range(bins):  # one in every bin: a flat histogram, CV 0
        histogram.observe(index * BIN_S + 0.5)
    assert histogram.bin_cv() == pytest.approx(0.0)
    assert not histogram.representative


def test_mostly_out_of_bounds_is_not_representative() -> None:
    histogram = IdleHistogram()
    for _ in range(MIN_SAMPLES):
        histogram.observe(5.0)
    for _ in range(MIN_SAMPLES + 1):
        histogram.observe(HISTOGRAM_RANGE_S + 1.0)
    assert not histogram.representative


# -- windows and eviction order ------------------------------------------------------------


def regular(retention: Retention, model: str, idle_s: float, times: int) -> float:
    """`times` requests of `model`, each after `idle_s` idle; the time of the last end."""
    now = 0.0
    for _ in range(times):
        retention.arrived(model, now, idle=True)
        retention.went_idle(model, now)
        now += idle_s
    return now - idle_s


def test_the_window_falls_back_to_the_fixed_keep_alive_until_learned() -> None:
    retention = Retention(keep_alive="histogram", eviction="lru", fixed_keep_alive_s=600.0)
    regular(retention, MID, idle_s=30.2, times=MIN_SAMPLES)  # MIN_SAMPLES - 1 idle times
    window = retention.window(MID)
    assert (window.learned, window.prewarm_s, window.keep_alive_s) == (False, 0.0, 600.0)


def test_a_learned_window_spans_the_head_to_the_tail_with_margins() -> None:
    retention = Retention(keep_alive="histogram", eviction="lru", fixed_keep_alive_s=600.0)
    regular(retention, MID, idle_s=30.2, times=MIN_SAMPLES + 1)
    window = retention.window(MID)
    assert window.learned
    assert window.prewarm_s == pytest.approx(31.0 * (1 - MARGIN))
    assert window.ends_s == pytest.approx(31.0 * (1 + MARGIN))


def test_the_fixed_policy_never_learns() -> None:
    retention = Retention(keep_alive="fixed", eviction="lru", fixed_keep_alive_s=600.0)
    regular(retention, MID, idle_s=30.2, times=3 * MIN_SAMPLES)
    assert not retention.window(MID).learned
    assert not retention.learns


def test_reuse_probability_follows_the_decayed_rate() -> None:
    retention = Retention(keep_alive="fixed", eviction="expected-cost", fixed_keep_alive_s=1.0)
    for _ in range(3):
        retention.arrived(MID, 100.0, idle=False)
    assert retention.rate_per_s(MID, 100.0) == pytest.approx(3 / RATE_WINDOW_S)
    later = 100.0 + RATE_WINDOW_S
    assert retention.rate_per_s(MID, later) == pytest.approx(3 / RATE_WINDOW_S / math.e)
    expected = 1 - math.exp(-3 / RATE_WINDOW_S * REUSE_HORIZON_S)
    assert retention.reuse_probability(MID, 100.0) == pytest.approx(expected)
    assert retention.reuse_probability(SMALL, 100.0) == 0.0  # never seen


def test_expected_cost_gives_up_the_cheapest_loss_first_and_lru_keeps_its_order() -> None:
    candidates = [(MID, 2.0), (SMALL, 2.0), (TINY, 0.5)]  # least recently used first
    lru = Retention(keep_alive="fixed", eviction="lru", fixed_keep_alive_s=1.0)
    cost = Retention(keep_alive="fixed", eviction="expected-cost", fixed_keep_alive_s=1.0)
    for retention in (lru, cost):
        for _ in range(10):
            retention.arrived(MID, 0.0, idle=False)  # MID is asked for often
        retention.arrived(SMALL, 0.0, idle=False)
        retention.arrived(TINY, 0.0, idle=False)
    assert lru.eviction_order(candidates, 0.0) == [MID, SMALL, TINY]
    # TINY: cheap and rare; SMALL: rare; MID: likely back within the horizon.
    assert cost.eviction_order(candidates, 0.0) == [TINY, SMALL, MID]


def test_unknown_policy_names_are_refused() -> None:
    with pytest.raises(ValueError, match="keep-alive policy"):
        Retention(keep_alive="arima", eviction="lru", fixed_keep_alive_s=1.0)
    with pytest.raises(ValueError, match="eviction policy"):
        Retention(keep_alive="fixed", eviction="lfu", fixed_keep_alive_s=1.0)


# -- the worker acting on it ---------------------------------------------------------------


def test_the_worker_keeps_a_model_for_its_learned_window() -> None:
    fixed = WorkerState("w", resources(), CATALOG, COST)
    learned = WorkerState("w", resources(keep_alive_policy="histogram"), CATALOG, COST)
    for w in (fixed, learned):
        now = 0.0
        for index in range(MIN_SAMPLES + 1):
            serve(w, f"r{index}", MID, now)
            now += 30.2
    last = 30.2 * MIN_SAMPLES
    assert fixed.next_deadline() == pytest.approx(last + FIXED_KEEP_ALIVE_S)
    assert learned.next_deadline() == pytest.approx(last + 31.0 * (1 + MARGIN))
    assert learned.tick(last + FIXED_KEEP_ALIVE_S + 1.0) == []  # still warm at 11 s
    assert fixed.tick(last + FIXED_KEEP_ALIVE_S + 1.0) == [
        Evict(model=MID, source=Tier.GPU, destination=Tier.HOST)
    ]


def test_expected_cost_eviction_keeps_the_model_asked_for_often() -> None:
    def fill(w: WorkerState) -> None:
        for index in range(10):  # SMALL: ten requests, then MID once, more recently
            serve(w, f"s{index}", SMALL, float(index))
        serve(w, "m", MID, 20.0)

    lru = WorkerState("w", resources(), CATALOG, COST)
    cost = WorkerState("w", resources(eviction="expected-cost"), CATALOG, COST)
    fill(lru)
    fill(cost)
    # TINY needs room: LRU gives up SMALL (used least recently), expected cost MID.
    assert lru.submit(inference("t", TINY), 21.0)[0] == Evict(
        model=SMALL, source=Tier.GPU, destination=Tier.HOST
    )
    assert cost.submit(inference("t", TINY), 21.0)[0] == Evict(
        model=MID, source=Tier.GPU, destination=Tier.HOST
    )


def test_expected_cost_eviction_in_host_memory() -> None:
    small_host = WorkerResources(
        gpu_bytes=20 * GB,
        host_bytes=21 * GB,  # MID + SMALL (19.9 GB), not TINY as well
        disk_bytes=500 * GB,
        slots=2,
        queue_capacity=8,
        keep_alive_s=FIXED_KEEP_ALIVE_S,
        eviction="expected-cost",
    )
    w = WorkerState("w", small_host, CATALOG, COST)
    for index in range(10):
        serve(w, f"m{index}", MID, float(index))  # MID: often, first into host memory
    serve(w, "s", SMALL, 20.0)  # SMALL: once
    actions = serve(w, "t", TINY, 21.0)  # TINY's copy needs host room: SMALL goes
    assert Evict(model=SMALL, source=Tier.HOST, destination=Tier.DISK) in actions
    assert w.tier_of(MID) is Tier.GPU


def test_prefetch_unloads_at_once_and_loads_back_before_the_predicted_arrival() -> None:
    w = WorkerState("w", resources(keep_alive_policy="histogram", prefetch=True), CATALOG, COST)
    now = 0.0
    for index in range(MIN_SAMPLES + 1):
        serve(w, f"r{index}", MID, now)
        w.tick(now)
        now += 30.2
    last = now - 30.2
    # Learned: prewarm 27.9 s, so MID leaves the GPU as soon as it is idle ...
    assert w.tier_of(MID) is Tier.HOST
    prewarm_at = last + 31.0 * (1 - MARGIN)
    assert w.next_deadline() == pytest.approx(prewarm_at)
    # ... and is loaded back from host memory when the pre-warm window ends.
    assert w.tick(prewarm_at) == [StartLoad(model=MID, source=Tier.HOST)]
    assert w.load_done(MID, prewarm_at + 1.0) == []
    assert w.tier_of(MID) is Tier.GPU
    actions = w.submit(inference("next", MID), last + 30.2)
    assert [type(a) for a in actions] == [StartRequest]  # warm: no load
    finished = w.request_done("next", last + 31.0)
    assert isinstance(finished[0], Finished) and not finished[0].cold_start


def test_without_prefetch_a_learned_model_stays_until_its_tail() -> None:
    w = WorkerState("w", resources(keep_alive_policy="histogram"), CATALOG, COST)
    now = 0.0
    for index in range(MIN_SAMPLES + 1):
        serve(w, f"r{index}", MID, now)
        w.tick(now)
        now += 30.2
    assert w.tier_of(MID) is Tier.GPU


def test_a_slow_disk_loads_from_the_faster_store() -> None:
    slow = COST.with_overrides({"disk_bandwidth_Bps": 0.5e9})  # below the store's 1.25 GB/s
    w = WorkerState("w", resources(), CATALOG, slow, preloaded={MID: Tier.DISK})
    assert w.submit(inference("a", MID), 0.0) == [StartLoad(model=MID, source=Tier.REMOTE)]
    fast = WorkerState("w", resources(), CATALOG, COST, preloaded={MID: Tier.DISK})
    assert fast.submit(inference("a", MID), 0.0) == [StartLoad(model=MID, source=Tier.DISK)]


def test_the_report_carries_the_workers_disk_bandwidth() -> None:
    slow = COST.with_overrides({"disk_bandwidth_Bps": 0.5e9})
    w = WorkerState("w", resources(), CATALOG, slow)
    assert w.report(0.0, "127.0.0.1", 1).disk_bandwidth_Bps == 0.5e9


def test_an_instant_disk_is_reported_within_the_wire_bound() -> None:
    instant = COST.with_overrides({"disk_bandwidth_Bps": 1e18})  # a benchmark's zero cost
    report = WorkerState("w", resources(), CATALOG, instant).report(0.0, "127.0.0.1", 1)
    assert report.disk_bandwidth_Bps == DISK_BANDWIDTH_MAX_BPS
    codec = Codec(None)
    assert codec.decode(codec.encode(report, 1.0, 1), 1.0) == report
