"""Synthetic arrival processes: rate, burstiness, determinism, argument checks."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterator

import pytest

from sllm.workload import GammaProcess, PoissonProcess, gamma_times, poisson_times


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip([0.0, *times], times, strict=False)]


def test_poisson_mean_rate_and_unit_cv() -> None:
    rate, duration = 50.0, 200.0  # about 10,000 arrivals: the count's s.d. is 1%
    times = list(poisson_times(random.Random(1), rate, duration))
    assert len(times) / duration == pytest.approx(rate, rel=0.04)
    gaps = _gaps(times)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_rate_and_cv(cv: float) -> None:
    rate, duration = 100.0, 1000.0  # about 100,000 gaps
    times = list(gamma_times(random.Random(2), rate, cv, duration))
    assert len(times) / duration == pytest.approx(rate, rel=0.05)
    gaps = _gaps(times)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, rel=0.08)


def _poisson(rng: random.Random) -> Iterator[float]:
    return poisson_times(rng, 20.0, 30.0)


def _gamma(rng: random.Random) -> Iterator[float]:
    return gamma_times(rng, 20.0, 4.0, 30.0)


@pytest.mark.parametrize("make", [_poisson, _gamma])
def test_times_are_deterministic_sorted_and_bounded(
    make: Callable[[random.Random], Iterator[float]],
) -> None:
    first = list(make(random.Random(7)))
    assert first == list(make(random.Random(7)))
    assert first != list(make(random.Random(8)))
    assert first == sorted(first)
    assert all(0.0 <= t < 30.0 for t in first)


def test_bursty_gamma_has_more_empty_windows_than_poisson() -> None:
    def empty_seconds(times: list[float]) -> int:
        return 600 - len({math.floor(t) for t in times})

    poisson = list(poisson_times(random.Random(3), 5.0, 600.0))
    bursty = list(gamma_times(random.Random(3), 5.0, 4.0, 600.0))
    assert empty_seconds(bursty) > 5 * empty_seconds(poisson)


def test_zero_duration_yields_nothing() -> None:
    assert list(poisson_times(random.Random(0), 10.0, 0.0)) == []


@pytest.mark.parametrize(
    ("rate", "cv", "duration"),
    [
        (0.0, 1.0, 1.0),
        (-1.0, 1.0, 1.0),
        (math.inf, 1.0, 1.0),
        (1.0, 0.0, 1.0),
        (1.0, math.nan, 1.0),
        (1.0, 1.0, -1.0),
        (1.0, 1.0, math.inf),
    ],
)
def test_bad_arguments_raise_at_call_time(rate: float, cv: float, duration: float) -> None:
    with pytest.raises(ValueError):
        gamma_times(random.Random(0), rate, cv, duration)


def test_processes_check_arguments_and_need_a_duration() -> None:
    with pytest.raises(ValueError):
        PoissonProcess(0.0)
    with pytest.raises(ValueError):
        GammaProcess(1.0, -2.0)
    with pytest.raises(ValueError, match="duration"):
        PoissonProcess(1.0).times(random.Random(0), None)
    with pytest.raises(ValueError, match="duration"):
        GammaProcess(1.0, 2.0).times(random.Random(0), None)
    times = list(GammaProcess(10.0, 1.0).times(random.Random(0), 5.0))
    assert times == list(gamma_times(random.Random(0), 10.0, 1.0, 5.0))
