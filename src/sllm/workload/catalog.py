"""A catalog of real open LLMs and their checkpoint sizes, for simulation.

Why: the cost of a cold start is the checkpoint size divided by the bandwidth of the tier that
holds it, so a simulated fleet needs realistic, varied sizes: a 1B model loads about 57 times
faster than a 70B one, and a placement policy that ignores this looks better or worse than it is.

Sizes are the parameter count times 2 bytes (bf16), the way these checkpoints are published.
Parameter counts are the totals reported on the models' cards on Hugging Face, to three
significant figures, which is why a "7B" model is 6.74B or 7.24B: the real counts are a little
more or less than the names say. File metadata (safetensors headers, tokenizer, config) adds
well under 0.1% and is ignored.

Not handled yet: quantized checkpoints (int8, int4, fp8), LoRA adapters that share a base
model, mixture-of-experts models, and per-model GPU memory beyond the weights (KV cache,
activations); the simulator's cost model owns those.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_PARAM_BF16 = 2


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model as the simulator sees it: a name, its parameter count in billions, and its
    checkpoint size in bytes."""

    name: str
    params_b: float
    size_bytes: int
    gpus: int = 1
    keep_alive_s: float | None = None


def bf16_model(name: str, params_b: float) -> ModelSpec:
    """A `ModelSpec` whose size is ``params_b * 1e9 * 2`` bytes (bf16)."""
    return ModelSpec(name, params_b, round(params_b * 1e9) * BYTES_PER_PARAM_BF16)


# Smallest to largest. `default_catalog` takes them in this order, so a small fleet is made of
# small models; pass your own list for a different mix.
BASE_CATALOG: tuple[ModelSpec, ...] = (
    bf16_model("llama-3.2-1b", 1.24),
    bf16_model("llama-3.2-3b", 3.21),
    bf16_model("llama-2-7b", 6.74),
    bf16_model("mistral-7b", 7.24),
    bf16_model("llama-3.1-8b", 8.03),
    bf16_model("llama-2-13b", 13.0),
    bf16_model("qwen2.5-14b", 14.7),
    bf16_model("qwen2.5-32b", 32.5),
    bf16_model("codellama-34b", 33.7),
    bf16_model("llama-2-70b", 69.0),
    bf16_model("llama-3.1-70b", 70.6),
)


def default_catalog(num_models: int) -> list[ModelSpec]:
    """`num_models` distinct models.

    The first ones are `BASE_CATALOG` in order; beyond it the sizes cycle again as fine-tuned
    variants named ``<base>-ft1``, ``<base>-ft2``, ... (same size as the base), which is what a
    multi-tenant service hosting many fine-tunes of a few base models looks like.
    """
    if num_models < 0:
        raise ValueError(f"num_models must be >= 0, got {num_models!r}")
    specs: list[ModelSpec] = []
    for i in range(num_models):
        cycle, slot = divmod(i, len(BASE_CATALOG))
        base = BASE_CATALOG[slot]
        if cycle == 0:
            specs.append(base)
        else:
            specs.append(ModelSpec(f"{base.name}-ft{cycle}", base.params_b, base.size_bytes))
    return specs
