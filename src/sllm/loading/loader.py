"""Load a safetensors checkpoint as tensors that are views into one allocation per model.

The path, after ServerlessLLM's store (Fu et al., OSDI 2024, arXiv 2401.14351):

1. `sllm.loading.index` reads each file's header: every tensor's byte range.
2. The files are read in parallel chunks (`sllm.loading.pool.read_files`).
   - **On CPU** they are read straight into the model's own allocation, leased from the
     worker's `HostMemory` (recycled from models that are gone, so already faulted in),
     and each tensor is a view into it: no second copy, and the bytes the model holds in
     host memory are exactly the files' bytes (`LoadedCheckpoint.nbytes`).
   - **On CUDA** they are read into the worker's reusable host pool, pinned once, and
     each piece is copied to one device allocation as soon as it is in the pool, so the
     copies overlap the reads; each tensor is then a view into the device allocation.
     **Not measured yet**: no GPU was lent to the session that wrote this; `bench/gpu_loading.py`
     is the check to run when one is.
3. The tensors come back as a state dict, ready for ``load_state_dict(..., assign=True)``.

Needs torch (the ``torch`` extra). The vLLM engine reads through it too
(`sllm.engines.vllm_loader`). Not handled yet: a pool smaller than the model (a ring of
pieces, as the shared calibration data's 8 x 256 MB ring measured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllm.loading.index import CheckpointIndex, read_index
from sllm.loading.pool import READ_THREADS, HostMemory, HostPool, plan, read_files

# safetensors dtype names to torch's attribute names.
TORCH_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I16": "int16",
    "U16": "uint16",
    "F16": "float16",
    "BF16": "bfloat16",
    "I32": "int32",
    "U32": "uint32",
    "F32": "float32",
    "I64": "int64",
    "U64": "uint64",
    "F64": "float64",
}


@dataclass(slots=True, kw_only=True)
class LoadedCheckpoint:
    """A model's tensors, and the one allocation they view (kept alive with them)."""

    tensors: dict[str, Any]
    nbytes: int  # bytes of the checkpoint files the allocation holds
    memory: Any  # the host `memoryview` on CPU, the device byte tensor on CUDA


def checkpoint_files(folder: Path) -> list[Path]:
    """A model folder's safetensors files, in name order (shards in their order)."""
    return sorted(folder.glob("*.safetensors"))


def load_checkpoint(
    paths: Sequence[Path],
    *,
    device: str = "cpu",
    pool: HostPool | None = None,
    memory: HostMemory | None = None,
    threads: int = READ_THREADS,
    direct: bool = False,
) -> LoadedCheckpoint:
    """Read `paths` and return their tensors on `device` as views into one allocation.

    `pool` is the worker's reusable staging pool for device loads (pinned where CUDA is
    present; `pinned_pool` makes one). `memory` is where a CPU load's tensors live
    (without one, a fresh allocation, paid for at first touch).
    """
    indexes = [read_index(path) for path in paths]
    placements, total = plan([index.path for index in indexes])
    if not device.startswith("cuda"):
        host = memory if memory is not None else HostMemory(keep_free_bytes=0)
        memory_view = host.lease(total)
        read_files(placements=placements, into=memory_view, threads=threads, direct=direct)
        flat = _bytes_tensor(memory_view)
        tensors = _views(flat, indexes, [placement.pool_offset for placement in placements])
        return LoadedCheckpoint(tensors=tensors, nbytes=total, memory=memory_view)
    return _load_to_device(
        indexes=indexes,
        placements=placements,
        total=total,
        device=device,
        pool=pool or pinned_pool(),
        threads=threads,
        direct=direct,
    )


def pinned_pool() -> HostPool:
    """A host pool of page-locked memory, so host-to-device copies run asynchronously."""
    import torch

    def allocate(size: int) -> memoryview:
        pinned: Any = torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy()
        return memoryview(pinned)

    return HostPool(allocate=allocate)


def _load_to_device(
    *,
    indexes: Sequence[CheckpointIndex],
    placements: Sequence[Any],
    total: int,
    device: str,
    pool: HostPool,
    threads: int,
    direct: bool,
) -> LoadedCheckpoint:
    import torch

    staging = pool.reserve(total)
    staged = _bytes_tensor(staging)
    target = torch.empty(total, dtype=torch.uint8, device=device)
    stream = torch.cuda.Stream(device=device)  # type: ignore[no-untyped-call]

    def copy_piece(at: int, length: int) -> None:
        # Each piece is copied as soon as it is read; the copies queue on one stream.
        with torch.cuda.stream(stream):
            target[at : at + length].copy_(staged[at : at + length], non_blocking=True)

    read_files(
        placements=placements, into=staging, threads=threads, direct=direct, on_chunk=copy_piece
    )
    stream.synchronize()
    tensors = _views(target, indexes, [placement.pool_offset for placement in placements])
    return LoadedCheckpoint(tensors=tensors, nbytes=total, memory=target)


def _bytes_tensor(memory: memoryview) -> Any:
    import torch

    return torch.frombuffer(memory, dtype=torch.uint8)


def _views(flat: Any, indexes: Sequence[CheckpointIndex], bases: Sequence[int]) -> dict[str, Any]:
    import torch

    tensors: dict[str, Any] = {}
    for index, base in zip(indexes, bases, strict=True):
        for entry in index.tensors:
            raw = flat[base + entry.start : base + entry.end]
            dtype = getattr(torch, TORCH_DTYPES[entry.dtype])
            element = torch.empty((), dtype=dtype).element_size()
            if (base + entry.start) % element:
                raw = raw.clone()  # a misaligned tensor (no writer we know makes one): copied
            tensors[entry.name] = raw.view(dtype).reshape(entry.shape)
    return tensors
