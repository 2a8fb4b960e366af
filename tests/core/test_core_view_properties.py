"""Property tests: LoadIndex and ClusterView against naive models that scan everything."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sllm.core.admission import Admission
from sllm.core.tiers import Tier
from sllm.core.view import ClusterView, LoadIndex
from sllm.wire.messages import WorkerReport

IDS = [f"w{i}" for i in range(6)]
MODELS = ["m0", "m1", "m2"]
TIMEOUT = 5.0

index_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(IDS), st.integers(0, 6)),
        st.tuples(st.just("discard"), st.sampled_from(IDS), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(index_ops)
def test_load_index_matches_a_sorted_scan(ops: list[tuple[str, str, int]]) -> None:
    index: LoadIndex[str] = LoadIndex()
    naive: dict[str, tuple[int, int]] = {}  # id -> (load, when that load was set)
    for step, (op, worker_id, load) in enumerate(ops):
        if op == "set":
            index.set(worker_id, load, worker_id)
            if naive.get(worker_id, (None, 0))[0] != load:
                naive[worker_id] = (load, step)
        else:
            index.discard(worker_id)
            naive.pop(worker_id, None)
        assert len(index) == len(naive)
        assert list(index.lowest()) == sorted(naive, key=lambda key: naive[key])
        assert all((worker_id in index) == (worker_id in naive) for worker_id in IDS)


reports = st.fixed_dictionaries(
    {
        "queue_depth": st.integers(0, 4),
        "running": st.integers(0, 3),
        "slots": st.integers(1, 3),
        "queue_capacity": st.integers(0, 4),
        "ready": st.booleans(),
        "models": st.dictionaries(st.sampled_from(MODELS), st.integers(0, 3), max_size=3),
    }
)
view_ops = st.lists(
    st.one_of(
        st.tuples(st.just("report"), st.sampled_from(IDS), reports),
        st.tuples(st.just("place"), st.sampled_from(IDS), st.sampled_from(MODELS), st.booleans()),
        st.tuples(st.just("remove"), st.sampled_from(IDS)),
        st.tuples(st.just("advance"), st.floats(0.0, 3.0)),
    ),
    max_size=50,
)


def make_report(worker_id: str, seq: int, timestamp: float, fields: dict[str, Any]) -> WorkerReport:
    return WorkerReport(
        node_id=worker_id,
        host="h",
        port=1,
        http_port=0,
        models=fields["models"],
        models_omitted=0,
        queue_depth=fields["queue_depth"],
        queue_capacity=fields["queue_capacity"],
        running=fields["running"],
        slots=fields["slots"],
        gpu_utilization=0.0,
        memory_used=0,
        memory_total=1,
        load_backlog_s=0.0,
        ready=fields["ready"],
        seq=seq,
        timestamp=timestamp,
    )


def check_view(view: ClusterView, live: dict[str, float]) -> None:
    """The view's indices agree with a scan of its entries."""
    assert {entry.worker_id for entry in view.entries()} == set(live)
    for entry in view.entries():
        assert entry.last_seen == live[entry.worker_id]
    accepting = {entry.worker_id: entry for entry in view.entries() if entry.accepts}
    walk = list(view.by_load.lowest())
    assert set(walk) == set(accepting)
    loads = [accepting[worker_id].load for worker_id in walk]
    assert loads == sorted(loads)
    for model in MODELS:
        on_gpu = {i for i, e in accepting.items() if e.tier_of(model) is Tier.GPU}
        gpu = view.holders(model, Tier.GPU)
        gpu_walk = [] if gpu is None else list(gpu.lowest())
        assert set(gpu_walk) == on_gpu
        gpu_loads = [accepting[worker_id].load for worker_id in gpu_walk]
        assert gpu_loads == sorted(gpu_loads)
        in_host = {i for i, e in accepting.items() if e.report.models.get(model) == Tier.HOST}
        host = view.holders(model, Tier.HOST)
        assert set([] if host is None else host.lowest()) == in_host
    turns = [view.next_in_turn() for _ in range(len(live))]
    assert {entry.worker_id for entry in turns if entry is not None} == set(live)


SOURCES = ["10.0.0.1", "10.0.0.2", ""]  # "" skips the per-source limit, never the cap


@settings(max_examples=200, deadline=None)
@given(
    view_ops,
    st.integers(1, len(IDS) + 1),
    st.integers(1, len(IDS) + 1),
    st.lists(st.sampled_from(SOURCES), min_size=1, max_size=8),
)
def test_cluster_view_indices_match_a_scan(
    ops: list[tuple[Any, ...]], capacity: int, burst: int, sources: list[str]
) -> None:
    # No refill, so the naive model of the per-source limit is a count of admissions.
    admission = Admission(capacity=capacity, per_source_per_s=0.0, per_source_burst=burst)
    view = ClusterView(TIMEOUT, admission)
    live: dict[str, float] = {}  # id -> last seen
    admitted_from: dict[str, int] = {}  # source -> new workers it brought in
    now = 0.0
    seq = 0
    for step, op in enumerate(ops):
        if op[0] == "report":
            seq += 1
            source = sources[step % len(sources)]
            joined = view.apply_report(make_report(op[1], seq, 1000.0 + seq, op[2]), now, source)
            if op[1] in live:
                assert joined is False
                live[op[1]] = now
            elif len(live) >= capacity or (source and admitted_from.get(source, 0) >= burst):
                assert joined is None
            else:
                assert joined is True
                if source:
                    admitted_from[source] = admitted_from.get(source, 0) + 1
                live[op[1]] = now
        elif op[0] == "place":
            if op[1] in live:
                view.record_placement(op[1], op[2], 3.0 if op[3] else 0.0)
        elif op[0] == "remove":
            view.remove(op[1])
            live.pop(op[1], None)
        else:
            now += op[1]
            gone = view.expire(now)
            # The view's own arithmetic (seen + TIMEOUT, not now - TIMEOUT): in floats the
            # two can differ in the last bit at the boundary.
            expected = {i for i, seen in live.items() if not seen + TIMEOUT > now}
            assert set(gone) == expected
            for worker_id in gone:
                del live[worker_id]
        check_view(view, live)
