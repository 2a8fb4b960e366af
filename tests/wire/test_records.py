"""`sllm.records.record`: a frozen dataclass with a fast constructor, and its refusals."""

from __future__ import annotations

import dataclasses

import pytest

from sllm.records import record


@record
class Sample:
    name: str
    count: int = 3
    ratio: float = 0.5


def test_fields_in_order_positional_or_by_name_with_defaults() -> None:
    assert Sample("a") == Sample(name="a", count=3, ratio=0.5)
    assert Sample("a", 1, ratio=0.25) == Sample("a", 1, 0.25)
    assert (Sample("a", 1).count, Sample("a", 1).ratio) == (1, 0.5)
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_frozen_slotted_and_hashable() -> None:
    sample = Sample("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.count = 4  # type: ignore[misc]
    assert not hasattr(sample, "__dict__")
    assert hash(sample) == hash(Sample("a"))


def test_a_default_factory_is_refused() -> None:
    with pytest.raises(TypeError, match="default_factory"):

        @record
        class Listed:
            items: list[int] = dataclasses.field(default_factory=list)
