"""`sllm.records.record`: a frozen, keyword-only dataclass with a fast constructor, and its
refusals."""

from __future__ import annotations

import dataclasses

import pytest

from sllm.records import record


@record
class Sample:
    name: str
    count: int = 3
    ratio: float = 0.5


def test_fields_by_name_only_with_defaults() -> None:
    assert Sample(name="a") == Sample(name="a", count=3, ratio=0.5)
    assert (Sample(name="a", count=1).count, Sample(name="a", count=1).ratio) == (1, 0.5)
    with pytest.raises(TypeError):
        Sample()  # type: ignore[call-arg]


def test_a_positional_argument_is_refused() -> None:
    # Two counts passed by position could trade places unseen; by name they cannot.
    with pytest.raises(TypeError):
        Sample("a")  # type: ignore[misc]
    with pytest.raises(TypeError):
        Sample("a", count=1)  # type: ignore[misc]


def test_a_field_without_default_may_follow_one_with() -> None:
    @record
    class Later:
        first: int = 1
        second: str

    assert Later(second="b") == Later(first=1, second="b")


def test_frozen_slotted_and_hashable() -> None:
    sample = Sample(name="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.count = 4  # type: ignore[misc]
    assert not hasattr(sample, "__dict__")
    assert hash(sample) == hash(Sample(name="a"))


def test_a_default_factory_is_refused() -> None:
    with pytest.raises(TypeError, match="default_factory"):

        @record
        class Listed:
            items: list[int] = dataclasses.field(default_factory=list)
