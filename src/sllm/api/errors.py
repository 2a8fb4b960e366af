"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

`ApiError` is raised anywhere in a request's handling; the app turns it into the JSON
body and status (and ``Retry-After`` for 429). Validation failures from pydantic become
400s that name the first bad field.

This module imports only the standard library at load time (the worker's runtime raises
`ApiError` and must import on a bare python3); FastAPI is imported where it is used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": TYPES.get(self.status, "api_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def sse(self) -> bytes:
        """The error as one server-sent event, to end a stream that already started."""
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"

    def response(self, request_id: str = "") -> JSONResponse:
        from fastapi.responses import JSONResponse

        headers = {"x-request-id": request_id} if request_id else {}
        if self.retry_after_s is not None:
            headers["retry-after"] = str(self.retry_after_s)
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response(request.headers.get("x-request-id", ""))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return invalid_request(error.errors()).response(request.headers.get("x-request-id", ""))


def invalid_request(problems: Sequence[Any]) -> ApiError:
    """The 400 for a body pydantic refused, naming its first problem (as FastAPI lists them
    for a route's body, or as a model's own validation does)."""
    first = problems[0] if problems else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    return ApiError(400, message, code="invalid_request", param=".".join(location) or None)
