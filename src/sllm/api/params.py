"""Every OpenAI request parameter, in one table: who honours it, and the refusal when nobody does.

A new user's OpenAI client may send any parameter of the chat and completions APIs. Each
one here is either honoured, or refused with a 400 that names it; none is silently
dropped (a request for JSON output must not come back as plain text with a 200).

- `PARAMETERS` maps each request field the schemas declare (`sllm.api.schemas`) to what
  carries it: `FRONT_DOOR` for the fields the front door itself handles (the model, the
  messages or prompt, streaming, ``n`` = 1, ``user``), or the engine capability it needs.
  A capability that a `GenerationParams` field carries has that field's name
  (``max_completion_tokens`` needs ``max_tokens``); the others (``logprobs``, ``tools``,
  ...) are named after themselves, and an engine that honours one declares it in its
  `honoured_params` (`sllm.engines.base`).
- `refusal` checks a validated body against the model's engine, before the request is
  placed: a field given with a value other than its default that the engine does not
  honour is a 400 ``unsupported_parameter`` naming it.
- `NOT_SUPPORTED` lists the OpenAI parameters that no engine here could honour (audio,
  stored completions, service tiers, ...): the schemas do not declare them, and
  `sllm.api.errors.invalid_request` names them as unsupported rather than unknown. Any
  other undeclared field is a typo, refused as ``unknown_parameter``.

This module imports only the standard library and the schemas' types for checking.

Not handled yet: no engine here returns tool calls or log probabilities, so ``tools`` and
``logprobs`` are refused everywhere; an engine that honours them needs the answer's shape
for them too (`sllm.api.sse`).
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
    "n": FRONT_DOOR,  # one choice per request: the schema allows only 1
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


def asked(body: ChatCompletionRequest | CompletionRequest) -> list[str]:
    """The fields `body` gives with a value other than the default (so the client asks for
    something), in the schema's order."""
    fields = type(body).model_fields
    given = body.model_fields_set
    return [
        name
        for name in fields
        if name in given
        and getattr(body, name) is not None
        and getattr(body, name) != fields[name].default
    ]


def refusal(
    body: ChatCompletionRequest | CompletionRequest,
    *,
    engine: str,
    honoured: frozenset[str],
) -> ApiError | None:
    """The 400 for the first field of `body` that the model's `engine` does not honour
    (`honoured`: its `honoured_params`), or for ``stream_options`` without streaming; None
    when the request can run."""
    if body.stream_options is not None and not body.stream:
        return ApiError(
            400,
            "stream_options is only allowed with stream: true",
            code="invalid_request",
            param="stream_options",
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
    return None
