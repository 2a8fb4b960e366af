"""What every engine agrees on: the `Engine` protocol, its parameters and its deltas.

An engine carries out, for the models that name it in the catalog, what a worker's state
machine decides: it loads a model from the tier the state machine names, evicts it, turns
a prompt into tokens and streams a completion as `Delta`s. The worker reaches engines only
through this protocol and the registry (`sllm.engines.registry`), so a new engine (vLLM,
say) is one module and one registry entry; the worker, the catalog and the HTTP routes do
not change.

Each engine class declares, without being built:

- `execution`: where its work runs. ``EVENT_LOOP``: it never blocks, its loads and tokens
  are timers on the worker's event loop (the sim engine). ``THREAD``: it blocks (file
  reads, forward passes), so every call runs in a worker thread or a child process, and
  its `warm_up` (slow imports) runs once at start, off the loop;
- `honoured_params`: the request parameters it honours, by the names of
  `sllm.api.params.PARAMETERS` (the `GenerationParams` field that carries each, or the
  parameter's own name where no field carries it yet: ``logprobs``, ``tools``, ...); the
  front door refuses the others by name before placing a request;
- `needs_checkpoint`: its models have a source and checkpoint files, fetched into the
  worker's disk cache (`sllm.store`); without it a model is only a size;
- `serves_datagrams`: it can run a request that carries only token counts (the UDP data
  path of the simulator's and the experiments' clients), timed by the cost model;
- optionally, a classmethod ``option_problems(model, options) -> list[str]``: every
  problem with a catalog entry's engine ``options``, each naming the model; the catalog
  reports them when it is read, so a bad setting stops startup (the vllm engine's
  ``dtype``, ``max_model_len``, ...). An engine without it takes its options as given.

A built engine also says whether it keeps host copies (`keeps_host_copy`): whether a model
evicted from the GPU to host memory is still there. The worker's state machine counts a
host copy only where it is, so a report never claims a fast reload that is not there; and
it counts the copy at the bytes the engine measured (`host_copy_bytes`), not the catalog's
size, against the worker's host-memory budget.

An engine that batches requests across calls (vllm: continuous batching) does it behind
`generate`: each call adds one request to its running batch.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from sllm.core.tiers import Tier

if TYPE_CHECKING:
    from sllm.catalog import CatalogModel
    from sllm.core.cost import CostModel
    from sllm.store import ModelStore

# A prompt as the OpenAI API carries it: completion text, or chat messages.
Prompt = str | Sequence[Mapping[str, str]]
# A prompt's tokens before an engine counts them (about four characters a token in English).
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """Output constrained to JSON (OpenAI's ``response_format``): any JSON object when
    `schema` is None, else a document that matches the JSON schema `schema`."""

    schema: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Log probabilities: None asks for none; n for each token's, with its n most likely
    # alternatives (0: the sampled token's alone).
    logprobs: int | None = None
    response_format: JsonOutput | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token's text and log probability, and its most likely alternatives
    (text, log probability), most likely first."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """New text since the last delta; `finish_reason` is set on the last one.

    `completion_tokens` counts the tokens generated so far; `logprobs` has one entry per
    token of this delta when the request asked for them.
    """

    text: str
    finish_reason: str | None = None
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()


# The parameter a refusal names for the prompt: a completion's ``prompt``; the worker's
# chat route names its ``messages`` instead (`sllm.api.worker_api`).
PROMPT_PARAM = "prompt"


class RequestRefused(ValueError):
    """A request an engine cannot run as asked (a prompt longer than the model's context, a
    schema it cannot compile): the client's fault, answered 400 naming `param`, before any
    byte of the answer (`sllm.runtime.generation`)."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str = "invalid_request"
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def check_context(model: str, *, prompt_tokens: int, max_tokens: int, context: int | None) -> None:
    """Raise `RequestRefused` when a prompt of `prompt_tokens` leaves no room in `model`'s
    `context` (its longest sequence; None: not known, nothing to check). Only the prompt
    is checked: generation stops at the context's end with ``finish_reason`` ``length``."""
    if context is not None and prompt_tokens >= context:
        raise RequestRefused(
            f"the prompt is {prompt_tokens} tokens; model {model!r} takes at most {context} "
            f"tokens in all (prompt and completion, max_tokens={max_tokens})",
            param=PROMPT_PARAM,
            code="context_length_exceeded",
        )


class Execution(Enum):
    EVENT_LOOP = "event_loop"  # never blocks: timers on the worker's event loop
    THREAD = "thread"  # blocks: each call in a worker thread (or a child process)


@dataclass(frozen=True, slots=True)
class EngineContext:
    """What a worker hands an engine it builds."""

    catalog: Mapping[str, CatalogModel]
    cost: CostModel
    store: ModelStore | None  # the disk tier; None when no served model needs checkpoints


class Engine(Protocol):
    """What a worker asks of an engine. Every method may be called for any model of the
    catalog that names this engine; `generate` and `encode_prompt` only once it is loaded."""

    execution: ClassVar[Execution]
    honoured_params: ClassVar[frozenset[str]]
    needs_checkpoint: ClassVar[bool]
    serves_datagrams: ClassVar[bool]

    @classmethod
    def build(cls, context: EngineContext) -> Engine:
        """A new engine for one worker; cheap (slow set-up waits for `warm_up` or first use)."""
        ...

    def warm_up(self) -> None:
        """Slow one-time preparation (imports), so the first cold start does not time it.
        Blocking; called once, off the event loop, for ``THREAD`` engines."""
        ...

    async def load(self, model: str, source: Tier) -> None:
        """Bring `model` onto the GPU from `source`; raises when it cannot."""
        ...

    async def evict(self, model: str, source: Tier, destination: Tier) -> None:
        """Move `model` from `source` down to `destination`, as the state machine decided."""
        ...

    def keeps_host_copy(self) -> bool:
        """Whether an eviction from the GPU to host memory leaves the model there, ready
        to load fast. The worker's state machine counts a host copy only if so, so its
        reports never claim a host tier that is not there (vLLM without sleep mode shuts
        its engine down instead)."""
        ...

    def host_copy_bytes(self, model: str) -> int | None:
        """The bytes `model`'s host copy takes in host memory, measured; None where this
        engine holds no copy of it there or cannot measure one (the state machine then
        counts the catalog's size). Cheap: called on the event loop after an eviction."""
        ...

    async def encode_prompt(self, model: str, prompt: Prompt) -> Sequence[int]:
        """The prompt's token ids (their count is the request's prompt tokens)."""
        ...

    def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        batch_size: int,
    ) -> AsyncGenerator[Delta, None]:
        """Stream the completion; the last delta has a `finish_reason`. Closing the
        iterator early cancels the generation (between two tokens at the latest).
        `batch_size` is how many requests the worker was running when this one started."""
        ...


def prompt_text(prompt: Prompt) -> str:
    """The text of a prompt: itself, or its messages' contents joined."""
    return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)


def estimate_prompt_tokens(prompt: Prompt) -> int:
    """The prompt's tokens before an engine counts them: `CHARS_PER_TOKEN` a token, at least 1."""
    return max(1, len(prompt_text(prompt)) // CHARS_PER_TOKEN)
