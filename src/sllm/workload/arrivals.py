"""Request records and synthetic arrival processes.

Why: the simulator and the experiments need request streams whose rate and burstiness are
knobs, so that a placement policy can be measured under smooth load and under bursts with
everything else held fixed. Two renewal processes cover that range:

- **Poisson** at rate R: exponential inter-arrival times, coefficient of variation 1.
- **Gamma** at rate R with coefficient of variation C: inter-arrival times drawn from a Gamma
  distribution with shape ``k = 1 / C**2`` and scale ``1 / (R * k)``, so the mean gap is
  ``1 / R`` and its CV is ``C``. ``C = 1`` is Poisson; ``C > 1`` clusters requests into bursts
  separated by long quiet gaps; ``C < 1`` is smoother than Poisson.

Every function takes a seeded `random.Random`; nothing here reads the clock or the global
random, so the same seed always yields the same times.

Not handled yet: time-varying rates (diurnal curves, ramps), correlated processes such as
MMPP, and a stationary (equilibrium) first gap: the first arrival is drawn from the same
inter-arrival distribution as the others (an ordinary renewal process), which for C > 1 makes
the first arrival slightly later on average than in a process observed from a random instant.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request: when it arrives (seconds from the start of the workload), for which model,
    and how many prompt and output tokens it carries."""

    time_s: float
    model: str
    prompt_tokens: int
    output_tokens: int


def _check_rate_and_duration(rate_rps: float, duration_s: float) -> None:
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be a positive finite number, got {rate_rps!r}")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a non-negative finite number, got {duration_s!r}")


def poisson_times(rng: random.Random, rate_rps: float, duration_s: float) -> Iterator[float]:
    """Yield the arrival times of a Poisson process at `rate_rps`, in ``[0, duration_s)``.

    The times are non-decreasing. Arguments are checked at call time, not at the first
    ``next()``.
    """
    _check_rate_and_duration(rate_rps, duration_s)
    return _poisson(rng, rate_rps, duration_s)


def _poisson(rng: random.Random, rate_rps: float, duration_s: float) -> Iterator[float]:
    t = rng.expovariate(rate_rps)
    while t < duration_s:
        yield t
        t += rng.expovariate(rate_rps)


def gamma_times(
    rng: random.Random, rate_rps: float, cv: float, duration_s: float
) -> Iterator[float]:
    """Yield the arrival times of a Gamma renewal process in ``[0, duration_s)``.

    The mean rate is `rate_rps` and the inter-arrival coefficient of variation is `cv`
    (``cv = 1`` is Poisson, ``cv > 1`` is bursty). The times are non-decreasing; with a very
    large `cv` several arrivals may share one instant, because tiny gaps round to zero.
    """
    _check_rate_and_duration(rate_rps, duration_s)
    if not (math.isfinite(cv) and cv > 0):
        raise ValueError(f"cv must be a positive finite number, got {cv!r}")
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate_rps * shape)
    return _gamma(rng, shape, scale, duration_s)


def _gamma(rng: random.Random, shape: float, scale: float, duration_s: float) -> Iterator[float]:
    t = rng.gammavariate(shape, scale)
    while t < duration_s:
        yield t
        t += rng.gammavariate(shape, scale)


@dataclass(frozen=True, slots=True)
class PoissonProcess:
    """A Poisson arrival source for `build_workload`."""

    rate_rps: float

    def __post_init__(self) -> None:
        _check_rate_and_duration(self.rate_rps, 0.0)

    def times(self, rng: random.Random, duration_s: float | None) -> Iterator[float]:
        """Arrival times in ``[0, duration_s)``; a synthetic process needs a duration."""
        if duration_s is None:
            raise ValueError("a Poisson process needs a duration_s")
        return poisson_times(rng, self.rate_rps, duration_s)


@dataclass(frozen=True, slots=True)
class GammaProcess:
    """A Gamma renewal arrival source for `build_workload` (rate and CV of the gaps)."""

    rate_rps: float
    cv: float

    def __post_init__(self) -> None:
        _check_rate_and_duration(self.rate_rps, 0.0)
        if not (math.isfinite(self.cv) and self.cv > 0):
            raise ValueError(f"cv must be a positive finite number, got {self.cv!r}")

    def times(self, rng: random.Random, duration_s: float | None) -> Iterator[float]:
        """Arrival times in ``[0, duration_s)``; a synthetic process needs a duration."""
        if duration_s is None:
            raise ValueError("a Gamma process needs a duration_s")
        return gamma_times(rng, self.rate_rps, self.cv, duration_s)
