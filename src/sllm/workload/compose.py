"""Compose a workload from three independent sources: when, which model, how many tokens.

Why: no single public trace has all three for a multi-model LLM service. The Azure trace has
real arrival times and token counts but one service; the Alibaba GenAI trace has a real
multi-model skew but diffusion requests. `build_workload` takes each dimension from its own
source, so an experiment can say "Azure arrivals and tokens, Alibaba popularity" or "Gamma
arrivals at CV 4, Alibaba popularity, default tokens", and change one while keeping the others.

Randomness: the caller's `random.Random` is used only to seed three child generators, one per
source, drawn in a fixed order. The same seed gives an identical list, and swapping the token
source does not change the arrival times or the models drawn.

Not handled yet: per-model arrival processes (every request draws its model independently of
the others, so a model's requests are as bursty as the aggregate stream, no more), and
workloads too large to hold as a list; generate in time windows if that becomes a problem.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Protocol

from sllm.workload.arrivals import Arrival
from sllm.workload.popularity import ModelPopularity
from sllm.workload.tokens import LognormalTokens, TraceTokens
from sllm.workload.traces import RequestTrace


class ArrivalSource(Protocol):
    """Yields non-decreasing arrival times in seconds below `duration_s` (None: all)."""

    def times(self, rng: random.Random, duration_s: float | None) -> Iterable[float]: ...


class TokenSource(Protocol):
    """``(prompt_tokens, output_tokens)`` for the `index`-th request of the workload."""

    def draw(self, rng: random.Random, index: int) -> tuple[int, int]: ...


def build_workload(
    arrivals: ArrivalSource,
    popularity: ModelPopularity,
    rng: random.Random,
    *,
    duration_s: float | None = None,
    tokens: TokenSource | None = None,
) -> list[Arrival]:
    """The requests of one workload, sorted by time.

    `arrivals` is a `PoissonProcess`, a `GammaProcess` or a `RequestTrace`; a synthetic
    process needs `duration_s`, a trace defaults to all of its rows. `tokens` defaults to the
    trace's own counts (request i gets row i) when `arrivals` is a trace, else to
    `LognormalTokens()`.
    """
    arrival_rng = random.Random(rng.getrandbits(64))
    model_rng = random.Random(rng.getrandbits(64))
    token_rng = random.Random(rng.getrandbits(64))
    if tokens is None:
        if isinstance(arrivals, RequestTrace):
            if len(arrivals) == 0:
                return []  # e.g. load_azure_trace(..., limit=0)
            tokens = TraceTokens(arrivals)
        else:
            tokens = LognormalTokens()

    workload: list[Arrival] = []
    for index, time_s in enumerate(arrivals.times(arrival_rng, duration_s)):
        model = popularity.sample(model_rng)
        prompt_tokens, output_tokens = tokens.draw(token_rng, index)
        workload.append(Arrival(time_s, model, prompt_tokens, output_tokens))
    workload.sort(key=lambda a: a.time_s)  # stable: ties keep generation order
    return workload
