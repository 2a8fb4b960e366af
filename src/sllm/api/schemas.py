"""OpenAI-compatible request and response bodies, validated with pydantic.

Only the fields this platform honours are declared; OpenAI clients send more (``user``,
``logprobs`` at their defaults, ...), so unknown fields are accepted and ignored rather
than failing a real client. A value out of range (``temperature`` 5, ``max_tokens`` 0,
``n`` 3) is a 400 with the field named, in OpenAI's error format.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The longest completion one request may ask for; a bound so a typo cannot pin a slot.
MAX_TOKENS_LIMIT = 32_768
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for legacy completions
STOP_SEQUENCES_MAX = 4  # as OpenAI allows


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=96)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > STOP_SEQUENCES_MAX:
            raise ValueError(f"at most {STOP_SEQUENCES_MAX} stop sequences")
        return value

    @property
    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def output_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)

    @property
    def prompt_chars(self) -> int:
        return sum(len(message.content) for message in self.messages)


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

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
