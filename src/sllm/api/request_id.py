"""Request ids: every HTTP response carries ``x-request-id``, and the request's logs the same id.

`RequestIdMiddleware` is a plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` would
put every streamed chunk through a memory stream). For each request it takes the client's
``x-request-id`` when it is a sane token, otherwise makes one, keeps it in the scope's
state (`request_id_in` reads it) and sets the header on the response, whatever route or
error handler produced it.

The client's id is not the worker's key for the request: clients may send one id many
times, at once too. The front door sends each attempt to its worker under a fresh id of its
own (the worker's key, in its ``x-request-id``), with the client's id in `CLIENT_HEADER`
(the id the worker's answer carries), and logs both on ``request_routed``.

Not handled yet: W3C ``traceparent`` propagation.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the header's name imports without the serve extra
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
# From the front door to a worker: the id the client knows the request by.
CLIENT_HEADER = "x-client-request-id"
# A client's id is kept when it is a short token: it goes into log fields and headers, and
# 128 characters is the wire codec's limit on ids.
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


def accepted(given: str | None) -> str | None:
    """The client's id when it is a sane token, else None."""
    return given if given and _ACCEPTED.match(given) else None


def request_id_in(scope: Scope) -> str:
    """The id the middleware gave the request of `scope` (or one from its header, or a new
    one)."""
    given = scope.get("state", {}).get("request_id")
    if isinstance(given, str):
        return given
    return accepted(header_of(scope, _HEADER_BYTES)) or new_request_id()


def header_of(scope: Scope, name: bytes) -> str:
    """The first value of the header `name` (lower case) in an ASGI scope, or ""."""
    value = next((value for key, value in scope["headers"] if key == name), b"")
    return value.decode("latin-1")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted(header_of(scope, _HEADER_BYTES)) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (_HEADER_BYTES, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != _HEADER_BYTES]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)
