"""The registry of engines: a catalog's ``engine`` names one of these, and nothing else.

Each entry maps an engine's name to ``"module:Class"``. The module is imported when the
engine is first asked for, never when this registry is: listing engines or checking a
catalog imports no torch, so the sim engine and the guide's scripts run on a bare
``python3``. An engine module must itself import its heavy libraries inside its methods
(its class declarations are read before anything is loaded).

Adding an engine: write its module (a class that implements `sllm.engines.base.Engine`)
and add one line to `ENGINES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, cast

from sllm.engines.base import Engine, EngineContext

if TYPE_CHECKING:
    from sllm.catalog import CatalogModel

ENGINES: dict[str, str] = {
    "sim": "sllm.engines.sim:SimEngine",
    "transformers": "sllm.engines.transformers_engine:Transformers",
    "vllm": "sllm.engines.vllm_engine:Vllm",
}


class UnknownEngine(ValueError):
    """A model names an engine that is not registered."""

    def __init__(self, model: str, engine: str) -> None:
        super().__init__(
            f"model {model!r} names engine {engine!r}, which is not registered "
            f"(engines: {', '.join(engine_names())})"
        )
        self.model = model
        self.engine = engine


def engine_names() -> tuple[str, ...]:
    """The registered engines, read when needed (a test may register one)."""
    return tuple(ENGINES)


def engine_class(name: str, *, model: str = "") -> type[Engine]:
    """The class of engine `name`, its module imported now; raises `UnknownEngine`
    (naming `model`, when given) for a name that is not registered."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise UnknownEngine(model, name) from None
    module_name, _, class_name = target.partition(":")
    return cast(type[Engine], getattr(importlib.import_module(module_name), class_name))


def engines_for(models: Iterable[CatalogModel]) -> dict[str, type[Engine]]:
    """The classes of the engines `models` name, by engine name; raises `UnknownEngine`
    for the first model that names an unregistered one."""
    classes: dict[str, type[Engine]] = {}
    for model in models:
        if model.engine not in classes:
            classes[model.engine] = engine_class(model.engine, model=model.name)
    return classes


class Registered:
    """The registry, as a catalog file is checked against it (`sllm.catalog.EngineRules`):
    the catalog sits below the engines and is handed this rather than importing it."""

    def needs_checkpoint(self, engine: str, *, model: str) -> bool:
        return engine_class(engine, model=model).needs_checkpoint

    def option_problems(
        self, engine: str, *, model: str, options: Mapping[str, object]
    ) -> list[str]:
        """An engine that checks its settings (vllm's dtype, max_model_len, ...) names the
        model in each problem; one without takes its options as given."""
        check = getattr(engine_class(engine, model=model), "option_problems", None)
        return [] if check is None else list(check(model, options))


REGISTERED = Registered()


def build_engines(classes: Mapping[str, type[Engine]], context: EngineContext) -> dict[str, Engine]:
    """One engine of each class, for one worker."""
    return {name: cls.build(context) for name, cls in classes.items()}
