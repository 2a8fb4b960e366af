"""The OpenAI-compatible front door: authenticate, validate, place, proxy, stream back.

For each request it asks the scheduler (the coordinator's core, in the same process) for
a worker, then proxies the request to that worker's HTTP endpoint and streams the tokens
back as they come. Workers always stream; for ``stream: false`` the front door folds the
stream into one JSON body with ``usage``.

Failure handling (DESIGN.md, data plane):

- the worker fails before the first byte (connection refused or reset, a 5xx, no first
  event within the first-byte timeout, response headers included): the worker is
  forgotten by the view until its next report and the request is placed again, at most
  `MAX_ATTEMPTS` times in all;
- the worker answers 429 (its own queue filled before its report said so): the request is
  placed again without forgetting the worker; when every try meets a full queue the client
  gets 429 with ``Retry-After``. Any other 4xx is the request's fault and goes back to the
  client as the worker said it;
- the worker fails after the first byte: the stream ends with an explicit error event
  (``{"error": ...}``), never a silent truncation (OpenAI clients raise on it);
- the client disconnects, while the request waits for its first byte or while it streams:
  the upstream request is closed, which cancels it on the worker. The upstream response is
  closed however the client's response ends, even when it never started streaming.

Status codes: 400 bad body, 401 bad key (when API_KEYS is set; compared in constant
time), 404 unknown model, 429 with ``Retry-After`` when every queue is full, 503 when no
worker is available, 504 when the worker does not answer in time. Every response carries
``x-request-id`` (`sllm.api.request_id`), and the log lines of the request carry the same
id, from ``request_routed`` to ``request_finished``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from sllm.api import sse
from sllm.api.disconnect import ClientGone, unless_disconnected
from sllm.api.errors import ApiError
from sllm.api.request_id import request_id_of
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
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    api_keys: frozenset[str] = frozenset()
    max_attempts: int = MAX_ATTEMPTS
    first_byte_timeout_s: float = FIRST_BYTE_TIMEOUT_S
    # Where a worker serves its side of the API: "" on a worker, WORKER_PREFIX on a
    # decentralized node (whose /v1 is its own front door).
    upstream_prefix: str = ""


class _UpstreamFailed(Exception):
    """The chosen worker failed before the first byte: forget it and try another one."""


class _UpstreamBusy(Exception):
    """The chosen worker's queue is full (429): try another one, forgetting nothing."""


@dataclass(slots=True)
class _Upstream:
    """A worker's open stream: the response, its raw byte iterator and what was read ahead."""

    response: httpx.Response
    chunks: AsyncIterator[bytes]
    buffer: bytearray
    first: bytes

    async def events(self) -> AsyncIterator[bytes]:
        """The stream in runs of whole events, as they arrive; raises on a broken stream.

        A run is forwarded as one write: one token per chunk from the worker stays one
        chunk, and several that arrived together are not split again.
        """
        yield self.first
        while True:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    piece = await anext(self.chunks)
            except StopAsyncIteration:
                if self.buffer.strip():
                    raise ConnectionError("stream ended inside an event") from None
                return
            self.buffer.extend(piece)
            end = self.buffer.rfind(b"\n\n")
            if end >= 0:
                run = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 2]
                yield run

    async def close(self) -> None:
        await self.response.aclose()


class _RelayResponse(StreamingResponse):
    """A streaming response that closes its upstream however it ends.

    Starlette cancels a stream whose client is gone, and when the client left before the
    stream began, the body generator never starts, so its own ``finally`` never runs:
    this one does, and the worker sees the disconnect.
    """

    def __init__(
        self, content: AsyncIterator[bytes], upstream: _Upstream, headers: dict[str, str]
    ) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.upstream.close()


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
        request_id = request_id_of(request)
        began = time.monotonic()
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
            upstream = await unless_disconnected(
                request, self._open_upstream(request_id, schedule, path, payload)
            )
            headers = {"x-request-id": request_id}
            if body.stream:
                return _RelayResponse(self._relay(request_id, upstream, began), upstream, headers)
            folded = await unless_disconnected(request, self._fold(request_id, upstream))
        except ApiError as error:
            self._finished(request_id, began, error.status, error.message)
            return error.response(request_id)
        except ClientGone:
            self._finished(request_id, began, CLIENT_CLOSED, "client disconnected")
            return ApiError(400, "the client closed the request").response(request_id)
        if folded.error is not None:
            message = str(folded.error.get("message", "worker failed"))
            return ApiError(502, message, code="worker_failed").response(request_id)
        self._finished(request_id, began, 200, "")
        return JSONResponse(folded.response(kind, request_id, body.model), headers=headers)

    def _finished(self, request_id: str, began: float, status: int, reason: str) -> None:
        log_event(
            log,
            logging.INFO if status == 200 else logging.WARNING,
            "request_finished",
            request_id=request_id,
            status=status,
            seconds=round(time.monotonic() - began, 4),
            reason=reason,
        )

    async def _open_upstream(
        self, request_id: str, schedule: ScheduleRequest, path: str, payload: dict[str, Any]
    ) -> _Upstream:
        """Place and connect, retrying elsewhere until a worker sends its first event."""
        last_error = "no attempt made"
        busy = 0
        for attempt in range(1, self.config.max_attempts + 1):
            decision = self.place(schedule)
            if decision.action == "reject":
                raise _rejection(decision, schedule.model)
            prefix = self.config.upstream_prefix
            url = f"http://{decision.host}:{decision.http_port}{prefix}{path}"
            started = time.monotonic()
            try:
                upstream = await self._first_event(url, request_id, payload)
            except (_UpstreamFailed, _UpstreamBusy) as failure:
                last_error = str(failure)
                if isinstance(failure, _UpstreamBusy):
                    busy += 1
                else:
                    self.forget_worker(decision.worker_id)
                log_event(
                    log,
                    logging.WARNING,
                    "upstream_failed",
                    request_id=request_id,
                    worker=decision.worker_id,
                    attempt=attempt,
                    forgotten=not isinstance(failure, _UpstreamBusy),
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
        if busy == self.config.max_attempts:
            raise ApiError(
                429,
                "every worker tried has a full queue; retry shortly",
                code="overloaded",
                retry_after_s=RETRY_AFTER_S,
            )
        if "timed out" in last_error:
            raise ApiError(504, f"no worker answered in time ({last_error})", code="timeout")
        raise ApiError(503, f"no worker could serve the request ({last_error})", code="no_worker")

    async def _first_event(self, url: str, request_id: str, payload: dict[str, Any]) -> _Upstream:
        """Send to one worker and read until its first whole event, within the deadline.

        Raises `_UpstreamFailed` or `_UpstreamBusy` for another try, or `ApiError` for a
        4xx that is the request's own fault. The response is closed unless handed over.
        """
        outgoing = self.client.build_request(
            "POST", url, json=payload, headers={"x-request-id": request_id}
        )
        upstream: httpx.Response | None = None
        try:
            async with asyncio.timeout(self.config.first_byte_timeout_s):
                upstream = await self.client.send(outgoing, stream=True)
                if upstream.status_code != 200:
                    raise _refusal(upstream.status_code, await upstream.aread())
                buffer = bytearray()
                chunks = upstream.aiter_raw()
                while True:
                    piece = await anext(chunks, None)
                    if piece is None:
                        raise _UpstreamFailed("worker closed the stream before any event")
                    buffer.extend(piece)
                    end = buffer.rfind(b"\n\n")
                    if end >= 0:
                        first = bytes(buffer[: end + 2])
                        del buffer[: end + 2]
                        opened = _Upstream(upstream, chunks, buffer, first)
                        upstream = None  # handed over
                        return opened
        except TimeoutError:
            raise _UpstreamFailed("worker timed out before the first event") from None
        except httpx.HTTPError as error:
            raise _UpstreamFailed(f"{type(error).__name__}: {error}") from None
        finally:
            if upstream is not None:
                await upstream.aclose()

    async def _relay(
        self, request_id: str, upstream: _Upstream, began: float
    ) -> AsyncIterator[bytes]:
        """Forward events to the client; end a broken stream with an explicit error event."""
        finished = False
        try:
            async for run in upstream.events():
                yield run
                finished = run.endswith(sse.DONE)
            if not finished:
                raise ConnectionError("worker stream ended without [DONE]")
            self._finished(request_id, began, 200, "")
        except (httpx.HTTPError, ConnectionError, TimeoutError) as error:
            reason = str(error) or type(error).__name__
            log_event(log, logging.WARNING, "stream_broken", request_id=request_id, error=reason)
            self._finished(request_id, began, 502, reason)
            yield ApiError(
                502, f"the worker failed mid-stream: {reason}", code="worker_failed"
            ).sse()
        except asyncio.CancelledError:  # the client went away; `_RelayResponse` closes upstream
            self._finished(request_id, began, CLIENT_CLOSED, "client disconnected")
            raise
        finally:
            await upstream.close()

    async def _fold(self, request_id: str, upstream: _Upstream) -> sse.Folded:
        folded = sse.Folded()
        try:
            async for run in upstream.events():
                for event in sse.events(bytearray(run)):
                    if event.strip() == DONE_LINE:
                        folded.done = True
                        break
                    payload = sse.parse(event)
                    if payload is not None:
                        folded.feed(payload)
                if folded.done:
                    break
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


# Logged as the status of a request whose client went away first (nginx's convention).
CLIENT_CLOSED = 499


def _refusal(status: int, body: bytes) -> Exception:
    """What a worker's non-200 answer means for the request."""
    detail = body.decode(errors="replace")[:200]
    if status == 429:
        return _UpstreamBusy(f"worker answered 429: {detail}")
    if status >= 500 or status < 400:
        return _UpstreamFailed(f"worker answered {status}: {detail}")
    try:  # the request's own fault: tell the client what the worker said
        error = json.loads(body)["error"]
        return ApiError(status, str(error["message"]), error.get("code"), error.get("param"))
    except (ValueError, KeyError, TypeError):
        return ApiError(status, detail or f"the worker answered {status}")


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
