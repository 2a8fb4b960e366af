"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

`ApiError` is raised anywhere in a request's handling; the app turns it into the JSON
body and status (and ``Retry-After`` for 429). Validation failures from pydantic become
400s that name the first bad field and say what it must be, with the value given
(`invalid_request`); a field the API does not declare is named as unsupported (an OpenAI
parameter nothing here honours, `sllm.api.params.NOT_SUPPORTED`) or unknown (a typo).
`install_error_handlers` makes every other error of an app OpenAI's shape too: an unknown
path (404), a wrong method (405) and an unexpected failure (500), never FastAPI's
``{"detail": ...}`` or a plain-text page.

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
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable",
    500: "api_error",
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
    """Answer every error of `app` in OpenAI's shape (see the module docstring)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response(request.headers.get("x-request-id", ""))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return invalid_request(error.errors()).response(request.headers.get("x-request-id", ""))

    @app.exception_handler(HTTPException)
    async def routing(request: Request, error: HTTPException) -> JSONResponse:
        answer = http_error(error.status_code, request.method, request.url.path).response(
            request.headers.get("x-request-id", "")
        )
        for name, value in (error.headers or {}).items():  # a 405's Allow (RFC 9110)
            answer.headers[name] = value
        return answer

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        failed = ApiError(500, "the server failed to answer the request", code="internal_error")
        return failed.response(request.headers.get("x-request-id", ""))


def http_error(status: int, method: str, path: str) -> ApiError:
    """The error for a status the routing itself answers (no route, or not its method)."""
    if status == 404:
        return ApiError(404, f"no such path: {method} {path}", code="not_found")
    if status == 405:
        return ApiError(405, f"{path} does not take {method}", code="method_not_allowed")
    return ApiError(status, f"{method} {path} failed with status {status}")


def invalid_request(problems: Sequence[Any]) -> ApiError:
    """The 400 for a body pydantic refused (as FastAPI lists a route's body problems, or as
    a model's own validation does), naming the field and the value in plain words:
    ``max_tokens must be an integer, got 4.0``.

    Pydantic lists a problem for each member of a union (``stop`` is a string or a list),
    with the member in the location. The field's problems are read together: the deepest
    wins (the member the value got furthest into), a broken limit beats a wrong type (the
    value had the member's type), and wrong types left are joined with "or".
    """
    if not problems:
        return ApiError(400, "invalid request", code="invalid_request")
    first = problems[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON", code="invalid_request")
    field = _path(first)[:1]
    same_field = [problem for problem in problems if _path(problem)[:1] == field]
    depth = max(len(_path(problem)) for problem in same_field)
    deepest = [problem for problem in same_field if len(_path(problem)) == depth]
    limits = [problem for problem in deepest if problem.get("type") not in _WRONG_TYPES]
    chosen = limits or deepest
    where = _path(chosen[0])
    chosen = [problem for problem in chosen if _path(problem) == where]  # one field's only
    param = ".".join(where) or None
    if chosen[0].get("type") == "extra_forbidden":
        return _undeclared(param or "")
    phrases = list(dict.fromkeys(_phrase(problem) for problem in chosen))  # once each
    if len(phrases) > 1 and all(phrase.startswith(_MUST_BE) for phrase in phrases):
        phrases = [_MUST_BE + " or ".join(phrase.removeprefix(_MUST_BE) for phrase in phrases)]
    message = f"{param or 'the request body'} {' or '.join(phrases)}"
    if chosen[0].get("type") != "missing":
        message += f", got {_shown(chosen[0].get('input'))}"
    return ApiError(400, message, code="invalid_request", param=param)


def _undeclared(param: str) -> ApiError:
    """The 400 for a field the API does not declare: unsupported, or unknown."""
    from sllm.api.params import NOT_SUPPORTED

    if param in NOT_SUPPORTED:
        message = f"{param} is not supported by this server"
        return ApiError(400, message, code="unsupported_parameter", param=param)
    message = f"{param} is not a parameter of this API (check its spelling)"
    return ApiError(400, message, code="unknown_parameter", param=param)


# What pydantic names a union's member in a location ("stop" -> "list[str]" -> 1): not a
# field of the request, so left out of the field's name.
_UNION_MEMBERS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})
# Problems that mean the value is not of the type at all (rather than out of its limits).
_WRONG_TYPES = frozenset(
    {
        "string_type",
        "int_type",
        "int_from_float",
        "int_parsing",
        "float_type",
        "float_parsing",
        "bool_type",
        "bool_parsing",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "none_required",
    }
)
# Each pydantic problem type in a user's words, after the field's name; ``{...}`` are
# filled from the problem's context. Any other type keeps pydantic's own message.
_PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be a boolean (true or false)",
    "bool_parsing": "must be a boolean (true or false)",
    "list_type": "must be an array",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "none_required": "must be null",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "literal_error": "must be one of {expected}",
    "value_error": "{error}",
}
_MUST_BE = "must be "
# A value is quoted in a message up to this many characters: enough to recognise it.
_SHOWN_CHARS = 60


def _path(problem: Any) -> list[str]:
    """The problem's field as names and list indices, without "body" or union members."""
    parts = [str(part) for part in problem.get("loc", ()) if part != "body"]
    return [part for part in parts if part not in _UNION_MEMBERS and "[" not in part]


def _phrase(problem: Any) -> str:
    template = _PHRASES.get(problem.get("type", ""))
    context = problem.get("ctx") or {}
    if template is not None:
        try:
            return template.format(**{key: str(value) for key, value in context.items()})
        except (KeyError, IndexError):
            pass
    message = str(problem.get("msg", "is not valid"))
    return message.replace("Input should be", "must be", 1)


def _shown(value: Any) -> str:
    """`value` as JSON (``NaN`` as the client wrote it), cut to `_SHOWN_CHARS`."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
