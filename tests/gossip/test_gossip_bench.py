"""`sllm bench gossip` on tiny sizes: the measurements run and say something sensible."""

from __future__ import annotations

import math
import random

from sllm.bench.gossip import (
    ReportingMember,
    measure_bandwidth,
    measure_detection,
    measure_dissemination,
    measure_idle,
    measure_join,
    measure_placement_views,
    measure_probing,
)
from sllm.core.membership import GossipConfig, Membership

CONFIG = GossipConfig()


def test_dissemination_reaches_everyone_in_a_few_rounds() -> None:
    result = measure_dissemination(16, CONFIG, seed=0)
    assert result["t99_s"] is not None and result["t100_s"] is not None
    rounds = result["t99_s"] / CONFIG.gossip_interval_s
    assert rounds <= 3 * math.log2(16)
    piggyback = measure_dissemination(16, GossipConfig(gossip_fanout=0), seed=0)
    assert piggyback["t99_s"] is not None
    assert piggyback["t99_s"] / CONFIG.probe_interval_s <= 3 * math.log2(16)


def test_detection_is_within_the_bound_and_bandwidth_is_capped() -> None:
    detection = measure_detection(12, CONFIG, seed=1)
    assert detection["t100_s"] is not None
    assert detection["t100_s"] <= CONFIG.detection_bound(12)
    assert detection["false_suspicions"] == 0
    bandwidth = measure_bandwidth(12, CONFIG, seed=0)
    # At most fanout pushes per round plus a ping and an ack per period, each <= 1,400 B.
    cap = (CONFIG.gossip_fanout / CONFIG.gossip_interval_s + 2 / CONFIG.probe_interval_s) * 1400
    assert 0 < bandwidth["bytes_per_node_s"] <= cap


def test_probing_measurement_runs() -> None:
    result = measure_probing(2, seed=0, rate=20.0, duration=3.0, nodes=6)
    assert result["completed_share"] > 0.9
    assert result["queue_mean_s"] >= 0.0


def test_placement_views_are_audited_on_every_decision() -> None:
    # Every decision passes through the audit wrapped around the shipped scheduler.
    views = measure_placement_views(4, candidates=2, seed=0, duration=20.0)
    assert views["decisions"] > 0 and views["completed"] > 0
    assert 0.0 <= views["stale_share"] <= 1.0


def test_idle_cost_does_not_grow_with_the_cluster_and_views_stay_current() -> None:
    # Reports go out on change only: an idle node's bytes are its probes and syncs. (The
    # old node re-sent its unchanged report every 10 s: 3.1 KB/s at 10 nodes, 22 KB/s at
    # 100, the gossip rounds' cap.)
    small = measure_idle(10, seed=0)
    large = measure_idle(40, seed=0)
    assert large["bytes_per_node_s"] <= 1.25 * small["bytes_per_node_s"]
    assert small["bytes_per_node_s"] < 1_000
    assert large["views_current_share"] >= 0.99


def test_a_joiner_knows_the_members_within_two_seconds() -> None:
    result = measure_join(60, seed=0)
    assert result["t99_s"] is not None and result["t99_s"] <= 2.0
    assert result["reports_s"] is not None and result["reports_s"] <= 2.0


def test_staleness_is_zero_for_the_latest_report_and_counts_from_the_first_newer() -> None:
    bandwidth = measure_bandwidth(12, CONFIG, seed=0, change_share=0.1)
    assert 0.0 <= bandwidth["staleness_median_s"] <= bandwidth["staleness_p99_s"]
    membership = Membership("a", ("127.0.0.1", 1), random.Random(0), 0.0, CONFIG)
    reporter = ReportingMember(membership, change_share=1.0, rng=random.Random(0))
    for now in (0.0, 1.0, 2.0):
        reporter.tick(now)
    assert reporter.staleness(3, 2.5) == 0.0
    assert reporter.staleness(1, 2.5) == 1.5  # seq 2 came out at t = 1
    assert reporter.staleness(None, 2.5) == 2.5  # never had any: since the first
