"""A UDP endpoint on asyncio: bytes in, typed messages out, bad datagrams counted and dropped.

Every live service (coordinator, worker, the status client, the load generator) talks
through one `Endpoint`. It owns the codec, so signing and validation happen in exactly
one place, and it owns the reject counter, so every process counts bad input the same
way and logs it at most once per reason every few seconds. A valid message the service
has no use for is counted and logged the same way, per type (`drop_unexpected`), since a
peer can send those just as fast. A handler that raises is logged and the endpoint keeps
serving: one bad message never takes a process down.

When a server's socket is bound (an endpoint with a handler), the endpoint tells its codec
(`Codec.start_listening`), so a signed datagram captured before this process started is
refused as ``before_boot`` rather than replayed into an empty replay cache.

`request` pairs a request with its reply by ``request_id``, with a deadline, for the
clients; servers answer with `send`, which shrinks a message over the datagram cap until
it fits (`sllm.wire.fit`, the rule the simulator's network applies too).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TypeVar, cast

from sllm.logs import log_event
from sllm.wire import Codec, DecodeError, EncodeError, Message, RejectCounter
from sllm.wire.fit import encode_to_fit

Address = tuple[str, int]
Handler = Callable[[Message, Address], None]
ReplyT = TypeVar("ReplyT", bound=Message)

log = logging.getLogger("sllm.wire")


class Endpoint(asyncio.DatagramProtocol):
    """One bound UDP socket with a codec, counters of what it dropped, and reply matching."""

    def __init__(self, codec: Codec, handler: Handler | None = None) -> None:
        self.codec = codec
        self.handler = handler
        self.rejects = RejectCounter()
        # Valid messages the service dropped, by type. The types are the wire's own
        # (MESSAGE_TYPES), so the keys are bounded; only those seen get a series.
        self.unexpected = RejectCounter(keys=())
        self.transport: asyncio.DatagramTransport | None = None
        self.sent_bytes = 0
        self.received_bytes = 0
        # request id -> (the reply's future, the reply's type)
        self._waiting: dict[str, tuple[asyncio.Future[Message], type[Message]]] = {}

    @classmethod
    async def bind(
        cls, codec: Codec, host: str, port: int, handler: Handler | None = None
    ) -> Endpoint:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: cls(codec, handler), local_addr=(host, port)
        )
        return endpoint

    @property
    def address(self) -> Address:
        assert self.transport is not None, "endpoint is not bound"
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self.handler is not None:
            # A server: refuse what was captured before it started. An endpoint without
            # a handler only takes replies to its own requests, matched by a fresh
            # request_id that no replay carries, so the floor would only cost a client
            # whose clock runs ahead of the server's its first replies.
            self.codec.start_listening(time.time())

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.received_bytes += len(data)
        sender = (str(addr[0]), int(addr[1]))
        try:
            message = self.codec.decode(data, time.time())
        except DecodeError as error:
            self._count_reject(error.reason, sender, str(error))
            return
        request_id = getattr(message, "request_id", None)
        waiter = self._waiting.get(request_id) if isinstance(request_id, str) else None
        # Only the awaited type answers a request: a worker's ``inference_started`` shares
        # its request id with the ``inference_result`` a caller waits for.
        if waiter is not None and isinstance(message, waiter[1]):
            del self._waiting[str(request_id)]
            if not waiter[0].done():
                waiter[0].set_result(message)
            return
        if self.handler is None:
            return
        try:
            self.handler(message, sender)
        except Exception:  # one bad message must not take the process down
            log.exception("handler_failed", extra={"fields": {"type": message.TYPE}})

    def error_received(self, exc: Exception) -> None:
        # ICMP port-unreachable and friends: the peer is gone; liveness handles that.
        log.debug("socket_error", extra={"fields": {"error": str(exc)}})

    def _count_reject(self, reason: str, sender: Address, detail: str) -> None:
        suppressed = self.rejects.record(reason, time.monotonic())
        if suppressed is not None:
            log_event(
                log,
                logging.WARNING,
                "datagram_rejected",
                reason=reason,
                sender=f"{sender[0]}:{sender[1]}",
                detail=detail[:200],
                suppressed=suppressed,
            )

    def drop_unexpected(
        self, message_type: str, sender: Address | None, *, logger: logging.Logger, level: int
    ) -> None:
        """Count a valid message of a type this service does not handle, and log it at most
        once per type every `LOG_INTERVAL_S`, with how many went unlogged since.

        The service's own `logger` and `level` keep the line where it always was; `sender`
        is None when the service no longer knows it.
        """
        suppressed = self.unexpected.record(message_type, time.monotonic())
        if suppressed is not None:
            fields: dict[str, object] = {"type": message_type, "suppressed": suppressed}
            if sender is not None:
                fields["sender"] = f"{sender[0]}:{sender[1]}"
            log_event(logger, level, "unexpected_message", **fields)

    def send(self, message: Message, address: Address) -> bool:
        """Encode and send; False (and a log line) when it could not be encoded or sent.

        A message over the datagram cap is shrunk until it fits (`sllm.wire.fit`).
        """
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            _, data = encode_to_fit(self.codec, message, time.time(), secrets.randbits(64))
        except EncodeError as error:
            detail = "oversized" if error.reason == "oversized" else str(error)
            log_event(log, logging.ERROR, "encode_failed", type=message.TYPE, error=detail)
            return False
        self.transport.sendto(data, address)
        self.sent_bytes += len(data)
        return True

    async def request(
        self, message: Message, address: Address, reply_type: type[ReplyT], timeout: float
    ) -> ReplyT:
        """Send `message` and wait for the reply with the same request_id.

        Raises TimeoutError after `timeout` seconds. A message of another type with the
        same request_id goes to the handler, as any other message does.
        """
        request_id = getattr(message, "request_id")  # noqa: B009 - every request type has one
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (future, reply_type)
        try:
            if not self.send(message, address):
                raise ConnectionError(f"could not send {message.TYPE} to {address}")
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(request_id, None)
        if not isinstance(reply, reply_type):
            raise TypeError(f"expected {reply_type.TYPE}, got {reply.TYPE}")
        return reply

    def close(self) -> None:
        for future, _ in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self.transport is not None:
            self.transport.close()
