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
- the scheduler declares the worker lost (a coordinator's ``worker_lost``: no report for
  WORKER_TIMEOUT; a node's ``member_dead``) while requests are in flight on it: a worker
  that froze or lost its network keeps its sockets open, so without this a request would
  wait `FIRST_BYTE_TIMEOUT_S` for its first byte, or a stream `READ_TIMEOUT_S` of silence.
  The gateway keeps its attempts in flight by worker id (`InFlight`); the runtime calls
  `Gateway.worker_lost`, and at once every request still waiting for that worker's first
  byte is placed again (its upstream connection closed), and every stream relaying from
  it ends with an error event saying the worker was lost (``stream: false``: a 502 with
  the same message, code ``worker_lost``);
- the client disconnects, while the request waits for its first byte or while it streams:
  the upstream request is closed, which cancels it on the worker. The upstream response is
  closed however the client's response ends, even when it never started streaming.

What happens to requests after placement is counted for ``/metrics`` (`Gateway.retries`
and `Gateway.failed`, by reason; see `RETRY_REASONS` and `FAILURE_REASONS`), and each
request's status, timings and tokens go to `Gateway.observer` (`sllm.api.observer`).

Parameters: every OpenAI parameter is honoured or refused (`sllm.api.params`). After
the body is validated, the front door checks it against the engine of the model (from
the catalog, `Gateway.engine_of`, and the engine's declared `honoured_params`) and
refuses, before placing it, a parameter that engine does not honour, with a 400 that
names it. The body goes to the worker as validated, with ``stream: true`` and
``stream_options.include_usage`` always: the folded answer needs its ``usage``, and the
token metrics count every request's. A streamed answer's usage chunk is passed on only to
a client that asked for it.

Status codes: 400 bad body or a parameter the model's engine does not honour, 401 bad key
(when API_KEYS is set; compared in constant time), 404 unknown model (also on
``/v1/models/{id}``), 405 not a POST, 408 body late (sent by the listener,
`sllm.runtime.http`), 413 body over `MAX_BODY_BYTES`, 429 with ``Retry-After`` when every
ready worker's queue is full, 503 when no worker is available (none known, or none ready:
every one stopping or starting; with ``Retry-After``, since an autoscaler may be starting
one: see `sllm.core.coordinator.retry_after_s`), and 503 ``model_not_ready`` with
``Retry-After`` for a model the registry knows that is not servable yet (`sllm.registry`),
502 when it failed before the answer was complete, 504 when the worker does not answer in
time. Every response carries ``x-request-id`` (`sllm.api.request_id`), and the log lines of
the request carry the same id, from ``request_routed`` to ``request_finished`` (exactly one
per request). Each attempt goes to its worker under a fresh id of its own (``upstream_id``
on ``request_routed`` and ``upstream_failed``), so that clients sending one id many times do
not collide on a worker. With a cluster secret, every attempt is signed for the worker
(`sllm.api.credential`).

The completion routes are the hot path, so they are served from the ASGI channel by
`CompletionLane` rather than through FastAPI's routing (see `Gateway`); one watcher of
the client's channel covers the whole request, from placing it to its last event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from sllm.api import sse
from sllm.api.body import MAX_BODY_BYTES, read_body
from sllm.api.disconnect import ClientGone, unless_disconnected
from sllm.api.errors import ApiError, invalid_request
from sllm.api.observer import UNOBSERVED, EventGap, FrontDoorObserver, ignore_gap
from sllm.api.params import refusal
from sllm.api.request_id import header_of, new_request_id, request_id_in
from sllm.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from sllm.api.worker_client import UpstreamResponse, WorkerClient
from sllm.catalog import DEFAULT_ENGINE
from sllm.core.coordinator import (
    OVER_DEADLINE,
    QUEUES_FULL_RETRY_AFTER_S,
    retry_after_s,
)
from sllm.engines.registry import engine_class
from sllm.logs import log_event
from sllm.wire import ScheduleRequest, ScheduleResponse

log = logging.getLogger("sllm.gateway")

MAX_ATTEMPTS = 3
# A worker that accepted a request answers its first event once the model is loaded and
# the prompt prefilled; a cold start from the remote store can take minutes.
FIRST_BYTE_TIMEOUT_S = 300.0
# Between two events of a running stream.
READ_TIMEOUT_S = 120.0
# Retry-After of a 503 for a deployed model whose source is still being described: a
# directory of a few GB hashes in seconds, a hub listing is one request.
MODEL_NOT_READY_RETRY_AFTER_S = 5
# A prompt's tokens are estimated from its length until the worker counts them.
CHARS_PER_TOKEN = 4

Place = Callable[[ScheduleRequest], Awaitable[ScheduleResponse]]
# The engine of a model the catalog has, by name (`sllm.catalog.CatalogModel.engine`).
EngineOf = Callable[[str], str]
# Why a model the registry knows is not servable yet ("downloading", "being deleted"), or
# None for a model it does not know (`sllm.registry.ModelRegistry.not_ready`).
NotReady = Callable[[str], str | None]
# How a `NotReady` reason of a model whose deploy failed begins.
FAILED_PREFIX = "failed"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    api_keys: frozenset[str] = frozenset()
    max_attempts: int = MAX_ATTEMPTS
    first_byte_timeout_s: float = FIRST_BYTE_TIMEOUT_S
    # Where a worker serves its side of the API: "" on a worker, WORKER_PREFIX on a
    # decentralized node (whose /v1 is its own front door).
    upstream_prefix: str = ""


# Why a request was placed again before its first byte: the worker failed (refused,
# reset, a 5xx, a first-byte timeout), answered 429, or was declared lost meanwhile.
RETRY_REASONS = ("worker_failed", "worker_busy", "worker_lost")
# Why a placed request failed: its worker was declared lost mid-stream, its stream broke,
# it timed out (no first byte from any try, or READ_TIMEOUT_S of silence mid-stream), no
# worker was left to place it on, or every try met a full queue.
FAILURE_REASONS = ("worker_lost", "stream_broken", "timeout", "no_worker", "overloaded")


@dataclass(eq=False, slots=True)
class Attempt:
    """One try of a request on one worker, which the scheduler may declare lost meanwhile.

    `deadline` is the timeout of the wait under way on that worker, if any: losing the
    worker moves it to now, so the wait ends at once as if it had timed out, and `lost`
    tells the two apart.
    """

    worker_id: str
    lost: bool = False
    deadline: asyncio.Timeout | None = None

    def lose(self) -> None:
        self.lost = True
        deadline = self.deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    def lost_error(self) -> WorkerLost:
        return WorkerLost(f"worker {self.worker_id} was lost (declared dead by the scheduler)")


class WorkerLost(ConnectionError):
    """The scheduler declared the worker of an attempt lost while it was in flight."""


class InFlight:
    """The front door's attempts in flight, by the worker they wait on or stream from.

    Starting and ending an attempt is a dict and a set operation: no scan per event, so
    the hot path stays cheap; only losing a worker walks its own attempts.
    """

    def __init__(self) -> None:
        self._by_worker: dict[str, set[Attempt]] = {}

    def start(self, worker_id: str) -> Attempt:
        attempt = Attempt(worker_id)
        attempts = self._by_worker.get(worker_id)
        if attempts is None:
            self._by_worker[worker_id] = {attempt}
        else:
            attempts.add(attempt)
        return attempt

    def end(self, attempt: Attempt) -> None:
        attempts = self._by_worker.get(attempt.worker_id)
        if attempts is None:
            return  # its worker was lost: the attempt left with it
        attempts.discard(attempt)
        if not attempts:
            del self._by_worker[attempt.worker_id]

    def lose(self, worker_id: str) -> int:
        """End the waits of every attempt on `worker_id`; how many there were."""
        attempts = self._by_worker.pop(worker_id, ())
        for attempt in attempts:
            attempt.lose()
        return len(attempts)

    def on(self, worker_id: str) -> int:
        """Attempts in flight on `worker_id`."""
        return len(self._by_worker.get(worker_id, ()))

    def __len__(self) -> int:
        return sum(len(attempts) for attempts in self._by_worker.values())


TIMED_OUT = "timed out"  # a worker's why: no first event within the deadline


class _UpstreamFailed(Exception):
    """The chosen worker failed before the first byte: forget it and try another one.

    `why` is the scheduler's reason for forgetting it: ``unreachable`` (no connection),
    ``timed out``, ``broke its stream`` (closed it before the first event), or
    ``answered <status>`` (it is up, but failed this request, as when a model's load
    fails there).
    """

    def __init__(self, reason: str, why: str = "unreachable", lost: bool = False) -> None:
        super().__init__(reason)
        self.why = why
        self.lost = lost  # declared lost by the scheduler: forgotten already

    @property
    def timed_out(self) -> bool:
        return self.why == TIMED_OUT


class _UpstreamBusy(Exception):
    """The chosen worker's queue is full (429): try another one, forgetting nothing."""


@dataclass(slots=True)
class _Upstream:
    """A worker's open stream: the response, what was read ahead, and the client to tell."""

    client: WorkerClient
    response: UpstreamResponse
    buffer: bytearray
    first: bytes
    attempt: Attempt
    in_flight: InFlight
    # When the first event came, then each later run: the inter-token gaps are measured
    # from it and given to `event_gap` (`FrontDoorObserver.first_event`).
    last_event_at: float
    event_gap: EventGap
    # When the request was sent to this worker, and whether its placement was a cold start.
    sent_at: float = 0.0
    cold_start: bool = False
    # The worker's ``usage`` chunk, once read (the front door always asks for it).
    usage: dict[str, int] | None = None
    closed: bool = False

    async def events(self) -> AsyncIterator[bytes]:
        """The stream in runs of whole events, as they arrive; raises on a broken stream.

        A run is forwarded as one write: one token per chunk from the worker stays one
        chunk, and several that arrived together are not split again.
        """
        self._note_usage(self.first)
        yield self.first
        attempt = self.attempt
        while True:
            if attempt.lost:
                raise attempt.lost_error()
            try:
                async with asyncio.timeout(READ_TIMEOUT_S) as attempt.deadline:
                    piece = await self.response.readany()
            except TimeoutError:
                if attempt.lost:
                    raise attempt.lost_error() from None
                raise
            finally:
                attempt.deadline = None
            if not piece:
                if self.buffer.strip():
                    raise ConnectionError("stream ended inside an event")
                return
            self.buffer.extend(piece)
            end = self.buffer.rfind(b"\n\n")
            if end >= 0:
                run = bytes(self.buffer[: end + 2])
                del self.buffer[: end + 2]
                if sse.holds_token(run):  # not the finish, the usage or [DONE] alone
                    now = time.monotonic()
                    self.event_gap(now - self.last_event_at)
                    self.last_event_at = now
                self._note_usage(run)
                yield run

    def _note_usage(self, run: bytes) -> None:
        if sse.holds_usage(run):
            self.usage = sse.usage_in(run)

    def close(self) -> None:
        """Close the response once, however many ways its end is noticed."""
        if not self.closed:
            self.closed = True
            self.in_flight.end(self.attempt)
            self.client.finish(self.response)


class Gateway:
    """The `/v1` API, bound to a scheduler, a model list and an HTTP client.

    The two completion routes are served by `CompletionLane`, a pure ASGI middleware,
    straight from the ASGI channel: FastAPI's routing, dependency solving and response
    classes cost about a fifth of the front door's CPU per request (`docs/benchmarks.md`,
    "Gateway"), and these routes need none of them. `router` serves the rest of `/v1`;
    `documented` lists every route, the lane's included, for the OpenAPI document.
    """

    def __init__(
        self,
        place: Place,
        forget_worker: Callable[[str, str], None],
        model_names: Callable[[], Collection[str]],
        client: WorkerClient,
        config: GatewayConfig = GatewayConfig(),
        engine_of: EngineOf = lambda model: DEFAULT_ENGINE,
        not_ready: NotReady = lambda model: None,
    ) -> None:
        self.place = place
        self.forget_worker = forget_worker
        self.model_names = model_names
        self.client = client
        self.config = config
        self.engine_of = engine_of
        self.not_ready = not_ready
        # Requests being answered, by model: a model's delete waits for its count to reach 0.
        self.running_by_model: Counter[str] = Counter()
        self._honoured: dict[str, frozenset[str]] = {}  # by engine name, read once
        self.in_flight = InFlight()
        # What happened to placed requests, by reason, read by /metrics at scrape time.
        self.retries: dict[str, int] = dict.fromkeys(RETRY_REASONS, 0)
        self.failed: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        # Each request's status, timings and tokens, for metrics (set by the service).
        self.observer: FrontDoorObserver = UNOBSERVED
        self.router = APIRouter()
        self.router.add_api_route("/v1/models", self.list_models, methods=["GET"])
        self.router.add_api_route(
            "/v1/models/{model_id:path}",
            self.model_card,
            methods=["GET"],
            responses=_documented_errors({404: "No such model."}),
        )

    def documented(self) -> APIRouter:
        """`router`'s routes and the lane's, each lane route with the body it validates, and
        each route with exactly the error statuses it can answer."""
        router = APIRouter()
        router.include_router(self.router, responses=_documented_errors(MODELS_ERRORS))
        for path, endpoint in (
            ("/v1/chat/completions", chat_completions),
            ("/v1/completions", completions),
        ):
            router.add_api_route(
                path,
                endpoint,
                methods=["POST"],
                response_model=None,
                responses={200: _COMPLETION_ANSWER, **_documented_errors(COMPLETION_ERRORS)},
            )
        return router

    def worker_lost(self, worker_id: str) -> int:
        """The scheduler declared `worker_id` lost: end every wait on it now (requests not
        started are placed again, streams end with an error). Returns how many there were.

        Called by the runtime, on the event loop, where it handles the scheduler's notices.
        """
        return self.in_flight.lose(worker_id)

    def _count(self, counts: dict[str, int], reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1

    async def list_models(self, request: Request) -> ModelList:
        self._authenticate(request.headers.get("authorization", ""))
        return ModelList(data=[ModelCard(id=name) for name in sorted(self.model_names())])

    async def model_card(self, model_id: str, request: Request) -> ModelCard:
        """One model of the catalog, as `/v1/models` lists it."""
        self._authenticate(request.headers.get("authorization", ""))
        if model_id not in self.model_names():
            raise _unknown_model(model_id)
        return ModelCard(id=model_id)

    def honoured(self, engine: str) -> frozenset[str]:
        """The parameters `engine` honours, as its class declares them."""
        known = self._honoured.get(engine)
        if known is None:
            known = self._honoured[engine] = engine_class(engine).honoured_params
        return known

    # -- the request path --------------------------------------------------------------

    def _authenticate(self, authorization: str) -> None:
        keys = self.config.api_keys
        if not keys:
            return
        scheme, _, token = authorization.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key, in constant time, without stopping at a match.
        matched = False
        for key in keys:
            matched |= hmac.compare_digest(given, key.encode())
        if not matched:
            raise ApiError(401, "missing or invalid API key", code="invalid_api_key")

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request to a completion route, and log how it ended, once."""
        request_id = request_id_in(scope)
        began = time.monotonic()
        status, reason = CLIENT_CLOSED, "client disconnected"  # unless it ends otherwise
        model: str | None = None  # a catalog model's name, once the body names one
        code: str | None = None
        try:
            path = scope["path"]
            kind, schema = COMPLETION_ROUTES[path]
            if scope["method"] != "POST":
                raise ApiError(405, f"{path} takes POST", code="method_not_allowed")
            self._authenticate(header_of(scope, b"authorization"))
            body = _validated(schema, await read_body(receive))
            if body.model not in self.model_names():
                pending = self.not_ready(body.model)
                if pending is not None and pending.startswith(FAILED_PREFIX):
                    raise ApiError(  # retrying will not help: no Retry-After
                        503,
                        f"model {body.model!r} could not be deployed ({pending})",
                        code="model_failed",
                        param="model",
                    )
                if pending is not None:
                    raise ApiError(
                        503,
                        f"model {body.model!r} is not ready yet ({pending}); retry after "
                        "Retry-After seconds",
                        code="model_not_ready",
                        param="model",
                        retry_after_s=MODEL_NOT_READY_RETRY_AFTER_S,
                    )
                raise _unknown_model(body.model)
            model = body.model
            self.running_by_model[model] += 1
            engine = self.engine_of(body.model)
            refused = refusal(body, engine=engine, honoured=self.honoured(engine))
            if refused is not None:
                raise refused
            status, reason = await unless_disconnected(
                receive, self._answer(request_id, kind, path, body, send, began=began)
            )
        except ApiError as error:
            status, reason, code = error.status, error.message, error.code
            await error.response(request_id)(scope, receive, send)
        except ClientGone:
            pass
        finally:  # cancelled too (the server stopping): logged as the client's going
            if model is not None:
                self.running_by_model[model] -= 1
                if not self.running_by_model[model]:
                    del self.running_by_model[model]
            seconds = time.monotonic() - began
            self.observer.finished(model=model, status=status, code=code, seconds=seconds)
            self._finished(request_id, seconds, status, reason)

    async def _answer(
        self,
        request_id: str,
        kind: sse.Kind,
        path: str,
        body: ChatCompletionRequest | CompletionRequest,
        send: Send,
        *,
        began: float,
    ) -> tuple[int, str]:
        """Place, proxy and answer; return the status and reason to log.

        Until the response starts, a failure is an `ApiError`; after, an error event ends
        the stream.
        """
        payload = body.model_dump(exclude_defaults=True)
        payload["stream"] = True  # workers always stream
        payload["stream_options"] = {"include_usage": True}  # for the fold and the metrics
        schedule = ScheduleRequest(
            request_id=request_id,
            model=body.model,
            priority=0,
            prompt_tokens=max(1, body.prompt_chars // CHARS_PER_TOKEN),
            output_tokens=body.output_tokens,
        )
        upstream_body = json.dumps(payload, separators=(",", ":")).encode()
        upstream = await self._open_upstream(request_id, schedule, path, upstream_body)
        upstream.event_gap = self.observer.first_event(
            model=body.model,
            first_event_s=upstream.last_event_at - began,
            queued_s=upstream.sent_at - began,
            cold_start_s=upstream.last_event_at - upstream.sent_at if upstream.cold_start else None,
        )
        try:
            if body.stream:
                status, reason = await self._relay(
                    request_id, upstream, send, pass_usage=body.include_usage
                )
                if status == 200:
                    self._observe_usage(body.model, upstream.usage)
                return status, reason
            folded, code = await self._fold(request_id, upstream)
        finally:  # however it ends; a stream still running is cancelled on the worker
            upstream.close()
        if folded.error is not None:
            message = str(folded.error.get("message", "worker failed"))
            raise ApiError(502, message, code=code)
        self._observe_usage(body.model, folded.usage)
        answer = json.dumps(folded.response(kind, request_id, body.model)).encode()
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": answer})
        return 200, ""

    def _finished(self, request_id: str, seconds: float, status: int, reason: str) -> None:
        log_event(
            log,
            logging.INFO if status == 200 else logging.WARNING,
            "request_finished",
            request_id=request_id,
            status=status,
            seconds=round(seconds, 4),
            reason=reason,
        )

    def _observe_usage(self, model: str, usage: dict[str, Any] | None) -> None:
        if usage is None:
            return  # a worker that reports no usage: its tokens stay uncounted
        prompt, generation = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(generation, int):
            self.observer.usage(model=model, prompt_tokens=prompt, generation_tokens=generation)

    async def _open_upstream(
        self, request_id: str, schedule: ScheduleRequest, path: str, body: bytes
    ) -> _Upstream:
        """Place and connect, retrying elsewhere until a worker sends its first event."""
        last_error = "no attempt made"
        timed_out = False
        busy = 0
        for attempt in range(1, self.config.max_attempts + 1):
            decision = await self.place(schedule)
            if decision.action == "reject":
                rejection = _rejection(decision, schedule.model)
                if attempt > 1 and rejection.code in self.failed:  # placed before, now not
                    self._count(self.failed, str(rejection.code))
                if attempt > 1 and rejection.code == "no_worker":
                    # The workers tried failed and were forgotten: say how, not that none
                    # has joined.
                    rejection = ApiError(
                        503,
                        f"no worker could serve the request ({last_error})",
                        code="no_worker",
                        retry_after_s=rejection.retry_after_s,
                    )
                raise rejection
            worker = (decision.host, decision.http_port, self.config.upstream_prefix + path)
            upstream_id = new_request_id()  # the worker's key for this attempt
            started = time.monotonic()
            try:
                upstream = await self._first_event(
                    worker, upstream_id, request_id, body, decision.worker_id
                )
            except (_UpstreamFailed, _UpstreamBusy) as failure:
                last_error = str(failure)
                timed_out = isinstance(failure, _UpstreamFailed) and failure.timed_out
                if isinstance(failure, _UpstreamBusy):
                    busy += 1
                    self._count(self.retries, "worker_busy")
                elif failure.lost:  # the scheduler has dropped it already
                    self._count(self.retries, "worker_lost")
                else:
                    self._count(self.retries, "worker_failed")
                    self.forget_worker(decision.worker_id, failure.why)
                log_event(
                    log,
                    logging.WARNING,
                    "upstream_failed",
                    request_id=request_id,
                    upstream_id=upstream_id,
                    worker=decision.worker_id,
                    attempt=attempt,
                    forgotten=not isinstance(failure, _UpstreamBusy),
                    error=last_error,
                )
                continue
            upstream.sent_at = started
            upstream.cold_start = decision.action == "cold_start"
            log_event(
                log,
                logging.INFO,
                "request_routed",
                request_id=request_id,
                upstream_id=upstream_id,
                model=schedule.model,
                worker=decision.worker_id,
                action=decision.action,
                attempt=attempt,
                first_byte_s=round(time.monotonic() - started, 4),
            )
            return upstream
        if busy == self.config.max_attempts:
            self._count(self.failed, "overloaded")
            raise ApiError(
                429,
                "every worker tried has a full queue; retry shortly",
                code="overloaded",
                retry_after_s=QUEUES_FULL_RETRY_AFTER_S,
            )
        if timed_out:
            self._count(self.failed, "timeout")
            raise ApiError(504, f"no worker answered in time ({last_error})", code="timeout")
        self._count(self.failed, "no_worker")
        raise ApiError(503, f"no worker could serve the request ({last_error})", code="no_worker")

    async def _first_event(
        self,
        worker: tuple[str, int, str],
        upstream_id: str,
        request_id: str,
        body: bytes,
        worker_id: str,
    ) -> _Upstream:
        """Send to one worker (host, port, path) under `upstream_id`, and read until its
        first whole event, within the deadline, or until `worker_id` is declared lost.

        Raises `_UpstreamFailed` or `_UpstreamBusy` for another try, or `ApiError` for a
        4xx that is the request's own fault. The response is closed unless handed over,
        and the attempt stays in flight only while its stream does.
        """
        response: UpstreamResponse | None = None
        attempt = self.in_flight.start(worker_id)
        handed = False
        try:
            async with asyncio.timeout(self.config.first_byte_timeout_s) as attempt.deadline:
                response = await self.client.post(
                    *worker, body, upstream_id, client_request_id=request_id
                )
                if response.status != 200:
                    raise _refusal(response.status, await response.read())
                buffer = bytearray()
                while (end := buffer.rfind(b"\n\n")) < 0:
                    piece = await response.readany()
                    if not piece:
                        raise _UpstreamFailed(
                            "worker closed the stream before any event", why="broke its stream"
                        )
                    buffer.extend(piece)
            attempt.deadline = None
            if attempt.lost:  # lost as the first event came: place it again all the same
                raise TimeoutError
            first = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            opened = _Upstream(
                self.client,
                response,
                buffer,
                first,
                attempt,
                self.in_flight,
                last_event_at=time.monotonic(),
                event_gap=ignore_gap,  # until the observer is told of the first event
            )
            handed = True  # the response and the attempt: `_Upstream.close` ends both
            return opened
        except TimeoutError as error:  # connecting, or the first event, or lost
            if attempt.lost:
                raise _UpstreamFailed(str(attempt.lost_error()), lost=True) from None
            reason = str(error) or "worker timed out before the first event"
            raise _UpstreamFailed(reason, why=TIMED_OUT) from None
        except OSError as error:  # refused, reset, closed, unreachable
            raise _UpstreamFailed(f"{type(error).__name__}: {error}") from None
        finally:
            attempt.deadline = None
            if not handed:
                self.in_flight.end(attempt)
                if response is not None:
                    self.client.finish(response)

    async def _relay(
        self, request_id: str, upstream: _Upstream, send: Send, *, pass_usage: bool
    ) -> tuple[int, str]:
        """Forward events to the client; end a broken stream with an explicit error event.

        A run of events is forwarded as one write. The run with ``[DONE]`` is held until the
        worker's response has ended (it follows at once), so that its connection goes back
        to the pool before the client's response ends with that run, in the same write.
        Without `pass_usage`, the worker's usage chunk (always asked for) is left out.
        """
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        done = b""
        try:
            async for run in upstream.events():
                if done:
                    continue  # nothing follows [DONE]
                if not pass_usage and sse.holds_usage(run):
                    run = sse.without_usage(run)
                    if not run:
                        continue
                if run.endswith(sse.DONE):
                    done = run
                    continue
                await send({"type": "http.response.body", "body": run, "more_body": True})
            if not done:
                raise ConnectionError("worker stream ended without [DONE]")
        except (ConnectionError, TimeoutError) as error:
            code, reason = self._broken(request_id, error)
            failed = ApiError(502, f"the worker failed mid-stream: {reason}", code=code)
            await send({"type": "http.response.body", "body": failed.sse(), "more_body": False})
            return 502, reason
        upstream.close()
        await send({"type": "http.response.body", "body": done, "more_body": False})
        return 200, ""

    def _broken(self, request_id: str, error: Exception) -> tuple[str, str]:
        """Count and log a stream that broke after its first event; its error code and
        reason for the client."""
        reason = str(error) or type(error).__name__
        code = "worker_failed"
        if isinstance(error, WorkerLost):
            code = cause = "worker_lost"
        elif isinstance(error, TimeoutError):
            cause = "timeout"
        else:
            cause = "stream_broken"
        self._count(self.failed, cause)
        log_event(
            log, logging.WARNING, "stream_broken", request_id=request_id, error=reason, cause=cause
        )
        return code, reason

    async def _fold(self, request_id: str, upstream: _Upstream) -> tuple[sse.Folded, str]:
        """The worker's stream folded into one response, and the error code for a 502 if it
        failed; read to its end, so that its connection goes back to the pool when it is
        closed."""
        folded = sse.Folded()
        code = "worker_failed"
        try:
            async for run in upstream.events():
                for event in sse.events(bytearray(run)):
                    if folded.done:
                        break  # nothing follows [DONE]
                    if event.strip() == DONE_LINE:
                        folded.done = True
                        continue
                    payload = sse.parse(event)
                    if payload is not None:
                        folded.feed(payload)
            if not folded.done and folded.error is None:
                self._count(self.failed, "stream_broken")
                folded.error = {"message": "worker stream ended without [DONE]"}
        except (ConnectionError, TimeoutError) as error:
            if folded.done:  # what the client needs has all come
                return folded, code
            code, reason = self._broken(request_id, error)
            folded.error = {"message": f"the worker failed mid-request: {reason}"}
        return folded, code


DONE_LINE = sse.DONE.strip()


# Logged as the status of a request whose client went away first (nginx's convention).
CLIENT_CLOSED = 499


def _refusal(status: int, body: bytes) -> Exception:
    """What a worker's non-200 answer means for the request."""
    try:
        error = json.loads(body)["error"]
        message, code = str(error["message"]), error.get("code")
    except (ValueError, KeyError, TypeError):  # not an OpenAI-style error: its first bytes
        error, message, code = None, body.decode(errors="replace")[:200], None
    said = f"{code}: {message}" if code else message  # the code first: messages run long
    if status == 429:
        return _UpstreamBusy(f"worker answered 429: {said[:200]}")
    if status >= 500 or status < 400 or status == 401:
        # A 401 from a worker refused the front door's credential (another CLUSTER_SECRET,
        # or a clock out of skew): the cluster's fault, not the client's key.
        return _UpstreamFailed(f"worker answered {status}: {said[:200]}", why=f"answered {status}")
    if error is None:
        return ApiError(status, message or f"the worker answered {status}")
    # the request's own fault: tell the client what the worker said
    return ApiError(status, message, code, error.get("param"))


def _unknown_model(model: str) -> ApiError:
    return ApiError(404, f"model {model!r} does not exist", code="model_not_found", param="model")


def _rejection(decision: ScheduleResponse, model: str) -> ApiError:
    """The client's error for a scheduler's refusal; ``Retry-After`` where asking again
    may help, as long as `retry_after_s` says (the simulated client waits the same)."""
    reason = decision.reason
    wait = retry_after_s(reason, decision.estimated_wait_s)
    if reason == "unknown_model":
        return _unknown_model(model)
    if reason == "queues_full":
        return ApiError(
            429,
            "every worker's queue is full; retry shortly",
            code="overloaded",
            retry_after_s=wait,
        )
    if reason == OVER_DEADLINE:
        return ApiError(
            429,
            "every worker's estimated time to first token exceeds the admission deadline",
            code="overloaded",
            retry_after_s=wait,
        )
    if reason == "no_ready_workers":
        return ApiError(
            503,
            "no ready worker: every known worker is stopping or not ready yet",
            code="no_worker",
            retry_after_s=wait,
        )
    if reason == "no_workers":
        return ApiError(
            503,
            "no worker has joined yet (one may be starting); retry after Retry-After seconds",
            code="no_worker",
            retry_after_s=wait,
        )
    if reason == "not_enough_gpus":
        return ApiError(
            503,
            f"model {model!r} needs more GPUs than any ready worker has (its "
            "tensor_parallel_size); retry after Retry-After seconds, or add such a worker",
            code="not_enough_gpus",
            param="model",
            retry_after_s=wait,
        )
    if reason == "model_too_large":
        return ApiError(
            400,
            f"model {model!r} does not fit on any worker",
            code="model_too_large",
            param="model",
        )
    return ApiError(503, f"no worker is available ({reason})", code="no_worker")


class CompletionLane:
    """ASGI middleware: the completion routes go to `Gateway.serve`, the rest on to `app`.

    It sits inside `RequestIdMiddleware`, which gives every request its id and sets the
    response header.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in COMPLETION_ROUTES:
            await self.gateway.serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# The lane's routes: what each answers as, and the body it takes.
COMPLETION_ROUTES: dict[str, tuple[sse.Kind, type[ChatCompletionRequest | CompletionRequest]]] = {
    "/v1/chat/completions": ("chat", ChatCompletionRequest),
    "/v1/completions": ("completion", CompletionRequest),
}
_STREAM_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _validated(
    schema: type[ChatCompletionRequest | CompletionRequest], body: bytes
) -> ChatCompletionRequest | CompletionRequest:
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        raise invalid_request(error.errors()) from None


# The lane's routes as the OpenAPI document describes them (`Gateway.documented`): FastAPI
# takes a route's body schema from its endpoint's signature and its description from the
# docstring. `CompletionLane` serves these paths, so the endpoints are never called.

# The error statuses each route can answer, and why: the document lists exactly these
# (a test sends it requests built from the document and checks every status against it).
# A completion route also answers 405 to any method but POST, which no operation holds.
COMPLETION_ERRORS = {
    400: (
        "The body is not valid, or asks for a parameter the model's engine does not honour"
        " (the message names the field), or the model fits on no worker."
    ),
    401: "The API key is missing or wrong (when the server sets `API_KEYS`).",
    404: "No such model.",
    # Sent by the HTTP listener itself (`sllm.runtime.http`), before the body is parsed.
    408: "The body did not arrive within `HTTP_BODY_TIMEOUT` seconds of the headers.",
    413: f"The body is over {MAX_BODY_BYTES} bytes.",
    429: "Every ready worker's queue is full: retry after `Retry-After` seconds.",
    502: "The worker failed before the answer was complete (`stream: false`).",
    503: "No worker is ready (none known, or every one stopping), or the model is not ready yet.",
    504: "No worker answered in time.",
}
MODELS_ERRORS = {401: COMPLETION_ERRORS[401]}
_COMPLETION_ANSWER = {
    "description": "One JSON body with `usage`; with `stream: true`, server-sent events.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}

_ANSWERS = (
    """

With `stream: true` the answer is server-sent events (`data:` chunks, then
`data: [DONE]`), ending with an `{"error": ...}` event if the worker fails mid-stream;
otherwise one JSON body with `usage`. Errors are OpenAI's error JSON (`ErrorResponse`):
"""
    + "".join(f"\n- {status}: {why}" for status, why in COMPLETION_ERRORS.items())
    + """

Every answer carries `x-request-id`."""
)


def _documented_errors(errors: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """FastAPI's ``responses`` for these error statuses: OpenAI's error body, and
    ``Retry-After`` on 429."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status, why in errors.items():
        documented[status] = {"model": ErrorResponse, "description": why}
        if status == 429:
            documented[status]["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "required": True,
                    "schema": {"type": "integer"},
                }
            }
    return documented


async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    raise NotImplementedError("served by CompletionLane")


async def completions(body: CompletionRequest, request: Request) -> Response:
    raise NotImplementedError("served by CompletionLane")


chat_completions.__doc__ = "A chat completion, placed on a worker and proxied." + _ANSWERS
completions.__doc__ = "A text completion, placed on a worker and proxied." + _ANSWERS
