"""The cost model: numbers follow the docstring's formulas and the physics orders tiers."""

from __future__ import annotations

import math

import pytest

from sllm.core.cost import GB, CostModel
from sllm.core.tiers import Tier
from sllm.workload import ModelSpec, bf16_model

COST = CostModel()
SMALL = bf16_model("small-1b", 1.24)  # 2.48 GB
MID = bf16_model("mid-7b", 6.74)  # 13.48 GB
BIG = bf16_model("big-70b", 69.0)  # 138 GB


@pytest.mark.parametrize("size", [1, 2 * 10**9, 140 * 10**9])
def test_load_time_orders_tiers(size: int) -> None:
    gpu, host, disk, remote = (COST.load_time(size, tier) for tier in Tier)
    assert gpu == 0.0
    assert 0.0 < host < disk < remote


def test_load_time_matches_formula() -> None:
    size = MID.size_bytes
    assert COST.load_time(size, Tier.HOST) == pytest.approx(0.5 + size / (19.9 * GB))
    assert COST.load_time(size, Tier.DISK) == pytest.approx(0.5 + size / (1.90 * GB))
    assert COST.load_time(size, Tier.REMOTE) == pytest.approx(0.5 + size / (1.25 * GB))
    # 13.48 GB over a 10 Gbit/s link: about 11 s, plus engine start.
    assert COST.load_time(size, Tier.REMOTE) == pytest.approx(11.284, abs=1e-3)


def test_load_time_grows_with_size() -> None:
    for tier in (Tier.HOST, Tier.DISK, Tier.REMOTE):
        assert COST.load_time(SMALL.size_bytes, tier) < COST.load_time(BIG.size_bytes, tier)


def test_bandwidth() -> None:
    assert COST.bandwidth(Tier.GPU) == math.inf
    assert COST.bandwidth(Tier.HOST) == 19.9 * GB
    assert COST.bandwidth(Tier.DISK) == 1.90 * GB
    assert COST.bandwidth(Tier.REMOTE) == 1.25 * GB


def test_prefill_floor_for_short_prompts() -> None:
    # 7B at 128 tokens: 128 * 6.74 * 4.05e-6 = 3.5 ms of compute, under the 31 ms floor.
    assert COST.prefill_time(MID, 128) == COST.prefill_floor_s
    assert COST.prefill_time(MID, 0) == COST.prefill_floor_s


def test_prefill_compute_bound_for_long_prompts() -> None:
    # 13B at 2048 tokens: 2048 * 13.0 * 4.05e-6 = 107.8 ms, the calibration table's number.
    model = bf16_model("llama-2-13b", 13.0)
    assert COST.prefill_time(model, 2048) == pytest.approx(2048 * 13.0 * 4.05e-6)
    assert COST.prefill_time(model, 2048) == pytest.approx(0.1078, abs=1e-4)
    assert COST.prefill_time(model, 4096) == pytest.approx(2 * COST.prefill_time(model, 2048))


def test_prefill_crossover_is_where_compute_meets_the_floor() -> None:
    crossover = COST.prefill_floor_s / (MID.params_b * COST.prefill_s_per_token_bparam)
    below, above = math.floor(crossover) - 1, math.ceil(crossover) + 1
    assert COST.prefill_time(MID, below) == COST.prefill_floor_s
    assert COST.prefill_time(MID, above) > COST.prefill_floor_s


def test_decode_step_weight_streaming_floor_and_overhead() -> None:
    # A 138 GB model streams its weights in 138e9 / 4215e9 = 32.7 ms per step.
    assert COST.decode_step_time(BIG, 1) == pytest.approx(BIG.size_bytes / (4215 * GB))
    # A 2.48 GB model would stream in 0.6 ms: bound by the 4 ms per-step overhead.
    assert COST.decode_step_time(SMALL, 1) == COST.decode_overhead_s


def test_decode_step_grows_with_batch() -> None:
    steps = [COST.decode_step_time(MID, batch) for batch in (1, 2, 8, 32)]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)
    base = max(MID.size_bytes / COST.hbm_bandwidth_Bps, COST.decode_overhead_s)
    assert COST.decode_step_time(MID, 8) == pytest.approx(base * (1 + 0.01 * 7))
    assert COST.decode_step_time(MID, 0) == COST.decode_step_time(MID, 1)


@pytest.mark.parametrize("model", [SMALL, MID, BIG])
@pytest.mark.parametrize(("prompt", "output"), [(1, 1), (128, 64), (2048, 512), (0, 0)])
def test_service_time(model: ModelSpec, prompt: int, output: int) -> None:
    ttft, e2e = COST.service_time(model, prompt, output, batch_size=4)
    assert 0.0 < ttft <= e2e
    assert ttft == COST.prefill_time(model, prompt)
    decode_steps = max(0, output - 1)
    assert e2e == pytest.approx(ttft + decode_steps * COST.decode_step_time(model, 4))


def test_single_token_output_ends_at_first_token() -> None:
    ttft, e2e = COST.service_time(MID, 512, 1)
    assert ttft == e2e


def test_with_overrides_replaces_fields() -> None:
    changed = COST.with_overrides({"remote_bandwidth_Bps": 2.5 * GB, "engine_start_s": 0})
    assert changed.remote_bandwidth_Bps == 2.5 * GB
    assert changed.engine_start_s == 0.0
    assert changed.host_bandwidth_Bps == COST.host_bandwidth_Bps
    assert COST.remote_bandwidth_Bps == 1.25 * GB  # the original is untouched
    assert COST.with_overrides({}) == COST


def test_with_overrides_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        COST.with_overrides(
            {
                "warp_speed": 9,
                "disk_bandwidth_Bps": -1.0,
                "engine_start_s": "fast",
                "prefill_floor_s": True,
                "decode_overhead_s": math.nan,
                "hbm_bandwidth_Bps": math.inf,
            }
        )
    message = str(caught.value)
    for name in (
        "warp_speed",
        "disk_bandwidth_Bps",
        "engine_start_s",
        "prefill_floor_s",
        "decode_overhead_s",
        "hbm_bandwidth_Bps",
    ):
        assert name in message
    assert message.count(";") == 5


@pytest.mark.parametrize(
    "overrides",
    [{"nope": 1.0}, {"host_bandwidth_Bps": -0.5}, {"host_bandwidth_Bps": None}],
)
def test_with_overrides_rejects_single_problem(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        COST.with_overrides(overrides)


@pytest.mark.parametrize(
    "field",
    ["host_bandwidth_Bps", "disk_bandwidth_Bps", "remote_bandwidth_Bps", "hbm_bandwidth_Bps"],
)
def test_with_overrides_rejects_zero_bandwidth(field: str) -> None:
    # A zero bandwidth would be accepted and then divide by zero in the first placement.
    with pytest.raises(ValueError, match=field):
        COST.with_overrides({field: 0})


def test_with_overrides_allows_zero_overheads() -> None:
    zeroed = COST.with_overrides(
        {
            "engine_start_s": 0,
            "prefill_floor_s": 0.0,
            "decode_overhead_s": 0,
            "decode_batch_slope": 0,
        }
    )
    assert zeroed.load_time(MID.size_bytes, Tier.HOST) == pytest.approx(
        MID.size_bytes / (19.9 * GB)
    )
