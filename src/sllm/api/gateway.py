"""The OpenAI-compatible front door: authenticate, validate, place, proxy, stream back.

For each request it asks the scheduler (the coordinator's core, in the same process) for
a worker, then proxies the request to that worker's HTTP endpoint and streams the tokens
back as they come. Workers always stream; for ``stream: false`` the front door folds the
stream into one JSON body with ``usage``.

Failure handling (DESIGN.md, data plane):

- the worker fails before the first byte (connection refused or reset, a 5xx, a 429 from
  its own full queue, no first event within the first-byte timeout): the worker is
  forgotten by the view until its next report and the request is placed again, at most
  `MAX_ATTEMPTS` times in all;
- the worker fails after the first byte: the stream ends with an explicit error event
  (``{"error": ...}``), never a silent truncation (OpenAI clients raise on it);
- the client disconnects: the upstream request is closed, which cancels it on the worker.

Status codes: 400 bad body, 401 bad key (when API_KEYS is set; compared in constant
time), 404 unknown model, 429 with ``Retry-After`` when every queue is full, 503 when no
worker is available, 504 when the worker does not answer in time. Every response carries
``x-request-id``, and the log lines of the request carry the same id.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sllm.api import sse
from sllm.api.errors import ApiError
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList
from sllm.logs import log_event
from sllm.wire import ScheduleRequest, ScheduleResponse

log = logging.getLogger("sllm.gateway")

MAX_ATTEMPTS = 3
# A worker that accepted a request answers its first event once the model is loaded and
# the prompt prefilled; a cold start from the remote store can take minutes.
FIRST_BYTE_TIMEOUT_S = 300.0
# Between two events of a running stream.
READ_TIMEOUT_S = 120.0
RETRY_AFTER_S = 1
# A prompt's tokens are estimated from its length until the worker counts them.
CHARS_PER_TOKEN = 4

Place = Callable[[ScheduleRequest], ScheduleResponse]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    api_keys: frozenset[str] = frozenset()
    max_attempts: int = MAX_ATTEMPTS
    first_byte_timeout_s: float = FIRST_BYTE_TIMEOUT_S


class _UpstreamFailed(Exception):
    """The chosen worker failed before the first byte: try another one."""


@dataclass(slots=True)
class _Upstream:
    """A worker's open stream: the response, its raw byte iterator and what was read ahead."""

    response: httpx.Response
    chunks: AsyncIterator[bytes]
    buffer: bytearray
    first: list[bytes]

    async def events(self) -> AsyncIterator[bytes]:
        """Every event of the stream, the ones already read first; raises on a broken stream."""
        for event in self.first:
            yield event
        while True:
            try:
                piece = await asyncio.wait_for(anext(self.chunks), READ_TIMEOUT_S)
            except StopAsyncIteration:
                if self.buffer.strip():
                    raise ConnectionError("stream ended inside an event") from None
                return
            self.buffer.extend(piece)
            for event in sse.events(self.buffer):
                yield event

    async def close(self) -> None:
        await self.response.aclose()


class Gateway:
    """The `/v1` routes, bound to a scheduler, a model list and an HTTP client."""

    def __init__(
        self,
        place: Place,
        forget_worker: Callable[[str], None],
        model_names: Callable[[], Collection[str]],
        client: httpx.AsyncClient,
        config: GatewayConfig = GatewayConfig(),
    ) -> None:
        self.place = place
        self.forget_worker = forget_worker
        self.model_names = model_names
        self.client = client
        self.config = config
        self.router = APIRouter()
        self.router.add_api_route("/v1/models", self.list_models, methods=["GET"])
        self.router.add_api_route(
            "/v1/chat/completions", self.chat_completions, methods=["POST"], response_model=None
        )
        self.router.add_api_route(
            "/v1/completions", self.completions, methods=["POST"], response_model=None
        )

    # -- routes ----------------------------------------------------------------------

    async def list_models(self, request: Request) -> ModelList:
        self._authenticate(request)
        return ModelList(data=[ModelCard(id=name) for name in sorted(self.model_names())])

    async def chat_completions(
        self, body: ChatCompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        prompt_chars = sum(len(m.content) for m in body.messages)
        return await self._serve(request, body, "chat", "/v1/chat/completions", prompt_chars)

    async def completions(
        self, body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        return await self._serve(
            request, body, "completion", "/v1/completions", len(body.prompt_text)
        )

    # -- the request path --------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key, in constant time, without stopping at a match.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, key.encode())
        if not matched:
            raise ApiError(401, "missing or invalid API key", code="invalid_api_key")

    async def _serve(
        self,
        request: Request,
        body: ChatCompletionRequest | CompletionRequest,
        kind: sse.Kind,
        path: str,
        prompt_chars: int,
    ) -> JSONResponse | StreamingResponse:
        request_id = request.headers.get("x-request-id") or f"req-{uuid.uuid4().hex[:16]}"
        try:
            self._authenticate(request)
            if body.model not in self.model_names():
                raise ApiError(
                    404,
                    f"model {body.model!r} does not exist",
                    code="model_not_found",
                    param="model",
                )
            payload = body.model_dump(exclude_none=True)
            payload["stream"] = True
            schedule = ScheduleRequest(
                request_id,
                body.model,
                0,
                max(1, prompt_chars // CHARS_PER_TOKEN),
                body.output_tokens,
            )
            upstream = await self._open_upstream(request_id, schedule, path, payload)
        except ApiError as error:
            log_event(
                log,
                logging.INFO,
                "request_failed",
                request_id=request_id,
                status=error.status,
                reason=error.message,
            )
            return error.response(request_id)
        headers = {"x-request-id": request_id}
        if body.stream:
            return StreamingResponse(
                self._relay(request_id, upstream),
                media_type="text/event-stream",
                headers=headers,
            )
        folded = await self._fold(request_id, upstream)
        if folded.error is not None:
            message = str(folded.error.get("message", "worker failed"))
            return ApiError(502, message, code="worker_failed").response(request_id)
        return JSONResponse(folded.response(kind, request_id, body.model), headers=headers)

    async def _open_upstream(
        self, request_id: str, schedule: ScheduleRequest, path: str, payload: dict[str, Any]
    ) -> _Upstream:
        """Place and connect, retrying elsewhere until a worker sends its first event."""
        last_error = "no attempt made"
        for attempt in range(1, self.config.max_attempts + 1):
            decision = self.place(schedule)
            if decision.action == "reject":
                raise _rejection(decision, schedule.model)
            url = f"http://{decision.host}:{decision.http_port}{path}"
            started = time.monotonic()
            try:
                upstream = await self._first_event(url, request_id, payload)
            except _UpstreamFailed as failure:
                last_error = str(failure)
                self.forget_worker(decision.worker_id)
                log_event(
                    log,
                    logging.WARNING,
                    "upstream_failed",
                    request_id=request_id,
                    worker=decision.worker_id,
                    attempt=attempt,
                    error=last_error,
                )
                continue
            log_event(
                log,
                logging.INFO,
                "request_routed",
                request_id=request_id,
                model=schedule.model,
                worker=decision.worker_id,
                action=decision.action,
                attempt=attempt,
                first_byte_s=round(time.monotonic() - started, 4),
            )
            return upstream
        if "timed out" in last_error:
            raise ApiError(504, f"no worker answered in time ({last_error})", code="timeout")
        raise ApiError(503, f"no worker could serve the request ({last_error})", code="no_worker")

    async def _first_event(self, url: str, request_id: str, payload: dict[str, Any]) -> _Upstream:
        headers = {"x-request-id": request_id}
        try:
            outgoing = self.client.build_request("POST", url, json=payload, headers=headers)
            upstream = await self.client.send(outgoing, stream=True)
        except httpx.HTTPError as error:
            raise _UpstreamFailed(f"{type(error).__name__}: {error}") from None
        try:
            if upstream.status_code != 200:
                detail = (await upstream.aread()).decode(errors="replace")[:200]
                raise _UpstreamFailed(f"worker answered {upstream.status_code}: {detail}")
            buffer = bytearray()
            iterator = upstream.aiter_raw()
            deadline = self.config.first_byte_timeout_s
            while True:
                try:
                    piece = await asyncio.wait_for(anext(iterator), deadline)
                except StopAsyncIteration:
                    raise _UpstreamFailed("worker closed the stream before any event") from None
                except TimeoutError:
                    raise _UpstreamFailed("worker timed out before the first event") from None
                buffer.extend(piece)
                first = sse.events(buffer)
                if first:
                    return _Upstream(upstream, iterator, buffer, first)
        except _UpstreamFailed:
            await upstream.aclose()
            raise
        except httpx.HTTPError as error:
            await upstream.aclose()
            raise _UpstreamFailed(f"{type(error).__name__}: {error}") from None

    async def _relay(self, request_id: str, upstream: _Upstream) -> AsyncIterator[bytes]:
        """Forward events to the client; end a broken stream with an explicit error event."""
        finished = False
        try:
            async for event in upstream.events():
                yield event
                if event.strip() == DONE_LINE:
                    finished = True
            if not finished:
                raise ConnectionError("worker stream ended without [DONE]")
        except (httpx.HTTPError, ConnectionError, TimeoutError) as error:
            log_event(
                log,
                logging.WARNING,
                "stream_broken",
                request_id=request_id,
                error=str(error) or type(error).__name__,
            )
            yield ApiError(
                502,
                f"the worker failed mid-stream: {error or type(error).__name__}",
                code="worker_failed",
            ).sse()
        finally:
            await upstream.close()  # on client disconnect too: the worker cancels the work

    async def _fold(self, request_id: str, upstream: _Upstream) -> sse.Folded:
        folded = sse.Folded()
        try:
            async for event in upstream.events():
                if event.strip() == DONE_LINE:
                    folded.done = True
                    break
                payload = sse.parse(event)
                if payload is not None:
                    folded.feed(payload)
            if not folded.done and folded.error is None:
                folded.error = {"message": "worker stream ended without [DONE]"}
        except (httpx.HTTPError, ConnectionError, TimeoutError) as error:
            log_event(
                log,
                logging.WARNING,
                "stream_broken",
                request_id=request_id,
                error=str(error) or type(error).__name__,
            )
            folded.error = {
                "message": f"the worker failed mid-request: {error or type(error).__name__}"
            }
        finally:
            await upstream.close()
        return folded


DONE_LINE = sse.DONE.strip()


def _rejection(decision: ScheduleResponse, model: str) -> ApiError:
    if decision.reason == "unknown_model":
        return ApiError(
            404, f"model {model!r} does not exist", code="model_not_found", param="model"
        )
    if decision.reason == "queues_full":
        return ApiError(
            429,
            "every worker's queue is full; retry shortly",
            code="overloaded",
            retry_after_s=RETRY_AFTER_S,
        )
    if decision.reason == "model_too_large":
        return ApiError(
            400,
            f"model {model!r} does not fit on any worker",
            code="model_too_large",
            param="model",
        )
    return ApiError(503, f"no worker is available ({decision.reason})", code="no_worker")
