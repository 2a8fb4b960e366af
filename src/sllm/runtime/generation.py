"""Requests that reach a worker over HTTP: admitted by the state machine, streamed by an engine.

A request is submitted to the worker's `WorkerState` like any other, so it waits in the
same bounded queue, for the same slots and the same model loads. When the state machine
starts it (`StartRequest`), its model's engine (`sllm.engines.base.Engine`, from the
registry) counts the prompt's tokens and streams the completion; this module does not know
which engine that is.

The stream's end reports ``request_done`` to the state machine; a client that goes away
reports ``cancel``, and closing the engine's stream stops its generation between two
tokens. Exactly one of the two is reported per request, whether the stream ran to its
end, broke, or never began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
)

from sllm.api.backend import Generation
from sllm.api.errors import ApiError
from sllm.catalog import CatalogModel
from sllm.core.worker import HANDED_BACK, Action, Finished, StartRequest, WorkerState
from sllm.engines.base import (
    Delta,
    Engine,
    GenerationParams,
    Prompt,
    RequestRefused,
    estimate_prompt_tokens,
)
from sllm.wire import InferenceRequest

REJECTIONS = {
    "queue_full": (429, "this worker's queue is full"),
    "unknown_model": (404, "this worker does not serve the model"),
    "model_too_large": (400, "the model does not fit on this worker"),
    "not_enough_gpus": (503, "the model needs more GPUs than this worker has"),
    "not_ready": (503, "this worker is shutting down"),
    "load_failed": (503, "the model failed to load on this worker"),
    # Its model's load found no room here for as long as the load takes: 429, so the
    # front door places it on another worker, as with a full queue.
    HANDED_BACK: (429, "this worker cannot load the model soon; try another"),
}


class HttpRequests:
    """The worker's `sllm.api.backend.GenerationBackend`: HTTP requests through the state
    machine."""

    def __init__(
        self,
        state: WorkerState,
        catalog: Mapping[str, CatalogModel],
        engines: Mapping[str, Engine],
        carry_out: Callable[[list[Action]], None],
        refresh_models: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.engines = engines  # by engine name: one for each engine the catalog names
        self.carry_out = carry_out
        # Asked for a model it does not serve: whether it does after reading the registry.
        self.refresh_models = refresh_models
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
            # A reason is a code, then after ": " what went wrong ("load_failed: oom").
            code, _, detail = action.reason.partition(": ")
            status, message = REJECTIONS.get(code, (503, code))
            message = f"{message}: {detail}" if detail else message
            waiter.set_exception(ApiError(status, message, code=code or "failed"))

    async def start(
        self,
        request_id: str,
        model: str,
        prompt: Prompt,
        params: GenerationParams,
    ) -> Generation:
        if model not in self.catalog and not (
            self.refresh_models is not None and await self.refresh_models(model)
        ):
            raise ApiError(404, f"model {model!r} does not exist", code="model_not_found")
        if request_id in self._admitted:
            raise ApiError(400, f"request id {request_id!r} is already in use", code="duplicate_id")
        estimate = estimate_prompt_tokens(prompt)
        waiter: asyncio.Future[StartRequest] = asyncio.get_running_loop().create_future()
        self._admitted[request_id] = waiter
        submitted = InferenceRequest(
            request_id=request_id,
            model=model,
            prompt_tokens=estimate,
            output_tokens=params.max_tokens,
        )
        # movable=False: a streamed answer cannot continue on another worker.
        self.carry_out(self.state.submit(submitted, time.monotonic(), movable=False))
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

        engine = self.engines[self.catalog[model].engine]
        try:
            prompt_ids = await engine.encode_prompt(model, prompt)
            deltas = engine.generate(model, prompt_ids, params, batch_size=started.batch_size)
            # The first delta before answering: a request the engine refuses (a prompt over
            # the model's context, a schema it cannot compile) is a 400 here, not a stream
            # that breaks after its 200 (which the front door would retry elsewhere).
            first = await anext(deltas, None)
        except RequestRefused as refused:
            end(False)
            raise ApiError(400, str(refused), code=refused.code, param=refused.param) from None
        except BaseException:
            end(False)
            raise
        tracked = self._tracked(request_id, first, deltas, end)
        return Generation(len(prompt_ids), tracked, lambda: end(False))

    async def _tracked(
        self,
        request_id: str,
        first: Delta | None,
        deltas: AsyncGenerator[Delta, None],
        end: Callable[[bool], None],
    ) -> AsyncIterator[Delta]:
        """Report the first token and the end (or the cancellation) to the state machine,
        and close the engine's stream however this one ends (which stops its generation).
        `first` is the delta `start` read already (None: the stream was empty)."""
        if first is not None:
            self.state.first_token(request_id, time.monotonic())
        try:
            if first is not None:
                if first.finish_reason is not None:
                    end(True)
                yield first
            async for delta in deltas:
                if delta.finish_reason is not None:
                    end(True)  # now: the stream need not ask for anything after the last delta
                yield delta
        finally:
            end(False)  # a no-op once it finished
            await deltas.aclose()
