"""Every field lands where it is named: each wire message and each core record is built with
a different value in every field, and each value is read back from its own field, after
construction and after a round trip through the codec.

Why: two fields of one type that trade places (`queue_depth` and `slots` in a report) pass
any test whose fixture gives them the same value. Here no two fields of one object share a
value, so a swap anywhere, in a constructor or in the codec, fails a test.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from sllm.core import coordinator, cost, measures, membership, node, outstanding, placement, worker
from sllm.engines import sim as sim_engine
from sllm.records import record
from sllm.sim import report as run_report
from sllm.wire import MESSAGE_TYPES, Codec
from sllm.wire import codec as codec_module
from sllm.wire import messages as wire_messages

NOW = 1_712_345_678.25
SECRET = b"cluster-secret-for-tests-0123456"
# The modules whose records the core, the engines and the simulator build by the million.
RECORD_MODULES: tuple[types.ModuleType, ...] = (
    coordinator,
    cost,
    measures,
    membership,
    node,
    outstanding,
    placement,
    worker,
    sim_engine,
    wire_messages,
    run_report,
)
FORMATS = [
    "json",
    pytest.param(
        "msgpack",
        marks=pytest.mark.skipif(
            "msgpack" not in codec_module.AVAILABLE_FORMATS, reason="no msgpack"
        ),
    ),
]


class _Distinct:
    """Hands out values no other field of the object under construction holds yet."""

    def __init__(self) -> None:
        self.used: list[object] = []
        self.flag = False

    def take(self, candidates: Any) -> Any:
        for value in candidates:
            # By `==`, so 1 and 1.0 count as one value (and True as 1: wide counts start at 11).
            if not any(value == other for other in self.used):
                self.used.append(value)
                return value
        raise AssertionError("no distinct value left")

    def boolean(self) -> bool:
        # Only two booleans exist: the messages with two flags get one of each (checked).
        self.flag = not self.flag
        return self.flag

    def value(self, hint: Any, meta: Any) -> Any:
        origin = get_origin(hint)
        if hint is bool:
            return self.boolean()
        if hint is int:
            low, high = int(meta.get("min", 0)), int(meta.get("max", 10**6))
            # A small range (a tier, a page size) is taken from its bottom; a wide one from
            # 11 up, leaving the small numbers to the small ranges.
            return self.take(range(low, high + 1) if high < 100 else range(max(low, 11), high))
        if hint is float:
            low, high = float(meta.get("min", 0.0)), float(meta.get("max", 1e6))
            step = (high - low) / 64 if high - low < 64 else 1.0
            return self.take(low + step * (k + 0.5) for k in range(64))
        if hint is str:
            if "choices" in meta:
                return self.take(meta["choices"])
            return self.take(f"f{k}" for k in range(1, 1000))
        if origin is dict:
            top = int(meta.get("max", 3))
            return {self.take(f"m{k}" for k in range(1, 1000)): k % (top + 1) for k in range(2)}
        if origin is tuple:
            (item,) = [arg for arg in get_args(hint) if arg is not Ellipsis]
            return (_Distinct().build(item),)  # its fields differ among themselves
        raise AssertionError(f"no distinct value for {hint!r}")

    def build(self, cls: type[Any]) -> Any:
        hints = get_type_hints(cls)
        values = {
            each.name: self.value(hints[each.name], each.metadata)
            for each in dataclasses.fields(cls)
        }
        return cls(**values)


def distinct(cls: type[Any]) -> Any:
    return _Distinct().build(cls)


def assert_named(obj: object, expected: object) -> None:
    """Every field of `obj` equals the same-named field of `expected`, one by one."""
    for each in dataclasses.fields(expected):  # type: ignore[arg-type]
        got, want = getattr(obj, each.name), getattr(expected, each.name)
        assert type(got) is type(want) and got == want, each.name


def test_the_built_samples_hold_distinct_values() -> None:
    # The test below proves nothing if two fields of one message share a value.
    for cls in MESSAGE_TYPES.values():
        sample = distinct(cls)
        scalars = [
            getattr(sample, each.name)
            for each in dataclasses.fields(sample)
            if not isinstance(getattr(sample, each.name), (bool, tuple))
        ]
        flags = [getattr(sample, each.name) for each in dataclasses.fields(sample)]
        flags = [flag for flag in flags if isinstance(flag, bool)]
        assert len(flags) <= 2 and len(set(flags)) == len(flags), cls.__name__
        assert len({json.dumps(v, sort_keys=True) for v in scalars}) == len(scalars), cls


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("secret", [None, SECRET])
@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_field_of_every_message_survives_the_codec_under_its_name(
    name: str, secret: bytes | None, fmt: Any
) -> None:
    cls = MESSAGE_TYPES[name]
    sample = distinct(cls)
    codec = Codec(secret=secret, format=fmt)
    decoded = codec.decode(codec.encode(sample, NOW, 7), NOW)
    assert type(decoded) is cls
    assert_named(decoded, sample)
    for each in dataclasses.fields(sample):
        nested = getattr(sample, each.name)
        if isinstance(nested, tuple):
            for got, want in zip(getattr(decoded, each.name), nested, strict=True):
                assert_named(got, want)


def test_the_wire_body_names_each_value_by_its_field() -> None:
    # The document itself, not only the round trip: a swap in both directions would cancel.
    for cls in MESSAGE_TYPES.values():
        sample = distinct(cls)
        body = json.loads(Codec().encode(sample, NOW, 7))["b"]
        for each in dataclasses.fields(sample):
            value = getattr(sample, each.name)
            if not isinstance(value, tuple):
                assert body[each.name] == value, (cls.__name__, each.name)


def records_of(module: types.ModuleType) -> list[type[Any]]:
    return [
        cls
        for cls in vars(module).values()
        if isinstance(cls, type)
        and cls.__module__ == module.__name__
        and dataclasses.is_dataclass(cls)
        and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and "__slots__" in vars(cls)
    ]


ALL_RECORDS = sorted(
    {cls for module in RECORD_MODULES for cls in records_of(module)},
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


def test_the_core_records_are_found() -> None:
    names = {cls.__name__ for cls in ALL_RECORDS}
    assert {"StartLoad", "StartRequest", "Evict", "Finished", "Choice", "Retry", "Fail"} <= names
    assert {"Outcome", "Timer", "RequestOutcome", "WorkerReport", "InferenceResult"} <= names


@pytest.mark.parametrize("cls", ALL_RECORDS, ids=lambda cls: cls.__name__)
def test_every_record_takes_its_fields_by_name_only_and_keeps_each_where_named(
    cls: type[Any],
) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(cls)]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), cls
    if hasattr(cls, "__post_init__"):
        return  # a validated configuration: it refuses the sentinels below; built by name
    # A distinct object per field: any two fields that trade places are told apart.
    sentinels = {each.name: object() for each in dataclasses.fields(cls)}
    built = cls(**sentinels)
    for name, sentinel in sentinels.items():
        assert getattr(built, name) is sentinel, name
    if sentinels:
        with pytest.raises(TypeError):
            cls(*sentinels.values())


def test_a_record_with_an_enum_field_keeps_it() -> None:
    class Colour(enum.Enum):
        RED = 1

    @record
    class Painted:
        colour: Colour
        count: int

    assert Painted(count=1, colour=Colour.RED).colour is Colour.RED
