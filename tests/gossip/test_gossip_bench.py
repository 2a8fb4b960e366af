"""`sllm bench gossip` on tiny sizes: the measurements run and say something sensible."""

from __future__ import annotations

import math

from sllm.bench.gossip import (
    measure_bandwidth,
    measure_detection,
    measure_dissemination,
    measure_probing,
)
from sllm.core.membership import GossipConfig

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
