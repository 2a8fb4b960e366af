"""The worker's side of the OpenAI API: run one request here and stream it as SSE.

The front door proxies to these routes; they can also be called directly (the gateway
benchmark does, as its baseline). A request is admitted by the worker's state machine
(bounded queue, slots, model tiers) before anything is sent back, so a worker that cannot
take it answers with an error status and the front door places it elsewhere. Once it
runs, every token is sent as it is generated; the last chunk carries ``finish_reason``
and ``usage``, then ``data: [DONE]``. A client that goes away cancels the work: while the
request waits for admission (`unless_disconnected`), and while it streams, including the
case where the client left before the stream began (`Generation.close` then runs from
the response itself, since the stream's own cleanup never started).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from sllm.api import sse
from sllm.api.disconnect import ClientGone, unless_disconnected
from sllm.api.errors import ApiError
from sllm.api.request_id import request_id_in
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest
from sllm.engines.base import GenerationParams
from sllm.runtime.generation import Generation


class _GenerationResponse(StreamingResponse):
    """A streaming response that closes its generation however the response ends."""

    def __init__(
        self, content: AsyncIterator[bytes], generation: Generation, headers: dict[str, str]
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.close()


class GenerationBackend(Protocol):
    def model_names(self) -> Collection[str]: ...

    async def start(
        self,
        request_id: str,
        model: str,
        prompt: str | list[dict[str, str]],
        params: GenerationParams,
    ) -> Generation:
        """Admit and start the request; raises `ApiError` when this worker cannot take it."""
        ...


def params_of(body: ChatCompletionRequest | CompletionRequest) -> GenerationParams:
    return GenerationParams(
        max_tokens=body.output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        seed=body.seed,
    )


def worker_router(backend: GenerationBackend) -> APIRouter:
    router = APIRouter()

    async def serve(
        request: Request,
        kind: sse.Kind,
        model: str,
        prompt: str | list[dict[str, str]],
        params: GenerationParams,
    ) -> StreamingResponse:
        request_id = request_id_in(request.scope)
        try:
            generation = await unless_disconnected(
                request.receive, backend.start(request_id, model, prompt, params)
            )
        except ClientGone:  # `start` was cancelled, which withdrew the request
            raise ApiError(400, "the client closed the request") from None
        return _GenerationResponse(
            _stream(kind, request_id, model, generation),
            generation,
            headers={"x-request-id": request_id},
        )

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> StreamingResponse:
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        return await serve(request, "chat", body.model, messages, params_of(body))

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> StreamingResponse:
        return await serve(request, "completion", body.model, body.prompt_text, params_of(body))

    @router.get("/v1/models")
    async def models() -> dict[str, object]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "owned_by": "sllm"}
                for name in backend.model_names()
            ],
        }

    return router


async def _stream(
    kind: sse.Kind, request_id: str, model: str, generation: Generation
) -> AsyncIterator[bytes]:
    completion_tokens = 0
    async for delta in generation.deltas:
        completion_tokens = max(completion_tokens, delta.completion_tokens)
        if delta.finish_reason is None:
            if delta.text:
                yield sse.chunk(kind, request_id, model, delta.text)
            continue
        finish = "stop" if delta.finish_reason == "cancelled" else delta.finish_reason
        usage = sse.usage(generation.prompt_tokens, completion_tokens)
        yield sse.chunk(kind, request_id, model, delta.text, finish, usage)
        yield sse.DONE
        return
