"""The model catalog: real sizes in bf16, distinct names, deterministic fine-tune variants."""

from __future__ import annotations

import pytest

from sllm.workload import BASE_CATALOG, ModelSpec, default_catalog


def test_base_catalog_names_and_sizes_are_distinct() -> None:
    assert len({m.name for m in BASE_CATALOG}) == len(BASE_CATALOG)
    assert len({m.size_bytes for m in BASE_CATALOG}) == len(BASE_CATALOG)


def test_sizes_are_params_times_two_bytes() -> None:
    for spec in BASE_CATALOG:
        assert spec.size_bytes == round(spec.params_b * 1e9) * 2
    by_name = {m.name: m for m in BASE_CATALOG}
    assert by_name["llama-3.1-8b"].size_bytes == pytest.approx(16.06e9, rel=0.01)
    assert by_name["llama-3.1-70b"].size_bytes == pytest.approx(141.2e9, rel=0.01)


@pytest.mark.parametrize("m", [0, 1, 5, len(BASE_CATALOG), 30, 200])
def test_default_catalog_returns_m_distinct_models(m: int) -> None:
    specs = default_catalog(m)
    assert len(specs) == m
    assert len({s.name for s in specs}) == m
    assert specs == default_catalog(m)
    assert all(s.size_bytes > 0 for s in specs)


def test_variants_cycle_the_base_sizes() -> None:
    n = len(BASE_CATALOG)
    specs = default_catalog(2 * n + 1)
    assert specs[:n] == list(BASE_CATALOG)
    assert specs[n] == ModelSpec(
        "llama-3.2-1b-ft1", BASE_CATALOG[0].params_b, BASE_CATALOG[0].size_bytes
    )
    assert specs[2 * n].name == "llama-3.2-1b-ft2"
    assert [s.size_bytes for s in specs[n : 2 * n]] == [s.size_bytes for s in BASE_CATALOG]


def test_negative_count_raises() -> None:
    with pytest.raises(ValueError):
        default_catalog(-1)
