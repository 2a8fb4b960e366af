"""OpenAI-compatible request and response bodies, validated with pydantic.

Only the fields this platform honours are declared; OpenAI clients send more (``user``,
``logprobs`` at their defaults, ...), so unknown fields are accepted and ignored rather
than failing a real client. A value out of range (``temperature`` 5, ``max_tokens`` 0,
``n`` 3) is a 400 with the field named, in OpenAI's error format.

Types are strict, as OpenAI's are: ``stream`` is a JSON boolean (not ``"yes"`` or 1),
the counts are JSON integers (not 4.0, ``"4"`` or ``true``), ``temperature`` and
``top_p`` finite numbers (``NaN`` and ``Infinity``, which Python's JSON parsers take,
are refused), ``stop`` strings. Every limit is declared on the field, so the OpenAPI
document (`sllm.api.frontdoor`) states what the server checks, and nothing more.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# The longest completion one request may ask for; a bound so a typo cannot pin a slot.
MAX_TOKENS_LIMIT = 32_768
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions
STOP_SEQUENCES_MAX = 4  # as OpenAI allows


# Strict: a JSON value of the declared type only, never one coerced from another type.
_STRICT = ConfigDict(extra="ignore", strict=True)


class _Request(BaseModel):
    model_config = _STRICT

    model: str = Field(min_length=1, max_length=96)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | Annotated[list[str], Field(max_length=STOP_SEQUENCES_MAX)] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def output_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)

    @property
    def prompt_chars(self) -> int:
        return sum(len(message.content) for message in self.messages)


class CompletionRequest(_Request):
    # One prompt per request: a list of several would need a completion for each.
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def prompt_chars(self) -> int:
        return len(self.prompt_text)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "sllm"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error answer, in OpenAI's shape (`sllm.api.errors.ApiError`)."""

    error: ErrorDetail
