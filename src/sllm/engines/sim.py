"""The sim engine: the cost model turned into timers, for demos, experiments and tests.

It loads and generates nothing. Each action a `WorkerState` emits becomes a timer
(``load_done`` after the load time, ``request_done`` after the whole request), and `fire`
feeds a due timer back into the worker. A request's first token needs no timer of its
own: nothing reads it before the request ends, so `fire` stamps it, at its time (the
start plus the prefill), when the request ends. That is one event per request fewer in
the simulator, the largest source of events after the network. The live worker
runs these timers on the asyncio loop; the simulator puts them on its event heap. Both
use this one mapping, so a simulated request takes exactly as long as a live one.

The same class is the ``sim`` engine of the registry (`sllm.engines.base.Engine`), for
requests that reach a live worker over HTTP: a load sleeps its load time, a prompt is
`CHARS_PER_TOKEN` characters a token, and a completion streams placeholder words, the
first after the prefill, then one per decode step at the batch size the request started
with. It runs on the worker's event loop and never blocks. It honours what placeholder
words can show (`SimEngine.honoured_params`; the front door refuses the rest):

- ``max_tokens``: that many words, finishing with ``length``;
- ``temperature`` 0: always the same words, `SIM_WORDS` in order (greedy decoding);
- above 0, each word drawn from `SIM_WORDS` by a `random.Random` seeded with ``seed``
  (the same seed, the same words; none, new words each time);
- ``top_p``: the draw keeps that fraction of the words (at least one), as nucleus
  sampling keeps the most likely tokens;
- ``stop``: the text is cut where the first stop string begins, finishing with ``stop``.

A real engine (loading safetensors, generating tokens) is another entry of the registry,
not a change to the worker state machine.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from sllm.core.cost import CostModel, ModelInfo, ModelTiming
from sllm.core.tiers import Tier
from sllm.core.worker import Action, StartLoad, StartRequest, WorkerState
from sllm.engines.base import (
    Delta,
    Engine,
    EngineContext,
    Execution,
    GenerationParams,
    Prompt,
    estimate_prompt_tokens,
)
from sllm.records import record

# Placeholder text for a served request: one word per simulated token.
SIM_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


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
    """Maps actions to timers with the cost model; the registry's ``sim`` engine."""

    execution: ClassVar[Execution] = Execution.EVENT_LOOP
    honoured_params: ClassVar[frozenset[str]] = frozenset(
        {"max_tokens", "temperature", "top_p", "seed", "stop"}
    )
    needs_checkpoint: ClassVar[bool] = False
    serves_datagrams: ClassVar[bool] = True

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
            return [
                Timer(delay_s=e2e, kind=_REQUEST_DONE, key=action.request_id, first_token_s=ttft)
            ]
        if isinstance(action, StartLoad):
            load_s = self.timing(action.model).load_s[action.source]
            return [Timer(delay_s=load_s, kind=_LOAD_DONE, key=action.model)]
        return []  # evictions and cancellations take no simulated time

    # -- the Engine protocol, for a live worker's HTTP requests ---------------------------

    @classmethod
    def build(cls, context: EngineContext) -> SimEngine:
        return cls(context.catalog, context.cost)

    def keeps_host_copy(self) -> bool:
        return True  # simulated tiers are what the state machine says

    def host_copy_bytes(self, model: str) -> int | None:
        return None  # a simulated copy is the catalog's size, as the state machine counts

    def warm_up(self) -> None:
        """Nothing to prepare."""

    async def load(self, model: str, source: Tier) -> None:
        await asyncio.sleep(self.timing(model).load_s[source])

    async def evict(self, model: str, source: Tier, destination: Tier) -> None:
        """An eviction takes no simulated time."""

    async def encode_prompt(self, model: str, prompt: Prompt) -> Sequence[int]:
        """Placeholder ids, as many as the estimate (there is no tokenizer)."""
        return range(estimate_prompt_tokens(prompt))

    async def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        batch_size: int,
    ) -> AsyncGenerator[Delta, None]:
        ttft, e2e = self.timing(model).service_time(len(prompt_ids), params.max_tokens, batch_size)
        step = (e2e - ttft) / max(1, params.max_tokens - 1)
        words, finish = placeholder(params)
        first_due = time.monotonic() + ttft
        for index, word in enumerate(words):
            delay = first_due + index * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield Delta(word, completion_tokens=index + 1)
            if index == 0:
                # The rest are spaced from when the first was taken: the worker reads it
                # before it answers (`sllm.runtime.generation`), and the answer's start
                # must not eat the gap to the second.
                first_due = time.monotonic()
        yield Delta("", finish, len(words))


def placeholder(params: GenerationParams) -> tuple[list[str], str]:
    """The words of a completion (each with its trailing space) and how it finishes, as
    `params` ask (see the module docstring)."""
    if params.temperature <= 0.0:
        words = [SIM_WORDS[index % len(SIM_WORDS)] for index in range(params.max_tokens)]
    else:
        draw = random.Random(params.seed)  # None: seeded from the system, new each time
        kept = SIM_WORDS[: max(1, math.ceil(params.top_p * len(SIM_WORDS)))]
        words = [draw.choice(kept) for _ in range(params.max_tokens)]
    pieces = [word + " " for word in words]
    text = "".join(pieces)
    found = [text.find(stop) for stop in params.stop if stop]
    cut = min((index for index in found if index >= 0), default=-1)
    if cut < 0:
        return pieces, "length"
    kept_pieces: list[str] = []
    length = 0
    for piece in pieces:
        if length + len(piece) > cut:
            if cut > length:
                kept_pieces.append(piece[: cut - length])
            break
        kept_pieces.append(piece)
        length += len(piece)
    return kept_pieces, "stop"


def fire(worker: WorkerState, timer: Timer, now: float) -> list[Action]:
    """Deliver a due timer to the worker; return what the worker decides next."""
    if timer.kind is _LOAD_DONE:
        return worker.load_done(timer.key, now)
    # The request started `delay_s` before now; its first token came `first_token_s` after.
    worker.first_token(timer.key, now - (timer.delay_s - timer.first_token_s))
    return worker.request_done(timer.key, now)


if TYPE_CHECKING:  # mypy checks here that the class implements the protocol
    _IMPLEMENTS: type[Engine] = SimEngine
