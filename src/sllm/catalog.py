"""The models every live process serves, by name.

Coordinator and workers must agree on the catalog: the coordinator estimates load times
from checkpoint sizes, the workers budget GPU memory with them. Until a catalog file
(MODEL_CATALOG) exists, both serve the first `SERVED_MODELS` entries of the default
catalog of real model sizes; any smaller workload's models are a prefix of it.
"""

from __future__ import annotations

from sllm.workload.catalog import ModelSpec, default_catalog

# Enough for every demo and test workload: 64 = the 11 base sizes and their fine-tunes.
SERVED_MODELS = 64


def served_catalog(count: int = SERVED_MODELS) -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in default_catalog(count)}
