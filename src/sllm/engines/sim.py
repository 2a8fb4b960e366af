"""The sim engine: the cost model turned into timers, for demos, experiments and tests.

It loads and generates nothing. Each action a `WorkerState` emits becomes a timer
(``load_done`` after the load time, ``request_done`` after the whole request), and `fire`
feeds a due timer back into the worker. A request's first token needs no timer of its
own: nothing reads it before the request ends, so `fire` stamps it, at its time (the
start plus the prefill), when the request ends. That is one event per request fewer in
the simulator, the largest source of events after the network. The live worker
runs these timers on the asyncio loop; the simulator puts them on its event heap. Both
use this one mapping, so a simulated request takes exactly as long as a live one.

A real engine (loading safetensors, generating tokens) replaces this module, not the
worker state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from sllm.core.cost import CostModel, ModelInfo, ModelTiming
from sllm.core.worker import Action, StartLoad, StartRequest, WorkerState
from sllm.records import record


class TimerKind(Enum):
    LOAD_DONE = "load_done"
    REQUEST_DONE = "request_done"


# Module constants for the per-request path (see `sllm.core.tiers` on enum reads).
_LOAD_DONE = TimerKind.LOAD_DONE
_REQUEST_DONE = TimerKind.REQUEST_DONE


@record
class Timer:
    delay_s: float
    kind: TimerKind
    key: str  # the model for LOAD_DONE, the request id for REQUEST_DONE
    first_token_s: float = 0.0  # REQUEST_DONE: the first token's delay from the start


class SimEngine:
    """Maps actions to timers with the cost model."""

    def __init__(self, catalog: Mapping[str, ModelInfo], cost: CostModel) -> None:
        self.catalog = catalog
        self.cost = cost
        self._timings: dict[str, ModelTiming] = {}  # per model; the cost model is frozen

    def timing(self, model: str) -> ModelTiming:
        timing = self._timings.get(model)
        if timing is None:
            timing = self._timings[model] = self.cost.timing(self.catalog[model])
        return timing

    def timers(self, action: Action) -> list[Timer]:
        if isinstance(action, StartRequest):  # the common case: one per request
            ttft, e2e = self.timing(action.model).service_time(
                action.prompt_tokens, action.output_tokens, action.batch_size
            )
            return [Timer(e2e, _REQUEST_DONE, action.request_id, ttft)]
        if isinstance(action, StartLoad):
            load_s = self.timing(action.model).load_s[action.source]
            return [Timer(load_s, _LOAD_DONE, action.model)]
        return []  # evictions and cancellations take no simulated time


def fire(worker: WorkerState, timer: Timer, now: float) -> list[Action]:
    """Deliver a due timer to the worker; return what the worker decides next."""
    if timer.kind is _LOAD_DONE:
        return worker.load_done(timer.key, now)
    # The request started `delay_s` before now; its first token came `first_token_s` after.
    worker.first_token(timer.key, now - (timer.delay_s - timer.first_token_s))
    return worker.request_done(timer.key, now)
