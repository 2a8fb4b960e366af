"""The cost model: how long a load and a request take. One place for every timing number.

The startup-aware policy, the sim engine and the simulator all read time from here, so a
placement estimate and the simulated outcome can never disagree about physics.

Theory of operation (after ServerlessLLM, Fu et al., OSDI'24, arXiv 2401.14351):

- **Load time** of a checkpoint of ``B`` bytes from tier ``t`` is
  ``engine_start_s + B / bandwidth[t]``; a checkpoint already on the GPU costs 0.
  A worker loads one checkpoint at a time, so a new load also waits for the loads
  queued before it (the worker reports that backlog in seconds).
- **Prefill** of ``p`` prompt tokens for a model of ``P`` billion parameters is
  ``max(prefill_floor_s, p * P * prefill_s_per_token_bparam)``: short prompts are bound by
  kernel-launch overhead, long ones by compute, which scales with tokens x parameters.
- **Decode** step time at batch size ``b`` is
  ``max(weight_bytes / hbm_bandwidth, decode_overhead_s) * (1 + decode_batch_slope * (b - 1))``:
  a production engine streams every weight once per step (the floor), a small model is bound
  by per-step overhead, and a larger batch costs a little more per step.
- **Time to first token** is the prefill (it produces the first token); **end-to-end** adds
  ``output_tokens - 1`` decode steps. The batch size is fixed when a request starts.

Defaults and where they come from (H200 host, PCIe gen5, measured 2026-11-28; the raw
numbers are in ``docs/calibration.md``):

- host memory -> GPU 19.9 GB/s: reused pinned 8x256 MB ring, pipelined, file in page cache;
- local disk -> GPU 1.90 GB/s: the same ring after ``drop_caches`` (cold);
- remote store 1.25 GB/s: a 10 Gbit/s link, the remote-download baseline ServerlessLLM uses;
- engine start 0.5 s: an assumption (process-local engine re-initialisation), not measured;
- prefill floor 31 ms and 4.05e-6 s per token per billion parameters: fitted to the eager
  bf16 prefill table (7B: 35.5/34.5/60.0 ms at 128/512/2048 tokens; 13B: 31.5/31.1/107.8 ms);
- HBM bandwidth 4.215 TB/s: the measured device-to-device read+write copy rate;
- decode overhead 4 ms per step and +1% per extra sequence in the batch: assumptions for a
  CUDA-graph engine, which the calibration notes say decodes near the weight-streaming floor.

Not modelled yet: KV-cache memory limits, chunked-prefill interference with decode, and
batch size changing while a request runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sllm.core.tiers import Tier

GB = 1e9


class ModelInfo(Protocol):
    """What the cost model needs to know about a model."""

    @property
    def name(self) -> str: ...

    @property
    def params_b(self) -> float: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def gpus(self) -> int:
        """GPUs one copy of the model runs on (tensor parallelism); a worker with fewer
        cannot hold it."""
        ...

    @property
    def keep_alive_s(self) -> float | None:
        """Seconds this model stays loaded once idle, where it differs from the worker's
        keep-alive (a model deployed with its own); None: the worker's."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CostModel:
    """Calibrated timing constants; override any field with `CostModel.with_overrides`."""

    host_bandwidth_Bps: float = 19.9 * GB
    disk_bandwidth_Bps: float = 1.90 * GB
    remote_bandwidth_Bps: float = 1.25 * GB
    engine_start_s: float = 0.5
    prefill_floor_s: float = 0.031
    prefill_s_per_token_bparam: float = 4.05e-6
    hbm_bandwidth_Bps: float = 4215 * GB
    decode_overhead_s: float = 0.004
    decode_batch_slope: float = 0.01

    def with_overrides(self, overrides: Mapping[str, Any]) -> CostModel:
        """A copy with some fields replaced; unknown names, non-numbers, negatives raise.

        Bandwidths (the ``*_Bps`` fields) must be > 0: they divide. Every other field may be 0.
        All problems are reported in one ValueError.
        """
        known = {f.name for f in dataclasses.fields(self)}
        problems = [f"{key}: unknown cost-model field" for key in overrides if key not in known]
        values: dict[str, float] = {}
        for key, value in overrides.items():
            if key not in known:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{key}={value!r}: not a number")
            elif not math.isfinite(value) or value < 0:
                problems.append(f"{key}={value!r}: must be a finite number >= 0")
            elif value == 0 and key.endswith("_Bps"):
                problems.append(f"{key}={value!r}: a bandwidth must be > 0")
            else:
                values[key] = float(value)
        if problems:
            raise ValueError("; ".join(problems))
        return dataclasses.replace(self, **values)

    def bandwidth(self, tier: Tier) -> float:
        """Bytes per second from `tier` to the GPU; infinite for the GPU itself."""
        if tier == Tier.GPU:
            return math.inf
        if tier == Tier.HOST:
            return self.host_bandwidth_Bps
        if tier == Tier.DISK:
            return self.disk_bandwidth_Bps
        return self.remote_bandwidth_Bps

    def load_time(self, size_bytes: int, tier: Tier) -> float:
        """Seconds to bring a checkpoint from `tier` onto the GPU, not counting queued loads."""
        if tier == Tier.GPU:
            return 0.0
        return self.engine_start_s + size_bytes / self.bandwidth(tier)

    def timing(self, model: ModelInfo) -> ModelTiming:
        """`model`'s timings under this cost model, for callers that time many requests."""
        return ModelTiming(
            params_b=model.params_b,
            prefill_floor_s=self.prefill_floor_s,
            prefill_s_per_token_bparam=self.prefill_s_per_token_bparam,
            decode_step_s=max(model.size_bytes / self.hbm_bandwidth_Bps, self.decode_overhead_s),
            decode_batch_slope=self.decode_batch_slope,
            load_s=tuple(self.load_time(model.size_bytes, tier) for tier in Tier),
        )

    def prefill_time(self, model: ModelInfo, prompt_tokens: int) -> float:
        return self.timing(model).prefill_time(prompt_tokens)

    def decode_step_time(self, model: ModelInfo, batch_size: int) -> float:
        return self.timing(model).decode_step_time(batch_size)

    def service_time(
        self, model: ModelInfo, prompt_tokens: int, output_tokens: int, batch_size: int = 1
    ) -> tuple[float, float]:
        """(time to first token, end-to-end) of one request once it holds a slot."""
        return self.timing(model).service_time(prompt_tokens, output_tokens, batch_size)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelTiming:
    """One model under one cost model: the formulas above, with the per-model part done once.

    Placement estimates every decision and the sim engine times every request, millions
    of times a simulated hour: each keeps one of these per model (`CostModel.timing`), so
    a request costs a few multiplications. The cost model's own methods go through it
    too, so there is one copy of each formula.
    """

    params_b: float
    prefill_floor_s: float
    prefill_s_per_token_bparam: float
    decode_step_s: float  # at batch size 1: the larger of weight streaming and overhead
    decode_batch_slope: float
    load_s: tuple[float, ...]  # from each tier (indexed by Tier), queued loads not counted

    def prefill_time(self, prompt_tokens: int) -> float:
        compute = prompt_tokens * self.params_b * self.prefill_s_per_token_bparam
        return max(self.prefill_floor_s, compute)

    def decode_step_time(self, batch_size: int) -> float:
        if batch_size <= 1:
            return self.decode_step_s
        return self.decode_step_s * (1.0 + self.decode_batch_slope * (batch_size - 1))

    def service_time(
        self, prompt_tokens: int, output_tokens: int, batch_size: int = 1
    ) -> tuple[float, float]:
        """(time to first token, end-to-end) of one request once it holds a slot."""
        ttft = self.prefill_time(prompt_tokens)
        return ttft, ttft + max(0, output_tokens - 1) * self.decode_step_time(batch_size)

    def tokens_by(
        self, elapsed_s: float, prompt_tokens: int, output_tokens: int, batch_size: int = 1
    ) -> int:
        """Output tokens a request has produced `elapsed_s` after it took its slot: none
        during the prefill, then one per decode step (what a migrated request need not
        produce again)."""
        ttft = self.prefill_time(prompt_tokens)
        if elapsed_s < ttft or output_tokens <= 0:
            return 0
        steps = int((elapsed_s - ttft) / self.decode_step_time(batch_size))
        return min(output_tokens, 1 + steps)
