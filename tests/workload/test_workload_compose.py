"""Composing arrivals, popularity and token counts into one deterministic workload."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from sllm.workload import (
    GammaProcess,
    LognormalTokens,
    ModelPopularity,
    PoissonProcess,
    TraceTokens,
    build_workload,
    default_catalog,
    load_azure_trace,
    load_popularity,
)
from sllm.workload.tokens import OUTPUT_TOKENS_MAX, PROMPT_TOKENS_MAX

TRACE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:00:00.0000000,100,10
2023-11-16 18:00:00.5000000,200,20
2023-11-16 18:00:00.5000000,300,30
2023-11-16 18:00:02.0000000,400,40
"""


@pytest.fixture
def popularity() -> ModelPopularity:
    names = [spec.name for spec in default_catalog(8)]
    return ModelPopularity.from_table(load_popularity(), names)


def test_same_seed_same_workload_different_seed_differs(popularity: ModelPopularity) -> None:
    process = GammaProcess(rate_rps=20.0, cv=2.0)
    a = build_workload(process, popularity, random.Random(42), duration_s=60.0)
    b = build_workload(process, popularity, random.Random(42), duration_s=60.0)
    c = build_workload(process, popularity, random.Random(43), duration_s=60.0)
    assert a == b
    assert a != c
    assert len(a) > 100


def test_poisson_workload_shape(popularity: ModelPopularity) -> None:
    workload = build_workload(PoissonProcess(50.0), popularity, random.Random(1), duration_s=40.0)
    times = [a.time_s for a in workload]
    assert times == sorted(times)
    assert all(0.0 <= t < 40.0 for t in times)
    assert len(workload) == pytest.approx(2000, rel=0.1)
    assert {a.model for a in workload} <= set(popularity.names)
    assert all(1 <= a.prompt_tokens <= PROMPT_TOKENS_MAX for a in workload)
    assert all(1 <= a.output_tokens <= OUTPUT_TOKENS_MAX for a in workload)
    top = max(set(popularity.names), key=[a.model for a in workload].count)
    assert top == popularity.names[0]


def test_trace_workload_replays_times_and_tokens(
    tmp_path: Path, popularity: ModelPopularity
) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE, encoding="utf-8")
    trace = load_azure_trace(path)
    workload = build_workload(trace, popularity, random.Random(3))
    assert [a.time_s for a in workload] == list(trace.offsets_s)
    assert [a.prompt_tokens for a in workload] == [100, 200, 300, 400]
    assert [a.output_tokens for a in workload] == [10, 20, 30, 40]
    cut = build_workload(trace, popularity, random.Random(3), duration_s=1.0)
    assert cut == workload[:3]
    empty = load_azure_trace(path, limit=0)
    assert build_workload(empty, popularity, random.Random(3)) == []


def test_token_source_does_not_change_times_or_models(
    tmp_path: Path, popularity: ModelPopularity
) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(TRACE, encoding="utf-8")
    trace = load_azure_trace(path)
    process = PoissonProcess(10.0)
    default = build_workload(process, popularity, random.Random(9), duration_s=30.0)
    replayed = build_workload(
        process, popularity, random.Random(9), duration_s=30.0, tokens=TraceTokens(trace)
    )
    resampled = build_workload(
        process,
        popularity,
        random.Random(9),
        duration_s=30.0,
        tokens=TraceTokens(trace, resample=True),
    )
    for other in (replayed, resampled):
        assert [(a.time_s, a.model) for a in other] == [(a.time_s, a.model) for a in default]
    assert [a.prompt_tokens for a in replayed[:5]] == [100, 200, 300, 400, 100]
    assert {a.prompt_tokens for a in resampled} == {100, 200, 300, 400}


def test_synthetic_process_needs_a_duration(popularity: ModelPopularity) -> None:
    with pytest.raises(ValueError, match="duration"):
        build_workload(PoissonProcess(1.0), popularity, random.Random(0))


def test_default_tokens_follow_the_documented_fit() -> None:
    tokens = LognormalTokens()
    rng = random.Random(4)
    draws = [tokens.draw(rng, i) for i in range(20_000)]
    assert statistics.median(p for p, _ in draws) == pytest.approx(757, rel=0.05)  # e^6.63
    assert statistics.median(o for _, o in draws) == pytest.approx(151, rel=0.05)  # e^5.02
    with pytest.raises(ValueError):
        LognormalTokens(prompt_max=0)
