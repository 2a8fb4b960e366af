"""The worker's side of the OpenAI API: run one request here and stream it as SSE.

The front door proxies to these routes. With a cluster secret they serve only requests
that carry the front door's credential (`RequireCredential`, `sllm.api.credential`), and
answer anything else with 401; without one they can also be called directly (the gateway
benchmark does, as its baseline). The request's key on this worker is its
``x-request-id`` (a fresh id per attempt from the front door); the chunks carry the id
the client knows it by, when the front door names it (`CLIENT_HEADER`).

A request is admitted by the worker's state machine (bounded queue, slots, model tiers)
before anything is sent back, so a worker that cannot take it answers with an error
status and the front door places it elsewhere. Once it runs, every token is sent as it is
generated; the last chunk carries ``finish_reason``, then (when the request's
``stream_options.include_usage`` asks for it, as the front door always does) a chunk with
``usage``, then ``data: [DONE]``. Chat messages reach the engine as role and text
(`ChatCompletionRequest.prompt_messages`: text parts joined, tool calls as text).
A client that goes away cancels the work: while the request waits for admission
(`unless_disconnected`), and while it streams, including the case where the client left
before the stream began (`Generation.close` then runs from the response itself, since the
stream's own cleanup never started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sllm.api import credential, sse
from sllm.api.backend import Generation, GenerationBackend
from sllm.api.body import read_body
from sllm.api.credential import RefusalReason
from sllm.api.disconnect import ClientGone, unless_disconnected
from sllm.api.errors import ApiError
from sllm.api.request_id import CLIENT_HEADER, accepted, header_of, request_id_in
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest
from sllm.engines.base import PROMPT_PARAM, GenerationParams
from sllm.logs import log_event
from sllm.wire.codec import RejectCounter

log = logging.getLogger("sllm.http")

_CREDENTIAL_HEADER = credential.HEADER.encode()
_CLIENT_HEADER = CLIENT_HEADER.encode()


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


def params_of(body: ChatCompletionRequest | CompletionRequest) -> GenerationParams:
    return GenerationParams(
        max_tokens=body.output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stop_sequences,
        seed=body.seed,
        logprobs=body.logprob_alternatives,
        response_format=body.json_output,
    )


def worker_router(backend: GenerationBackend) -> APIRouter:
    router = APIRouter()

    async def serve(
        request: Request,
        kind: sse.Kind,
        model: str,
        prompt: str | list[dict[str, str]],
        params: GenerationParams,
        include_usage: bool,
    ) -> StreamingResponse:
        request_id = request_id_in(request.scope)
        shown_id = accepted(header_of(request.scope, _CLIENT_HEADER)) or request_id
        try:
            generation = await unless_disconnected(
                request.receive, backend.start(request_id, model, prompt, params)
            )
        except ClientGone:  # `start` was cancelled, which withdrew the request
            raise ApiError(400, "the client closed the request") from None
        except ApiError as refused:
            if kind == "chat" and refused.param == PROMPT_PARAM:
                refused.param = "messages"  # a chat's prompt is its messages
            raise
        return _GenerationResponse(
            _stream(kind, shown_id, model, generation, include_usage=include_usage),
            generation,
            headers={"x-request-id": request_id},
        )

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, request: Request) -> StreamingResponse:
        messages = body.prompt_messages()
        return await serve(
            request, "chat", body.model, messages, params_of(body), body.include_usage
        )

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> StreamingResponse:
        return await serve(
            request, "completion", body.model, body.prompt_text, params_of(body), body.include_usage
        )

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
    kind: sse.Kind, request_id: str, model: str, generation: Generation, *, include_usage: bool
) -> AsyncIterator[bytes]:
    completion_tokens = 0
    first = True
    offset = 0  # where the next delta's text starts, for a completion's log probabilities
    async for delta in generation.deltas:
        completion_tokens = max(completion_tokens, delta.completion_tokens)
        text_offset = offset
        offset += len(delta.text)
        if delta.finish_reason is None:
            if delta.text or delta.logprobs:
                yield sse.chunk(
                    kind,
                    request_id,
                    model,
                    delta.text,
                    first=first,
                    logprobs=delta.logprobs,
                    text_offset=text_offset,
                )
                first = False
            continue
        finish = "stop" if delta.finish_reason == "cancelled" else delta.finish_reason
        yield sse.chunk(
            kind,
            request_id,
            model,
            delta.text,
            finish,
            first=first,
            logprobs=delta.logprobs,
            text_offset=text_offset,
        )
        if include_usage:
            usage = sse.usage(generation.prompt_tokens, completion_tokens)
            yield sse.usage_chunk(kind, request_id, model, usage)
        yield sse.DONE
        return


class RequireCredential:
    """ASGI middleware: a request to a path under `prefix` needs the front door's credential.

    Anything else is answered 401 in OpenAI's error shape, before a route sees it; other
    paths (``/healthz``, ``/readyz``, ``/metrics``) pass untouched, for probes and
    scrapers. It sits inside `RequestIdMiddleware`, whose id is the one the credential
    signs. The body is read here (to check its digest) and handed on to the route.
    """

    def __init__(self, app: ASGIApp, key: bytes, prefix: str) -> None:
        self.app = app
        self.key = key
        self.prefix = prefix
        # Refusals by reason, and at most one log line per reason every LOG_INTERVAL_S
        # with the count suppressed since: anyone who reaches the port can send thousands.
        self.refusals = RejectCounter(keys=get_args(RefusalReason))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        request_id = request_id_in(scope)
        given = header_of(scope, _CREDENTIAL_HEADER)
        try:
            if not given:  # refused before its body is read
                raise credential.CredentialRefused("missing")
            body = await read_body(receive)
            credential.check(
                key=self.key,
                credential=given,
                method=scope["method"],
                path=scope["path"],
                request_id=request_id,
                body=body,
                now=time.time(),
            )
        except credential.CredentialRefused as refused:
            self._log_refusal(refused.reason, scope)
            message = f"this route serves only requests from the front door ({refused.reason})"
            failed = ApiError(401, message, code="invalid_credential")
            await failed.response(request_id)(scope, receive, send)
            return
        except ApiError as error:  # the body is over the limit
            await error.response(request_id)(scope, receive, send)
            return
        except ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)

    def _log_refusal(self, reason: str, scope: Scope) -> None:
        suppressed = self.refusals.record(reason, time.monotonic())
        if suppressed is None:
            return
        client = scope.get("client") or ("", 0)
        log_event(
            log,
            logging.WARNING,
            "credential_refused",
            reason=reason,
            path=scope["path"],
            client=f"{client[0]}:{client[1]}",
            suppressed=suppressed,
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands over `body` once, then whatever the client sends next (its
    disconnect)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
