"""OpenAI-compatible request and response bodies, validated with pydantic.

Every field of OpenAI's chat and completions requests that this platform knows is
declared, and each is honoured or refused by name (`sllm.api.params`: the table of who
carries each one, checked against the model's engine before placement). A field not
declared is refused as well (``extra="forbid"``), with a 400 that names it: as
unsupported when it is an OpenAI parameter nothing here honours (``store``, ``audio``),
as unknown otherwise (a typo). The official client sends only what its caller passed, so
this refuses nothing it sends by itself. A value out of range (``temperature`` 5,
``max_tokens`` 0, ``seed`` beyond 64 bits) is a 400 with the field named, in OpenAI's
error format. What asks for nothing is taken, as OpenAI takes it: null for the fields
OpenAI lets be null (`NULL_MEANS_DEFAULT`: null is the default), and an unsupported
parameter at a value that uses nothing (``store: false``, ``service_tier: "auto"``;
`sllm.api.params.ASKS_NOTHING`).

Chat messages take what vLLM takes: ``content`` as a string, as an array of text parts
(``{"type": "text", "text": ...}``, joined; another part type is refused naming
``messages.i.content.j.type``) or null, assistant turns with ``tool_calls``, and ``tool``
turns with ``tool_call_id``. `ChatMessage.text` renders one into prompt text. A history
recorded from OpenAI is taken as it is: its messages' ``refusal``, ``annotations``,
``audio`` and ``function_call`` at their empty values, and a text part's
``cache_control``. Any other field inside a message is refused naming it
(``messages.0.colour``), as is a message's ``name`` (`sllm.api.params.refusal`).

Types are strict, as OpenAI's are: ``stream`` is a JSON boolean (not ``"yes"`` or 1),
the counts are JSON integers (not 4.0, ``"4"`` or ``true``), ``temperature`` and
``top_p`` finite numbers (``NaN`` and ``Infinity``, which Python's JSON parsers take,
are refused), ``stop`` strings. Every limit is declared on the field, so the OpenAPI
document (`sllm.api.frontdoor`) states what the server checks, and nothing more.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sllm.api.params import NOT_SUPPORTED, asks_nothing
from sllm.engines.base import JsonOutput

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
# OpenAI's most choices per request; above 1 is refused by name (the engines make one).
N_MAX = 128
# OpenAI's `response_format` types, and the members each one takes (a json_schema's own
# members under `JSON_SCHEMA_MEMBERS`): anything else is refused naming it, never ignored.
RESPONSE_FORMAT_MEMBERS: dict[str, frozenset[str]] = {
    "text": frozenset({"type"}),
    "json_object": frozenset({"type"}),
    "json_schema": frozenset({"type", "json_schema"}),
}
JSON_SCHEMA_MEMBERS = frozenset({"name", "description", "schema", "strict"})
# A seed fits a signed 64-bit integer, as vLLM's and OpenAI's do: torch's `manual_seed`
# raises on a larger one, which would end a stream that had already started.
SEED_MIN = -(2**63)
SEED_MAX = 2**63 - 1

# OpenAI lets these be null, and a client that passes None through sends exactly that:
# null means the field's default (`_Request._null_means_default`).
NULL_MEANS_DEFAULT = (
    "stream",
    "temperature",
    "top_p",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "parallel_tool_calls",
    "echo",
    "best_of",
)


def _null_allowed(schema: dict[str, Any]) -> None:
    """Say in the OpenAPI document that a `NULL_MEANS_DEFAULT` field takes null too, as
    pydantic writes an optional field: the value's schema or null."""
    value = {key: schema.pop(key) for key in list(schema) if key not in ("title", "default")}
    schema["anyOf"] = [value, {"type": "null"}]


def _response_format_document(schema: dict[str, Any]) -> None:
    """State in the OpenAPI document the shapes `_response_format_known` takes."""
    plain = {
        "type": "object",
        "properties": {"type": {"enum": ["text", "json_object"]}},
        "required": ["type"],
        "additionalProperties": False,
    }
    json_schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "schema": {"type": "object"},
            "strict": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        },
        "required": ["name"],
        "additionalProperties": False,
    }
    with_schema = {
        "type": "object",
        "properties": {"type": {"const": "json_schema"}, "json_schema": json_schema},
        "required": ["type", "json_schema"],
        "additionalProperties": False,
    }
    for key in [key for key in schema if key not in ("title", "default")]:
        del schema[key]
    schema["anyOf"] = [plain, with_schema, {"type": "null"}]


# A field of `NULL_MEANS_DEFAULT`: declared with its type, documented as nullable.
_NULLABLE = Field(json_schema_extra=_null_allowed)


# Strict: a JSON value of the declared type only, never one coerced from another type;
# and only declared fields (`sllm.api.params` says what each one is).
_STRICT = ConfigDict(extra="forbid", strict=True)


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Request(BaseModel):
    model_config = _STRICT

    model: str = Field(min_length=1, max_length=96)
    stream: Annotated[bool, _NULLABLE] = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: Annotated[float, _NULLABLE] = Field(
        default=1.0, ge=0.0, le=2.0, allow_inf_nan=False
    )
    top_p: Annotated[float, _NULLABLE] = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | Annotated[list[str], Field(max_length=STOP_SEQUENCES_MAX)] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    # Above 1 is refused by name unless an engine honours it (`sllm.api.params`).
    n: Annotated[int, _NULLABLE] = Field(default=1, ge=1, le=N_MAX)
    user: str | None = None
    # Declared so that they are refused by name unless the model's engine honours them.
    top_k: int | None = Field(default=None, ge=-1)
    presence_penalty: Annotated[float, _NULLABLE] = Field(
        default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False
    )
    frequency_penalty: Annotated[float, _NULLABLE] = Field(
        default=0.0, ge=-PENALTY_LIMIT, le=PENALTY_LIMIT, allow_inf_nan=False
    )
    logit_bias: dict[str, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_what_asks_nothing(cls, data: Any) -> Any:
        """Take an OpenAI parameter nothing here honours (`NOT_SUPPORTED`) when it is
        given at a value that asks for nothing (``store: false``, ``metadata: null``):
        a client that spells out the defaults is not refused. Any other value of it is
        left for ``extra="forbid"`` to refuse by name."""
        if not isinstance(data, dict):
            return data
        return {
            name: value
            for name, value in data.items()
            if not (name in NOT_SUPPORTED and asks_nothing(name, value))
        }

    @field_validator(*NULL_MEANS_DEFAULT, mode="before", check_fields=False)
    @classmethod
    def _null_means_default(cls, value: Any, info: ValidationInfo) -> Any:
        """Null, for a `NULL_MEANS_DEFAULT` field, is the field's default."""
        if value is None and info.field_name is not None:
            return cls.model_fields[info.field_name].default
        return value

    @property
    def logprob_alternatives(self) -> int | None:
        """Log probabilities asked for: None for none, else how many alternatives a token."""
        return None

    @property
    def json_output(self) -> JsonOutput | None:
        """The JSON output `response_format` asks for; None for plain text."""
        return None

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
    # A prompt-cache hint (Anthropic's, passed on by proxies such as LiteLLM): it changes
    # what a prompt costs, never what the answer says, so it is taken and not acted on.
    cache_control: dict[str, Any] | None = None


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
    """One turn. A field OpenAI does not define for a message is refused, naming it."""

    model_config = _STRICT

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None
    # A participant's name: declared so it is refused by name (`sllm.api.params.refusal`),
    # as the engines here take a turn as role and text only.
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns
    # Fields of OpenAI's own assistant answers, so that a history recorded from OpenAI
    # (``message.model_dump()``) can be sent back as it is. Taken at their empty values
    # only, which say nothing: a refusal's text, citations or audio would be part of the
    # turn, and are refused naming the field rather than dropped.
    refusal: None = None
    annotations: Annotated[list[dict[str, Any]], Field(max_length=0)] | None = None
    audio: None = None
    function_call: None = None  # deprecated, superseded by tool_calls

    @property
    def text(self) -> str:
        """The turn's text as this project hands it to an engine: the content (parts
        joined), then each tool call as JSON text on a line of its own. (vLLM hands the
        model's chat template the structured message instead; the engines here take role
        and text, and the transformers engine gives those to the template.)"""
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
    logprobs: Annotated[bool, _NULLABLE] = False
    top_logprobs: int | None = Field(default=None, ge=0, le=CHAT_TOP_LOGPROBS_MAX)
    response_format: dict[str, Any] | None = Field(
        default=None, json_schema_extra=_response_format_document
    )
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: Annotated[bool, _NULLABLE] = True

    @field_validator("response_format")
    @classmethod
    def _response_format_known(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """OpenAI's three formats, each with only its own members; a json_schema's
        ``schema`` a JSON object (the schema itself is the engine's to compile)."""
        if value is None:
            return value
        kind = value.get("type")
        if not isinstance(kind, str) or kind not in RESPONSE_FORMAT_MEMBERS:
            raise ValueError(f"type must be one of {', '.join(RESPONSE_FORMAT_MEMBERS)}")
        extra = sorted(set(value) - RESPONSE_FORMAT_MEMBERS[kind])
        if extra:
            raise ValueError(f"{kind} takes no member {extra[0]!r}")
        if kind == "json_schema":
            spec = value.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise ValueError("json_schema must be an object with a name")
            extra = sorted(set(spec) - JSON_SCHEMA_MEMBERS)
            if extra:
                raise ValueError(f"json_schema takes no member {extra[0]!r}")
            if not isinstance(spec.get("schema", {}), dict):
                raise ValueError("json_schema.schema must be a JSON schema object")
            if not isinstance(spec.get("description", ""), str):
                raise ValueError("json_schema.description must be a string")
            if not isinstance(spec.get("strict", False), bool | None):
                raise ValueError("json_schema.strict must be a boolean")
        return value

    @property
    def output_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def logprob_alternatives(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @property
    def json_output(self) -> JsonOutput | None:
        kind = (self.response_format or {}).get("type", "text")
        if kind == "text":
            return None
        schema = (self.response_format or {}).get("json_schema", {}).get("schema")
        return JsonOutput(schema)

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
    echo: Annotated[bool, _NULLABLE] = False
    best_of: Annotated[int, _NULLABLE] = Field(default=1, ge=1, le=BEST_OF_MAX)
    suffix: str | None = None

    @property
    def logprob_alternatives(self) -> int | None:
        return self.logprobs

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
