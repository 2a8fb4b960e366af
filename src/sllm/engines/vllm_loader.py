"""vLLM's model-loader extension point, served by `sllm.loading`: load format ``sllm``.

vLLM builds a model's network itself (its own layers, fused projections, its own
parameter layout) and asks a *model loader* for the weights. Registering one under a load
format name (vLLM's ``register_model_loader``) lets an engine started with
``load_format="sllm"`` read its checkpoint through this project's loader: every
safetensors file read in parallel 16 MiB pieces by 8 threads into one page-aligned host
allocation (`sllm.loading.loader.load_checkpoint`), then handed to the network's own
``load_weights``, which copies each tensor into its parameters (splitting and fusing as
its layout needs). vLLM's default loader reads the files tensor by tensor through a
memory map instead.

vLLM builds the network in its engine core, a process of its own (and on several GPUs,
in one process per GPU), started fresh, so the registration must run there: `register` is
a vLLM general plugin (this project's ``vllm.general_plugins`` entry point in
pyproject.toml), which vLLM runs in every process it starts. Nothing here runs without
vLLM installed.

Each load logs ``checkpoint_read`` (bytes, seconds, GB/s of the parallel read) and
``checkpoint_loaded`` (the seconds the network's ``load_weights`` took), in the worker's
log format (`sllm.logs.configure_from_environment`).

Not handled yet (it needs a GPU to measure): on CUDA the host allocation is not pinned,
so vLLM's per-tensor copies to the device are not asynchronous and do not overlap the
reads, unlike the transformers engine's device path (docs/loading.md).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any

from sllm.loading.loader import checkpoint_files, load_checkpoint
from sllm.logs import configure_from_environment, log_event

# The load format an engine names to read its checkpoint with this loader.
LOAD_FORMAT = "sllm"

log = logging.getLogger("sllm.engine.vllm.loader")


class CheckpointNotLoaded(ValueError):
    """A checkpoint this loader cannot load into the network, with every reason."""


def register() -> None:
    """Register the ``sllm`` load format in this process (vLLM calls it, as a plugin)."""
    from vllm.model_executor.model_loader import register_model_loader

    register_model_loader(LOAD_FORMAT)(loader_class())


@functools.cache
def loader_class() -> type[Any]:
    """The loader class, made on first use: it derives from vLLM's, which only a process
    with vLLM can import."""
    from vllm.model_executor.model_loader.base_loader import BaseModelLoader

    class SllmModelLoader(BaseModelLoader):  # type: ignore[misc]
        """Reads a local safetensors checkpoint with `sllm.loading` (the module docstring)."""

        def download_model(self, model_config: Any) -> None:
            """Nothing to fetch: the worker's store put the checkpoint on disk first."""

        def load_weights(self, model: Any, model_config: Any) -> None:
            load_into(model, Path(model_config.model))

    return SllmModelLoader


def load_into(network: Any, folder: Path) -> None:
    """Read `folder`'s safetensors files and copy them into `network`'s parameters.

    Raises `CheckpointNotLoaded` for a folder without safetensors files, and for
    parameters the checkpoint left unset (naming them), as vLLM's own loader does.
    """
    configure_from_environment()
    files = checkpoint_files(folder)
    if not files:
        raise CheckpointNotLoaded(
            f"{folder} has no safetensors files; load format {LOAD_FORMAT!r} reads only those"
        )
    began = time.perf_counter()
    checkpoint = load_checkpoint(files)
    read_s = time.perf_counter() - began
    log_event(
        log,
        logging.INFO,
        "checkpoint_read",
        folder=str(folder),
        files=len(files),
        bytes=checkpoint.nbytes,
        seconds=round(read_s, 4),
        GBps=round(checkpoint.nbytes / max(read_s, 1e-9) / 1e9, 3),
    )
    began = time.perf_counter()
    loaded = network.load_weights(iter(checkpoint.tensors.items()))
    del checkpoint  # the host allocation goes once the network holds its own copies
    if loaded is not None:
        unset = sorted({name for name, _ in network.named_parameters()} - set(loaded))
        if unset:
            shown = ", ".join(unset[:8]) + (f" and {len(unset) - 8} more" if len(unset) > 8 else "")
            raise CheckpointNotLoaded(f"the checkpoint in {folder} does not set {shown}")
    log_event(
        log,
        logging.INFO,
        "checkpoint_loaded",
        folder=str(folder),
        seconds=round(time.perf_counter() - began, 4),
    )
