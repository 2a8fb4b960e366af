"""The real engine: PyTorch and Hugging Face transformers, on CPU or CUDA.

It carries out a worker's actions for real:

- **load** brings a checkpoint to the device from the tier the state machine names:
  from the remote store it is first fetched into the disk cache (`sllm.store`), from
  disk its safetensors files are read by `sllm.loading` (parallel chunked reads into one
  allocation, every parameter a view into it; see docs/loading.md), from host memory
  the already-loaded model object is moved to the device;
- **evict** moves a model from the device to host memory (it keeps its weights on the
  CPU), drops it from host memory, or deletes its files from the disk cache, exactly as
  the state machine decided, so the tiers the worker reports are the truth;
- **generate** streams tokens one at a time with a KV cache, honouring ``max_tokens``,
  ``temperature``, ``top_p``, ``stop`` and ``seed``, and counts real tokens.

`TransformersEngine`'s methods block. The registry's ``transformers`` engine is
`Transformers`, which runs each of them in a worker thread (`sllm.engines.threaded`) and
builds the blocking engine, importing torch, on first use. A model is used by one
generation at a time per call; concurrent requests on one model each run their own
forward passes (no continuous batching yet).

Needs the optional extra ``torch`` (torch, transformers, safetensors, tokenizers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sllm.catalog import CatalogModel
from sllm.core.tiers import Tier
from sllm.engines.base import (
    Delta,
    Engine,
    EngineContext,
    Execution,
    GenerationParams,
    check_context,
)
from sllm.engines.threaded import InThread
from sllm.loading.loader import checkpoint_files, load_checkpoint, pinned_pool
from sllm.loading.pool import HostMemory, HostPool
from sllm.store import ModelStore


@dataclass(slots=True)
class _Loaded:
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class EngineError(RuntimeError):
    pass


def _read_network(
    folder: Path, *, dtype: Any, device: str, pool: HostPool | None, memory: HostMemory
) -> Any:
    """The model in `folder`, its parameters views into the loader's one allocation.

    A folder without safetensors files (an old ``pytorch_model.bin``) is read by
    transformers itself.
    """
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    files = checkpoint_files(folder)
    if not files:
        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    config = AutoConfig.from_pretrained(folder)
    loaded = load_checkpoint(files, device=device, pool=pool, memory=memory)
    model_class: Any = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    # No name and a state dict: transformers builds the model around our tensors.
    return model_class.from_pretrained(None, config=config, state_dict=loaded.tensors, dtype=dtype)


class TransformersEngine:
    """Loads, evicts and runs transformers causal LMs."""

    def __init__(
        self, catalog: Mapping[str, CatalogModel], store: ModelStore, device: str | None = None
    ) -> None:
        import torch

        # transformers is a lazy module, and two threads that import from it at once race:
        # one may find a submodule half imported ("cannot import name 'AutoTokenizer'").
        # Everything the engine uses is imported here, once, while `InThread` holds its
        # build lock, so later calls from any thread find it imported.
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: F401

        self.catalog = catalog
        self.store = store
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._device_models: dict[str, _Loaded] = {}
        self._host_models: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        # The staging pool for device loads: allocated (and pinned) on the first load, reused.
        self._pool = pinned_pool() if self.device.startswith("cuda") else None
        # Where CPU loads' tensors live. Memory of models that are gone is kept (already
        # faulted in) up to the largest checkpoint of the catalog, so any next load reuses it.
        largest = max((sum(f.size for f in m.files) for m in catalog.values()), default=0)
        self._memory = HostMemory(keep_free_bytes=largest)

    # -- tiers -----------------------------------------------------------------------

    def load(self, name: str, source: Tier) -> None:
        """Bring `name` onto the device from `source` (blocking)."""
        import torch
        from transformers import AutoTokenizer

        model = self.catalog[name]
        with self._lock:
            held = self._host_models.pop(name, None)
        if held is None:
            folder = self.store.fetch(model)  # a no-op when the disk already has it
            dtype = getattr(torch, str(model.options.get("dtype", "float32")))
            network = _read_network(
                folder, dtype=dtype, device=self.device, pool=self._pool, memory=self._memory
            )
            network.train(False)  # inference mode: no dropout
            held = _Loaded(network, AutoTokenizer.from_pretrained(folder))
        held.model.to(self.device)
        with self._lock:
            self._device_models[name] = held

    def evict(self, name: str, source: Tier, destination: Tier) -> None:
        """Carry out the state machine's eviction of `name` from `source`."""
        with self._lock:
            if source == Tier.GPU:
                held = self._device_models.pop(name, None)
                if held is not None and destination == Tier.HOST:
                    held.model.to("cpu")
                    self._host_models[name] = held
            elif source == Tier.HOST:
                self._host_models.pop(name, None)
        if source == Tier.DISK:
            self.store.evict(self.catalog[name])
        if source == Tier.GPU and self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def host_copy_bytes(self, name: str) -> int | None:
        """The host memory `name`'s evicted network takes: every distinct storage its
        parameters and buffers view (one allocation when the loader built it, whatever its
        dtype became), counted once."""
        with self._lock:
            held = self._host_models.get(name)
        if held is None:
            return None
        storages: dict[int, int] = {}
        for tensor in [*held.model.parameters(), *held.model.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())

    def resident(self) -> dict[str, Tier]:
        with self._lock:
            tiers = dict.fromkeys(self._host_models, Tier.HOST)
            tiers.update(dict.fromkeys(self._device_models, Tier.GPU))
        return tiers

    # -- generation ------------------------------------------------------------------

    def _loaded(self, name: str) -> _Loaded:
        with self._lock:
            held = self._device_models.get(name)
        if held is None:
            raise EngineError(f"model {name!r} is not loaded")
        return held

    def encode_prompt(self, name: str, prompt: str | Sequence[Mapping[str, str]]) -> list[int]:
        """Token ids of a completion prompt, or of chat messages through the chat template.

        A tokenizer without a chat template gets a plain ``role: content`` transcript
        ending in ``assistant:``.
        """
        return encode_with(self._loaded(name).tokenizer, prompt)

    def generate(
        self,
        name: str,
        prompt_ids: list[int],
        params: GenerationParams,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Iterator[Delta]:
        """Stream the completion of `prompt_ids` as text deltas (blocking iterator)."""
        import torch

        held = self._loaded(name)
        tokenizer, network = held.tokenizer, held.model
        check_context(
            name,
            prompt_tokens=len(prompt_ids),
            max_tokens=params.max_tokens,
            context=getattr(network.config, "max_position_embeddings", None),
        )
        generator = torch.Generator(device="cpu")
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        eos = tokenizer.eos_token_id
        hold_back = max((len(s) for s in params.stop), default=1) - 1
        generated: list[int] = []
        emitted = 0
        finish = "length"
        cut_at_stop = False
        with held.lock, torch.inference_mode():
            inputs = torch.tensor([prompt_ids], device=self.device)
            cache_arg = _cache_argument(network)
            past = None
            for _ in range(params.max_tokens):
                if cancelled():
                    finish = "cancelled"
                    break
                output = network(input_ids=inputs, use_cache=True, **{cache_arg: past})
                past = getattr(output, "cache", None) or output.past_key_values
                token = _sample(output.logits[0, -1].float().cpu(), params, generator)
                if token == eos:
                    finish = "stop"
                    break
                generated.append(token)
                text = tokenizer.decode(generated, skip_special_tokens=True)
                cut = _stop_index(text, params.stop)
                if cut is not None:
                    if cut > emitted:
                        yield Delta(text[emitted:cut], completion_tokens=len(generated))
                    emitted = cut
                    finish, cut_at_stop = "stop", True
                    break
                safe = len(text) - hold_back if params.stop else len(text)
                if text.endswith("\ufffd"):  # half of a multi-byte character: wait
                    safe = min(safe, len(text) - 1)
                if safe > emitted:
                    yield Delta(text[emitted:safe], completion_tokens=len(generated))
                    emitted = safe
                inputs = torch.tensor([[token]], device=self.device)
            if generated and not cut_at_stop:  # release what was held back for stop strings
                text = tokenizer.decode(generated, skip_special_tokens=True)
                if len(text) > emitted:
                    yield Delta(text[emitted:], completion_tokens=len(generated))
        yield Delta("", finish_reason=finish, completion_tokens=len(generated))


class Transformers(InThread):
    """The registry's ``transformers`` engine: `TransformersEngine` in worker threads."""

    execution: ClassVar[Execution] = Execution.THREAD
    honoured_params: ClassVar[frozenset[str]] = frozenset(
        {"max_tokens", "temperature", "top_p", "stop", "seed"}
    )
    needs_checkpoint: ClassVar[bool] = True
    serves_datagrams: ClassVar[bool] = False

    @classmethod
    def build(cls, context: EngineContext) -> Transformers:
        store = context.store
        if store is None:
            raise ValueError("the transformers engine needs the worker's model store")
        return cls(lambda: TransformersEngine(context.catalog, store))

    def keeps_host_copy(self) -> bool:
        return True  # an evicted model's weights move to host memory (`evict`)

    def warm_up(self) -> None:
        """Build the engine, importing torch and transformers (several seconds of CPU);
        a load meanwhile waits for it rather than importing alongside."""
        self.blocking()


def encode_with(tokenizer: Any, prompt: str | Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a completion prompt, or of chat messages through `tokenizer`'s chat
    template; a tokenizer without one gets a plain ``role: content`` transcript ending in
    ``assistant:`` (the transformers and vllm engines agree on this)."""
    if isinstance(prompt, str):
        ids: list[int] = tokenizer(prompt)["input_ids"]
        return ids
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            list(prompt), tokenize=False, add_generation_prompt=True
        )
    else:
        lines = [f"{m['role']}: {m['content']}" for m in prompt]
        rendered = "\n".join([*lines, "assistant:"])
    chat_ids: list[int] = tokenizer(rendered)["input_ids"]
    return chat_ids


def _cache_argument(network: Any) -> str:
    """The forward() keyword for the KV cache: `cache` in new transformers, else the old name."""
    import inspect

    parameters = inspect.signature(network.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _stop_index(text: str, stops: Sequence[str]) -> int | None:
    found = [text.find(stop) for stop in stops if stop]
    hits = [index for index in found if index >= 0]
    return min(hits) if hits else None


def _sample(logits: Any, params: GenerationParams, generator: Any) -> int:
    """One token: greedy at temperature 0, else temperature and nucleus (top-p) sampling."""
    import torch

    if params.temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        keep = cumulative - sorted_probs < params.top_p  # always keeps the top token
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


if TYPE_CHECKING:  # mypy checks here that the class implements the protocol
    _IMPLEMENTS: type[Engine] = Transformers
