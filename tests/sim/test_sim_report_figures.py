"""The report's summary figures agree with the exact ones of the `statistics` module."""

from __future__ import annotations

import random
import statistics

import pytest

from sllm.sim.report import mean_std


@pytest.mark.parametrize("seed", range(20))
def test_mean_std_matches_exact_statistics(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([1, 2, 7, 3600])
    if seed % 2:  # queue depths: small integers, many repeats
        values = [float(rng.randint(0, 64)) for _ in range(size)]
    else:  # utilizations: fractions, with a large offset that naive sums of squares lose
        values = [1e6 + rng.random() for _ in range(size)]
    figures = mean_std(values)
    assert figures.mean == round(statistics.fmean(values), 6)
    assert figures.std == pytest.approx(round(statistics.pstdev(values), 6), abs=1e-6)


def test_mean_std_of_nothing_is_zero() -> None:
    assert mean_std([]).as_dict() == {"mean": 0.0, "std": 0.0}
