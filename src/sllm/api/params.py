"""Every OpenAI request parameter, in one table: who honours it, and the refusal when nobody does.

A new user's OpenAI client may send any parameter of the chat and completions APIs. Each
one here is either honoured, or refused with a 400 that names it; none is silently
dropped (a request for JSON output must not come back as plain text with a 200).

- `PARAMETERS` maps each request field the schemas declare (`sllm.api.schemas`) to what
  carries it: `FRONT_DOOR` for the fields the front door itself handles (the model, the
  messages or prompt, streaming, ``user``), or the engine capability it needs (``n``
  above 1 needs ``n``, which no engine here declares: each makes one choice).
  A capability that a `GenerationParams` field carries has that field's name
  (``max_completion_tokens`` needs ``max_tokens``); the others (``logprobs``, ``tools``,
  ...) are named after themselves, and an engine that honours one declares it in its
  `honoured_params` (`sllm.engines.base`).
- `refusal` checks a validated body against the model's engine, before the request is
  placed: a field given with a value other than its default that the engine does not
  honour is a 400 ``unsupported_parameter`` naming it. Null, and the values in
  `ASKS_NOTHING` (OpenAI's default behaviour spelled out, such as ``response_format:
  {"type": "text"}``), ask for nothing and are never refused. A message's ``name`` is
  refused too (``messages.i.name``): the engines take a turn as role and text only.
- `NOT_SUPPORTED` lists the OpenAI parameters that no engine here could honour (audio,
  stored completions, service tiers, ...): the schemas do not declare them, and
  `sllm.api.errors.invalid_request` names them as unsupported rather than unknown. One
  given at a value that asks for nothing (null, ``store: false``, ``service_tier:
  "auto"``) is taken, as OpenAI takes it. Any other undeclared field is a typo, refused
  as ``unknown_parameter``.

This module imports only the standard library and the schemas' types for checking.

The vllm engine honours ``logprobs`` (with ``top_logprobs``) and ``response_format``
(``json_object``, ``json_schema``: `sllm.api.schemas` checks its shape); the sim and
transformers engines refuse them. ``top_logprobs`` without ``logprobs: true`` is a 400
naming it, as OpenAI answers.

Not handled yet: no engine here returns tool calls, so ``tools`` is refused everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sllm.api.errors import ApiError

if TYPE_CHECKING:
    from sllm.api.schemas import ChatCompletionRequest, CompletionRequest

# The carrier of the fields the front door handles itself, whatever the engine.
FRONT_DOOR = "front door"

# Each declared request field, and what carries it (see the module docstring).
PARAMETERS: dict[str, str] = {
    # The front door's own.
    "model": FRONT_DOOR,
    "messages": FRONT_DOOR,
    "prompt": FRONT_DOOR,
    "stream": FRONT_DOOR,
    "stream_options": FRONT_DOOR,
    "n": "n",  # several choices per request: no engine here declares it
    "user": FRONT_DOOR,  # an end user's id for abuse monitoring: nothing to run
    # Carried by a `GenerationParams` field of the same (or the named) capability.
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
    "seed": "seed",
    # Capabilities no `GenerationParams` field carries yet: refused unless an engine
    # declares them (and then gains the field that carries them).
    "top_k": "top_k",  # vLLM's extension
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "logit_bias": "logit_bias",
    "logprobs": "logprobs",
    "top_logprobs": "logprobs",
    "response_format": "response_format",
    "tools": "tools",
    "tool_choice": "tools",
    "parallel_tool_calls": "tools",
    "echo": "echo",
    "best_of": "best_of",
    "suffix": "suffix",
}

# OpenAI parameters of the chat and completions APIs that nothing here could honour: the
# platform's own services (audio, stored completions, moderation, prompt caches, service
# tiers, web search, reasoning models), and the deprecated function calling.
NOT_SUPPORTED: frozenset[str] = frozenset(
    {
        "audio",
        "function_call",
        "functions",
        "metadata",
        "modalities",
        "moderation",
        "prediction",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "store",
        "verbosity",
        "web_search_options",
    }
)

# Values besides null and the field's default that ask for nothing: OpenAI's default
# behaviour spelled out, as clients that send every field send it. For a `NOT_SUPPORTED`
# field, its value when the client does not use the feature.
ASKS_NOTHING: dict[str, tuple[object, ...]] = {
    "response_format": ({"type": "text"},),
    "store": (False,),
    "service_tier": ("auto", "default"),  # "default": standard processing, as here
    "modalities": (["text"],),
}


def asks_nothing(name: str, value: object) -> bool:
    """Whether `value`, given for the field `name`, asks for nothing beyond the default
    (null, or one of `ASKS_NOTHING`; the schema's own default is checked by `asked`)."""
    # Of the same type as well as equal: ``store: 0`` is not ``false`` (nor 1 ``true``).
    return value is None or any(
        type(value) is type(nothing) and value == nothing for nothing in ASKS_NOTHING.get(name, ())
    )


def asked(body: ChatCompletionRequest | CompletionRequest) -> list[str]:
    """The fields `body` gives with a value other than the default (so the client asks for
    something), in the schema's order."""
    fields = type(body).model_fields
    given = body.model_fields_set
    return [
        name
        for name in fields
        if name in given
        and not asks_nothing(name, getattr(body, name))
        and getattr(body, name) != fields[name].default
    ]


def refusal(
    body: ChatCompletionRequest | CompletionRequest,
    *,
    engine: str,
    honoured: frozenset[str],
) -> ApiError | None:
    """The 400 for the first field of `body` that the model's `engine` does not honour
    (`honoured`: its `honoured_params`), for a message's ``name``, or for
    ``stream_options`` without streaming; None when the request can run."""
    if body.stream_options is not None and not body.stream:
        return ApiError(
            400,
            "stream_options is only allowed with stream: true",
            code="invalid_request",
            param="stream_options",
        )
    for index, message in enumerate(getattr(body, "messages", ())):
        if message.name is not None:
            return ApiError(
                400,
                f"messages.{index}.name is not supported: a turn reaches the engine as its "
                "role and text only",
                code="unsupported_parameter",
                param=f"messages.{index}.name",
            )
    for name in asked(body):
        carrier = PARAMETERS[name]
        if carrier != FRONT_DOOR and carrier not in honoured:
            return ApiError(
                400,
                f"{name} is not supported by the {engine} engine of model {body.model}",
                code="unsupported_parameter",
                param=name,
            )
    if getattr(body, "top_logprobs", None) and body.logprob_alternatives is None:
        return ApiError(
            400,
            "top_logprobs needs logprobs: true",
            code="invalid_request",
            param="top_logprobs",
        )
    return None
