"""`record`: a frozen, slotted, keyword-only dataclass that is cheap to build.

Why it exists: a frozen dataclass's generated ``__init__`` stores each field through
``object.__setattr__``, which made a 17-field `WorkerReport` cost 4.6 µs to build against
0.9 µs unfrozen. The simulator builds tens of millions of small immutable values in a
simulated hour (wire messages, the worker's actions, the engine's timers, the client's
outcomes), and the live services build them at every report and decision.

Why keyword-only: a record with many fields of one type (a `WorkerReport` has nine
counts) built by position lets two arguments trade places with no error, and a test
fixture that happens to use one value for both never notices. Every argument is named,
so a call that passes one by position is a TypeError, and mypy says so before it runs.

Theory of operation: the class is made by `dataclasses.dataclass(frozen=True,
slots=True)`, so it compares, hashes, prints and refuses assignment as usual. Only its
``__init__`` is replaced, by one that calls each slot descriptor's own ``__set__``: about
half the cost, and still no assignment from outside. The signature is the dataclass's
own with ``kw_only=True``: every field by name only, with its default (so a field without
a default may follow one with). A field with a ``default_factory`` is refused (none of the
records needs one).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from keyword import iskeyword
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """`cls` as a frozen, slotted dataclass with a fast ``__init__`` (see the module)."""
    frozen = dataclass(frozen=True, slots=True, kw_only=True)(cls)
    namespace: dict[str, Any] = {}
    parameters: list[str] = []
    body: list[str] = []
    for each in fields(frozen):  # type: ignore[arg-type]
        name = each.name
        # The source below is made when a class is defined, from its field names alone:
        # default values are passed as objects, never as text, and nothing received at run
        # time reaches this function. Checked (not asserted, so -O keeps the check).
        if not name.isidentifier() or iskeyword(name):
            raise TypeError(f"{cls.__name__}: field name {name!r} is not an identifier")
        if each.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{name}: a record takes no default_factory")
        namespace[f"_set_{name}"] = getattr(frozen, name).__set__
        if each.default is MISSING:
            parameters.append(name)
        else:
            namespace[f"_default_{name}"] = each.default
            parameters.append(f"{name}=_default_{name}")
        body.append(f"    _set_{name}(self, {name})\n")
    signature = f"self, *, {', '.join(parameters)}" if parameters else "self"
    source = f"def __init__({signature}):\n{''.join(body) or '    pass'}\n"
    made: dict[str, Any] = {}
    exec(source, namespace, made)  # as `dataclasses` itself makes __init__
    init = made["__init__"]
    init.__qualname__ = f"{frozen.__qualname__}.__init__"
    frozen.__init__ = init  # type: ignore[method-assign]
    return frozen
