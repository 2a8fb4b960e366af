"""OpenAI-compatible request and response bodies, validated with pydantic.

Every field of OpenAI's chat and completions requests that this platform knows is
declared, and each is honoured or refused by name (`sllm.api.params`: the table of who
carries each one, checked against the model's engine before placement). A field not
declared is refused as well (``extra="forbid"``), with a 400 that names it: as
unsupported when it is an OpenAI parameter nothing here honours (``store``, ``audio``),
as unknown otherwise (a typo). The official client sends only what its caller passed, so
this refuses nothing it sends by itself. A value out of range (``temperature`` 5,
``max_tokens`` 0, ``n`` 3) is a 400 with the field named, in OpenAI's error format.

Chat messages take what vLLM takes: ``content`` as a string, as an array of text parts
(``{"type": "text", "text": ...}``, joined; another part type is refused naming
``messages.i.content.j.type``) or null, assistant turns with ``tool_calls``, and ``tool``
turns with ``tool_call_id``. `ChatMessage.text` renders one into prompt text.

Types are strict, as OpenAI's are: ``stream`` is a JSON boolean (not ``"yes"`` or 1),
the counts are JSON integers (not 4.0, ``"4"`` or ``true``), ``temperature`` and
``top_p`` finite numbers (``NaN`` and ``Infinity``, which Python's JSON parsers take,
are refused), ``stop`` strings. Every limit is declared on the field, so the OpenAPI
document (`sllm.api.frontdoor`) states what the server checks, and nothing more.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The longest completion one request may ask for; a bound so a typo cannot pin a slot.
MAX_TOKENS_LIMIT = 32_768
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions
STOP_SEQUENCES_MAX = 4  # as OpenAI allows
# OpenAI's bounds: penalties in [-2, 2], at most 20 top log probabilities for a chat
# token and 5 for a legacy completion's, `best_of` at most 20.
PENALTY_LIMIT = 2.0
CHAT_TOP_LOGPROBS_MAX = 20
COMPLETION_LOGPROBS_MAX = 5
BEST_OF_MAX = 20


# Strict: a JSON value of the declared type only, never one coerced from another type;
# and only declared fields (`sllm.api.params` says what each one is).
_STRICT = ConfigDict(extra="forbid", strict=True)


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Request(BaseModel):
    model_config = _STRICT

    model: str = Field(min_length=1, max_length=96)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | Annotated[list[str], Field(max_length=STOP_SEQUENCES_MAX)] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None
    # Declared so that they are refused by name unless the model's engine honours them.
    top_k: int | None = Field(default=None, ge=-1)
    presence_penalty: float = Field(
        default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False
    )
    frequency_penalty: float = Field(
        default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False
    )
    logit_bias: dict[str, int] | None = None

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def output_tokens(self) -> int:
        return self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a chunk carrying `usage` (OpenAI's opt-in)."""
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(BaseModel):
    """One part of a message's content; only text parts are taken."""

    model_config = _STRICT

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = _STRICT

    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolCall(BaseModel):
    """A tool call of an earlier assistant turn, sent back as conversation history."""

    model_config = _STRICT

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns

    @property
    def text(self) -> str:
        """The turn as prompt text, as vLLM's chat template renders it: the content (parts
        joined), then each tool call as JSON text."""
        content = self.content
        text = content if isinstance(content, str) else "".join(p.text for p in content or ())
        calls = [
            json.dumps({"name": call.function.name, "arguments": call.function.arguments})
            for call in self.tool_calls or ()
        ]
        return "\n".join([text, *calls]) if calls else text


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=CHAT_TOP_LOGPROBS_MAX)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True

    @property
    def output_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def prompt_chars(self) -> int:
        return sum(len(message.text) for message in self.messages)

    def prompt_messages(self) -> list[dict[str, str]]:
        """The messages as an engine takes them: role and text."""
        return [{"role": message.role, "content": message.text} for message in self.messages]


class CompletionRequest(_Request):
    # One prompt per request: a list of several would need a completion for each.
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    logprobs: int | None = Field(default=None, ge=0, le=COMPLETION_LOGPROBS_MAX)
    echo: bool = False
    best_of: int = Field(default=1, ge=1, le=BEST_OF_MAX)
    suffix: str | None = None

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
