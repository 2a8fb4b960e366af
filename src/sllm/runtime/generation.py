"""Requests that reach a worker over HTTP: admitted by the state machine, streamed by an engine.

A request is submitted to the worker's `WorkerState` like any other, so it waits in the
same bounded queue, for the same slots and the same model loads. When the state machine
starts it (`StartRequest`), tokens are produced by the model's engine:

- **sim**: the cost model's timing (first token after the prefill, then one token per
  decode step at the batch size it started with), with placeholder words as text; it
  always generates ``max_tokens`` tokens and ignores ``stop``, ``temperature`` and ``seed``;
- **transformers**: real generation in a worker thread, token by token, through a queue
  into the event loop.

The stream's end reports ``request_done`` to the state machine; a client that goes away
reports ``cancel``, which also stops a real generation between two tokens. Exactly one of
the two is reported per request, whether the stream ran to its end, broke, or never began.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from sllm.api.errors import ApiError
from sllm.catalog import CatalogModel
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import Action, Finished, StartRequest, WorkerState
from sllm.engines.base import Delta, GenerationParams
from sllm.wire import InferenceRequest

# Placeholder text for the sim engine: one word per simulated token.
SIM_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
# A prompt's tokens before an engine counts them (about four characters a token in English).
CHARS_PER_TOKEN = 4

REJECTIONS = {
    "queue_full": (429, "this worker's queue is full"),
    "unknown_model": (404, "this worker does not serve the model"),
    "model_too_large": (400, "the model does not fit on this worker"),
    "not_ready": (503, "this worker is shutting down"),
}


@dataclass(slots=True)
class Generation:
    """An admitted, running request: its prompt size, its stream of deltas, and `close`.

    `close` ends the request as cancelled unless the stream already finished it; it may be
    called any number of times.
    """

    prompt_tokens: int
    deltas: AsyncIterator[Delta]
    close: Callable[[], None]


class RealEngine(Protocol):
    """What the worker needs of a real engine (`sllm.engines.transformers_engine`)."""

    def load(self, name: str, source: Tier) -> None: ...

    def evict(self, name: str, source: Tier, destination: Tier) -> None: ...

    def encode_prompt(self, name: str, prompt: str | list[dict[str, str]]) -> list[int]: ...

    def generate(
        self,
        name: str,
        prompt_ids: list[int],
        params: GenerationParams,
        cancelled: Callable[[], bool],
    ) -> Iterator[Delta]: ...


class HttpRequests:
    """The worker's `GenerationBackend`: HTTP requests through the state machine."""

    def __init__(
        self,
        state: WorkerState,
        catalog: Mapping[str, CatalogModel],
        cost: CostModel,
        carry_out: Callable[[list[Action]], None],
        real_engine: Callable[[], RealEngine],
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.cost = cost
        self.carry_out = carry_out
        self.real_engine = real_engine
        self._admitted: dict[str, asyncio.Future[StartRequest]] = {}

    def model_names(self) -> Collection[str]:
        return list(self.catalog)

    def owns(self, request_id: str) -> bool:
        return request_id in self._admitted

    def on_start(self, action: StartRequest) -> None:
        waiter = self._admitted.get(action.request_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(action)

    def on_finished(self, action: Finished) -> None:
        """A request that ended before it started (rejected, or its load failed)."""
        waiter = self._admitted.pop(action.request_id, None)
        if waiter is not None and not waiter.done():
            status, message = REJECTIONS.get(action.reason, (503, action.reason))
            waiter.set_exception(ApiError(status, message, code=action.reason or "failed"))

    async def start(
        self,
        request_id: str,
        model: str,
        prompt: str | list[dict[str, str]],
        params: GenerationParams,
    ) -> Generation:
        if model not in self.catalog:
            raise ApiError(404, f"model {model!r} does not exist", code="model_not_found")
        if request_id in self._admitted:
            raise ApiError(400, f"request id {request_id!r} is already in use", code="duplicate_id")
        text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
        estimate = max(1, len(text) // CHARS_PER_TOKEN)
        waiter: asyncio.Future[StartRequest] = asyncio.get_running_loop().create_future()
        self._admitted[request_id] = waiter
        submitted = InferenceRequest(request_id, model, estimate, params.max_tokens)
        self.carry_out(self.state.submit(submitted, time.monotonic()))
        try:
            started = await waiter
        except asyncio.CancelledError:
            self._admitted.pop(request_id, None)
            self.carry_out(self.state.cancel(request_id, time.monotonic()))
            raise
        ended = False

        def end(finished: bool) -> None:
            """Report the request's end to the state machine, once."""
            nonlocal ended
            if ended:
                return
            ended = True
            self._admitted.pop(request_id, None)
            now = time.monotonic()
            if finished:
                self.carry_out(self.state.request_done(request_id, now))
            else:
                self.carry_out(self.state.cancel(request_id, now))

        spec = self.catalog[model]
        try:
            if spec.engine == "transformers":
                engine = self.real_engine()
                prompt_ids = await asyncio.to_thread(engine.encode_prompt, model, prompt)
                deltas = self._real_deltas(engine, model, prompt_ids, params)
                prompt_tokens = len(prompt_ids)
            else:
                deltas = self._sim_deltas(spec, started, estimate, params)
                prompt_tokens = estimate
        except BaseException:
            end(False)
            raise
        return Generation(prompt_tokens, self._tracked(request_id, deltas, end), lambda: end(False))

    async def _tracked(
        self, request_id: str, deltas: AsyncIterator[Delta], end: Callable[[bool], None]
    ) -> AsyncIterator[Delta]:
        """Report the first token and the end (or the cancellation) to the state machine."""
        first = True
        try:
            async for delta in deltas:
                if first:
                    self.state.first_token(request_id, time.monotonic())
                    first = False
                if delta.finish_reason is not None:
                    end(True)  # now: the stream need not ask for anything after the last delta
                yield delta
        finally:
            end(False)  # a no-op once it finished

    async def _sim_deltas(
        self,
        spec: CatalogModel,
        started: StartRequest,
        prompt_tokens: int,
        params: GenerationParams,
    ) -> AsyncIterator[Delta]:
        ttft, e2e = self.cost.service_time(
            spec, prompt_tokens, params.max_tokens, started.batch_size
        )
        step = (e2e - ttft) / max(1, params.max_tokens - 1)
        began = time.monotonic()
        for index in range(params.max_tokens):
            delay = began + ttft + index * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield Delta(SIM_WORDS[index % len(SIM_WORDS)] + " ", completion_tokens=index + 1)
        yield Delta("", "length", params.max_tokens)

    async def _real_deltas(
        self, engine: RealEngine, model: str, prompt_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for delta in engine.generate(model, prompt_ids, params, stop.is_set):
                    loop.call_soon_threadsafe(queue.put_nowait, delta)
            except BaseException as error:  # handed to the stream, which ends with an error
                loop.call_soon_threadsafe(queue.put_nowait, error)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        producer = loop.run_in_executor(None, produce)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            await asyncio.shield(producer)
