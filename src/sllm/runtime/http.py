"""The services' HTTP listener: health, readiness and Prometheus metrics on FastAPI and uvicorn.

Why it exists: every long-lived service (coordinator, worker, node) needs a liveness and a
readiness endpoint for container health checks and Kubernetes probes, and ``/metrics`` for
Prometheus. `create_app` builds that ASGI app; the OpenAI-compatible front door adds its
routes to the same app (``app.include_router(...)``), so there is one HTTP server per
process. It needs the ``serve`` extra; `sllm.runtime.monitoring` is the stdlib-only side
that decides whether to import this module at all.

How it runs: `HttpListener` binds its own socket (so a port of 0 is known at once and a bind
error is an `OSError` here, not uvicorn's ``sys.exit``) and runs ``uvicorn.Server.serve`` as
a task in the service's own event loop, next to the UDP endpoint. Every route is ``async``,
so it runs on that loop and reads the core's state without locks. uvicorn's signal
handling is switched off: the service's `run_service` owns SIGINT and SIGTERM and calls
`HttpListener.stop`, which is bounded by `STOP_TIMEOUT_S`.

Endpoints:

- ``GET /healthz``: 200 while the event loop answers (liveness).
- ``GET /health``: the same, as vLLM's server has it (an empty 200), for tools written
  for vLLM (its benchmark client calls it first).
- ``GET /readyz``: 200 when the service's readiness check passes, else 503 with the reason.
- ``GET /metrics``: the service's own `CollectorRegistry` (never the global one), in the
  Prometheus text format, or OpenMetrics when the scraper asks for it.

Every error the app answers, on every path, is OpenAI's error JSON
(`sllm.api.errors.install_error_handlers`): an unknown path is a 404 and a wrong method a
405 in that shape, not FastAPI's ``{"detail": ...}``.

Slow clients and connection floods (`HttpLimits`: HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT,
HTTP_MAX_CONNECTIONS). uvicorn bounds only idle kept-alive connections; a client that
opens a connection and sends its headers a byte at a time (slowloris) would hold its socket
for ever. `guarded_protocol` extends uvicorn's httptools protocol:

- **Headers.** A connection that has not sent a whole request head within the header
  timeout is closed. The clock starts when the connection is made (for its first request)
  or when a later request's first byte arrives on a kept-alive connection (the idle time
  before it is uvicorn's keep-alive timeout, as before). The timer is armed only when the
  headers did not come in the read that began them, so an ordinary request pays nothing.
- **Body.** A request whose body has not fully arrived within the body timeout after its
  headers gets 408 (OpenAI's error shape) when its response has not started, and the
  connection is closed.
- **Connections.** Beyond `HttpLimits.max_connections` open connections, a new one is
  closed at once, before anything is read from it. Not 503: answering means reading the
  request first, which costs exactly what a flood of slow clients holds (a socket, for
  as long as they like), and a request written before the 503 arrives could turn the close
  into a reset that loses the answer anyway. Clients retry a refused connection (the
  `openai` client does, with backoff). uvicorn's own ``limit_concurrency`` is not used: it
  answers 503 only once a request's headers are in, so it bounds nothing against clients
  that never finish them.

What was closed is logged as ``http_connections_closed`` with counts (header timeouts,
body timeouts, refused over the limit, open now), at most once per
`CLOSED_NOTICE_INTERVAL_S`, never a line per connection.

Not handled yet: TLS, HTTP/2, compression of ``/metrics``, a minimum transfer rate for
bodies (a body may trickle for the whole body timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sllm.api.errors import ApiError, install_error_handlers
from sllm.config import HTTP_KEEP_ALIVE_S
from sllm.logs import log_event
from sllm.runtime.monitoring import DEFAULT_HTTP_LIMITS, HttpLimits, Readiness
from sllm.wire.codec import RejectCounter

log = logging.getLogger("sllm.http")

# Requests in flight get this long to finish once stopping starts; health and metrics
# answer in milliseconds, so one second only waits out a slow scrape (uvicorn takes whole
# seconds).
GRACEFUL_SHUTDOWN_S = 1
# The whole stop, after which the server task is cancelled: inside the services' 3-second
# shutdown grace, with room for their own UDP goodbye.
STOP_TIMEOUT_S = 1.5
# Pending connections the kernel queues before uvicorn accepts them (uvicorn's default).
BACKLOG = 2048
# uvicorn's HTTP parser: httptools (in C; `guarded_protocol` extends its protocol), which
# the serve extra installs and the front door's client to workers needs too; without it
# HTTP is off (`HTTP_MODULES`).
HTTP_PARSER = "httptools"


# What was closed is logged at most this often: a flood of a thousand slow clients makes
# one line with counts, and the first closing is logged at once.
CLOSED_NOTICE_INTERVAL_S = 10.0
# The answer to a request whose body did not arrive in time, in OpenAI's error shape.
_BODY_TIMEOUT_BODY = json.dumps(
    ApiError(408, "the request body did not arrive in time", code="request_timeout").body()
).encode()
_BODY_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_BODY_TIMEOUT_BODY)
) + _BODY_TIMEOUT_BODY


@dataclass(slots=True)
class ClosedCounts:
    """Connections closed for their clients' slowness or number."""

    header_timeouts: int = 0
    body_timeouts: int = 0
    refused: int = 0  # over `HttpLimits.max_connections`

    def total(self) -> int:
        return self.header_timeouts + self.body_timeouts + self.refused


class ConnectionGuard:
    """One listener's open connections and what it closed, logged with counts."""

    def __init__(self, service: str, limits: HttpLimits) -> None:
        self.service = service
        self.limits = limits
        self.open = 0
        self.closed = ClosedCounts()  # since the listener started
        self._unlogged = ClosedCounts()
        self._logged_at = -CLOSED_NOTICE_INTERVAL_S
        self._flush: asyncio.TimerHandle | None = None

    def admit(self) -> bool:
        """Count a new connection in, or say it is one too many (and count that)."""
        if self.open >= self.limits.max_connections:
            self.note("refused")
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def note(self, kind: str) -> None:
        """Count a closing of `kind` (a `ClosedCounts` field); log now or soon."""
        setattr(self.closed, kind, getattr(self.closed, kind) + 1)
        setattr(self._unlogged, kind, getattr(self._unlogged, kind) + 1)
        if self._flush is not None:
            return  # the line already due will carry it
        wait = self._logged_at + CLOSED_NOTICE_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self.log()
        else:
            self._flush = asyncio.get_running_loop().call_later(wait, self.log)

    def log(self) -> None:
        """Log the closings not logged yet, if any (also called once as the listener stops)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        unlogged = self._unlogged
        if not unlogged.total():
            return
        self._unlogged = ClosedCounts()
        self._logged_at = time.monotonic()
        log_event(
            log,
            logging.WARNING,
            "http_connections_closed",
            service=self.service,
            header_timeouts=unlogged.header_timeouts,
            body_timeouts=unlogged.body_timeouts,
            refused=unlogged.refused,
            open=self.open,
            max_connections=self.limits.max_connections,
        )


def guarded_protocol(guard: ConnectionGuard) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `guard`'s limits (see the module docstring)."""
    header_timeout = guard.limits.header_timeout_s
    body_timeout = guard.limits.body_timeout_s

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _admitted = False
        _in_head = False  # a request has begun and its headers are not all in
        _in_body = False  # a request's headers are in and its body is not
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if not guard.admit():
                transport.close()
                return
            self._admitted = True
            super().connection_made(transport)
            # The first request's clock starts now: a client that sends nothing is slow too.
            self._head_timer = self.loop.call_later(header_timeout, self._head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._admitted:
                return  # refused: uvicorn never saw it
            self._admitted = False
            guard.release()
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # Timers only for a head or a body that did not come in one read.
            if self._in_head:
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(header_timeout, self._head_late)
            elif self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._in_body:
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(body_timeout, self._body_late)
            elif self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            guard.note("header_timeouts")
            self.transport.close()

        def _body_late(self) -> None:
            self._body_timer = None
            if self.transport.is_closing():
                return
            guard.note("body_timeouts")
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                # The app waits for the rest of the body; it will read a disconnect and
                # must not answer over the 408.
                cycle.disconnected = True
                cycle.message_event.set()
                self.transport.write(_BODY_TIMEOUT_RESPONSE)
            self.transport.close()

    return GuardedHttpToolsProtocol


def create_app(
    service: str, registry: CollectorRegistry, readiness: Callable[[], Readiness]
) -> FastAPI:
    """The health, readiness and metrics app of one service."""
    app = FastAPI(title=f"sllm {service}", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        state = readiness()
        body = {
            "status": "ready" if state.ready else "not_ready",
            "service": service,
            "reason": state.reason,
        }
        return JSONResponse(body, status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return app


class _RateLimitedLog(logging.Filter):
    """Passes each of uvicorn's log messages at most once per `LOG_INTERVAL_S`.

    uvicorn logs a WARNING for every malformed request ("Invalid HTTP request received."):
    a client sending garbage as fast as it can would flood the log, as hostile datagrams
    would without the codec's `RejectCounter`, which this reuses. Keyed by the message's
    template, so the keys are bounded by uvicorn's code, not by what clients send; a
    passed line carries how many like it were suppressed before it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counter = RejectCounter(keys=())

    def filter(self, record: logging.LogRecord) -> bool:
        suppressed = self.counter.record(str(record.msg), time.monotonic())
        if suppressed is None:
            return False
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} like it suppressed)"
        return True


_UVICORN_LOG_LIMIT = _RateLimitedLog()


def limit_uvicorn_log() -> None:
    """Rate-limit uvicorn's own log lines (once per process, however many listeners)."""
    logger = logging.getLogger("uvicorn.error")
    if _UVICORN_LOG_LIMIT not in logger.filters:
        logger.addFilter(_UVICORN_LOG_LIMIT)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the hosting service owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (IPv4, or IPv6 for an address with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every streamed token after the first waits for a delayed ACK (40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # A restarted service must rebind while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpListener:
    """`create_app` served by uvicorn in the running loop until `stop`."""

    def __init__(
        self,
        service: str,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Callable[[], Readiness],
        also_on: Sequence[str] = (),
        *,
        limits: HttpLimits = DEFAULT_HTTP_LIMITS,
    ) -> None:
        self.service = service
        self.guard = ConnectionGuard(service, limits)
        self.host = host
        self.also_on = [extra for extra in dict.fromkeys(also_on) if extra != host]
        self.requested_port = port
        self.app = create_app(service, registry, readiness)
        self._sockets: list[socket.socket] = []
        self._port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await `closer` after the server stops (routes close what they opened)."""
        self._closers.append(closer)

    @property
    def port(self) -> int:
        """The bound port (the one the OS chose when asked for 0); 0 before `start`."""
        return self._port

    @property
    def http_parser(self) -> str:
        """The name of uvicorn's protocol class serving HTTP (the one `guarded_protocol`
        extends); "" before `start`."""
        if self._server is None:
            return ""
        protocol = self._server.config.http_protocol_class
        return next(c.__name__ for c in protocol.__mro__ if c.__module__.startswith("uvicorn."))

    async def start(self) -> None:
        """Bind (raising `OSError` when the port is taken) and start serving.

        `host` is bound first, then each address of `also_on` on the same port. Connections
        are accepted into the socket's backlog from the moment it listens, so the listener
        counts as up as soon as this returns.
        """
        self._sockets = [bind_tcp(self.host, self.requested_port)]
        self._port = int(self._sockets[0].getsockname()[1])
        try:
            for extra in self.also_on:
                self._sockets.append(bind_tcp(extra, self._port))
        except OSError:
            self._close_sockets()
            raise
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # keep the process's logging as `configure_logging` set it
            log_level="warning",  # uvicorn's own INFO lines are not fixed event names
            access_log=False,
            server_header=False,
            http=guarded_protocol(self.guard),
            # No WebSocket routes: an Upgrade request is answered as plain HTTP, and a
            # connection never leaves the guarded protocol (which counts it until it ends).
            ws="none",
            timeout_keep_alive=HTTP_KEEP_ALIVE_S,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        config.load()  # here rather than in `serve`, to log the parser it chose
        limit_uvicorn_log()
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=list(self._sockets)))
        self._task.add_done_callback(self._served)
        log_event(
            log,
            logging.INFO,
            "http_listening",
            service=self.service,
            host=self.host,
            port=self.port,
            http_parser=self.http_parser,
            **({"also_on": ",".join(self.also_on)} if self.also_on else {}),
        )

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def _served(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log_event(
                log,
                logging.ERROR,
                "http_crashed",
                service=self.service,
                error=str(task.exception()),
            )

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, and close; at most `STOP_TIMEOUT_S`."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                log_event(log, logging.WARNING, "http_stop_timed_out", service=self.service)
            except Exception:  # logged by `_served`; stopping goes on
                pass
        self._close_sockets()
        self.guard.log()
        for closer in self._closers:
            await closer()
