"""The two "was the model already there" measures: each defined once, under its own name.

Why it exists: one run of the guide's simulation once printed "cache hit rate 95.2%, cold
starts 8" in its periodic state and "cache hit rate 58.2%, cold starts 69" in its final
report. Both were right; they measured different things under one name. The scheduler
counts a placement as warm when the model is on the chosen worker's GPU *or arriving
there* (a load under way), so a burst of requests for a model that is still loading
makes one cold placement and many warm ones, yet every request of that burst waits for
the load. So the two measures are named apart, and every output (``sllm status``, the
final report, the Prometheus metrics, the docs) uses these names and no other:

``warm placement rate``
    placements onto a worker that had the model on its GPU, or arriving there, divided
    by all placements (rejections are not placements). Its complement is counted as
    ``cold placements``. What the scheduler decided: the coordinator (or each
    decentralized node) counts it at every decision (`sllm.core.coordinator.Counters`).
    The seed's "cache hit rate" is this figure: the ``sllm_cache_hits_total`` metric and
    the ``cache_hit_rate`` key of ``sllm status --json`` keep that name for scripts.
``warm start rate``
    requests that completed without waiting for a model load, divided by completed
    requests. Its complement is counted as ``cold starts``: completed requests that waited
    for a load (their own, or one already under way on their worker). What the clients
    saw: the run report counts it from request outcomes (`sllm.sim.report`).

Both are 0.0 before there is anything to count. Neither counts what the other does, so a
report may print both side by side, labelled, and they need not agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The labels every text output prints, and the JSON keys beside them: one name per figure.
WARM_PLACEMENT_RATE: Final = "warm placement rate"
WARM_PLACEMENTS: Final = "warm placements"
COLD_PLACEMENTS: Final = "cold placements"
WARM_START_RATE: Final = "warm start rate"
COLD_STARTS: Final = "cold starts"


def warm_placement_rate(warm_placements: int, cold_placements: int) -> float:
    """Placements where the model was on (or arriving on) the GPU / all placements."""
    placements = warm_placements + cold_placements
    return warm_placements / placements if placements else 0.0


def warm_start_rate(completed: int, cold_starts: int) -> float:
    """Completed requests that waited for no model load / completed requests."""
    if cold_starts > completed:
        raise ValueError(f"{cold_starts} cold starts among {completed} completed requests")
    return (completed - cold_starts) / completed if completed else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Placements:
    """Warm and cold placements, summed over one scheduler or many (decentralized)."""

    warm: int = 0
    cold: int = 0

    @property
    def rate(self) -> float:
        """The warm placement rate."""
        return warm_placement_rate(self.warm, self.cold)

    def __add__(self, other: Placements) -> Placements:
        return Placements(warm=self.warm + other.warm, cold=self.cold + other.cold)
