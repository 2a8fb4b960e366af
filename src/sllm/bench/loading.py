"""`sllm bench loading`: how fast a checkpoint becomes tensors, ours against the usual loaders.

**The checkpoint** is generated, never downloaded: `--gb` gigabytes (2 by default) of
random bf16 weights in Llama-like pieces (one 64 MiB matrix and one norm vector per
layer), written once as a safetensors file and as a ``torch.save`` file under
`--cache-dir` (the system's temporary folder by default, never the repository) and
reused by later runs; `--delete` removes them afterwards.

**The contenders**, each timed until its tensors are ready (on CPU: in host memory, ready
for a first forward pass; with ``--device cuda``: on the device, synchronized):

- ``read``: the bound. A parallel read of the same bytes into a reused pool
  (`sllm.loading.pool.read_files`, no tensors): the page-cache bandwidth when warm, the
  disk's when cold, measured in the same run;
- ``ours``: `sllm.loading.loader.load_checkpoint`, as the transformers engine calls it
  (on CPU into memory recycled from the previous load, `HostMemory`);
- ``ours-fresh``: the same into a fresh allocation (a worker's first load of that size);
- ``ours-direct``: the same with O_DIRECT (cold only: it bypasses the page cache);
- ``safetensors``: ``safetensors.torch.load_file``;
- ``torch.load``: ``torch.load(..., weights_only=True)`` of the same tensors;
- ``fastsafetensors`` (``fastsafe_open``, without GPUDirect Storage) and
  ``runai-model-streamer`` (``SafetensorsStreamer``), outside anchors, where installed
  (``pip install fastsafetensors runai-model-streamer``; neither is a dependency of the
  project): each returns its tensors, and the clock stops when every page is in memory.

Every contender's tensors have one element of every page read before the clock stops,
so one that maps the file lazily pays what a first forward pass would.

**Warm** is the file in the page cache (read once before timing). **Cold** drops the
files' pages before every timed load with ``posix_fadvise(DONTNEED)``, which needs no
root and touches no other process's cache (``echo 3 > /proc/sys/vm/drop_caches`` would
drop every engineer's cache on a shared machine).

**Reported**: per mode and contender, the median of `--repeats` loads in seconds and
GB/s, the ratio of ours to each contender, and the CPU target: ours warm at least
`CPU_TARGET_OF_READ` of ``read`` warm. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sllm.loading.pool import (
    READ_THREADS,
    HostMemory,
    HostPool,
    drop_from_page_cache,
    plan,
    read_files,
)

DEFAULT_GB = 2.0  # the size: larger than any CPU cache, small enough for 24 GB hosts
# One layer's matrix: 4096 x 8192 bf16 = 64 MiB, the size of a 7B model's MLP projections.
LAYER_SHAPE = (4096, 8192)
NORM_SIZE = 4096
SEED = 17
# The CPU target: ours warm within 10% of reading the bytes alone.
CPU_TARGET_OF_READ = 0.9
PAGE_BYTES = 4096  # one element read per page makes every page resident
SAFETENSORS_NAME = "checkpoint.safetensors"
TORCH_NAME = "checkpoint.pt"
MARKER_NAME = "checkpoint.json"


def ensure_checkpoint(
    folder: Path,
    *,
    gb: float,
    log: Callable[[str], None],
    layer_shape: tuple[int, int] = LAYER_SHAPE,
) -> dict[str, Path]:
    """The random checkpoint of `gb` gigabytes in `folder`, written unless already there."""
    import torch
    from safetensors.torch import save_file

    layers = max(1, round(gb * 1e9 / (layer_shape[0] * layer_shape[1] * 2)))
    paths = {"safetensors": folder / SAFETENSORS_NAME, "torch": folder / TORCH_NAME}
    marker = folder / MARKER_NAME
    wanted = {"layers": layers, "shape": list(layer_shape), "seed": SEED}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    log(f"writing a {layers}-layer random checkpoint in {folder}")
    generator = torch.Generator().manual_seed(SEED)
    tensors: dict[str, Any] = {}
    for layer in range(layers):
        raw = torch.randint(-(2**15), 2**15, layer_shape, dtype=torch.int16, generator=generator)
        tensors[f"layers.{layer}.weight"] = raw.view(torch.bfloat16)
        tensors[f"layers.{layer}.norm"] = torch.ones(NORM_SIZE, dtype=torch.bfloat16)
    save_file(tensors, paths["safetensors"])
    torch.save(tensors, paths["torch"])
    marker.write_text(json.dumps(wanted))
    return paths


def contenders(
    paths: dict[str, Path], *, device: str, threads: int, pool: HostPool
) -> dict[str, Callable[[], object]]:
    """Each contender: a call that loads the checkpoint and returns what it loaded."""
    import torch
    from safetensors.torch import load_file

    from sllm.loading.loader import load_checkpoint

    file = paths["safetensors"]
    placements, total = plan([file])
    memory = HostMemory(keep_free_bytes=2 * total)

    def read() -> object:
        memory = pool.reserve(total)
        read_files(placements=placements, into=memory, threads=threads)
        if device.startswith("cuda"):
            staged = torch.frombuffer(memory, dtype=torch.uint8)
            return staged.to(device, non_blocking=True)
        return memory

    def ours() -> object:
        loaded = load_checkpoint([file], device=device, threads=threads, pool=pool, memory=memory)
        return loaded.tensors

    def ours_fresh() -> object:
        return load_checkpoint([file], device=device, threads=threads, pool=pool).tensors

    def ours_direct() -> object:
        loaded = load_checkpoint(
            [file], device=device, threads=threads, pool=pool, memory=memory, direct=True
        )
        return loaded.tensors

    def safetensors() -> object:
        return load_file(file, device=device)

    def torch_load() -> object:
        return torch.load(paths["torch"], map_location=device, weights_only=True)

    return {
        "read": read,
        "ours": ours,
        "ours-fresh": ours_fresh,
        "ours-direct": ours_direct,
        "safetensors": safetensors,
        "torch.load": torch_load,
        **outside_anchors(file, device=device),
    }


def outside_anchors(file: Path, *, device: str) -> dict[str, Callable[[], object]]:
    """The other fast loaders on the package index, where installed (the module docstring)."""
    anchors: dict[str, Callable[[], object]] = {}
    if importlib.util.find_spec("fastsafetensors") is not None:

        def fastsafetensors() -> object:
            from fastsafetensors import fastsafe_open

            with fastsafe_open(filenames=[str(file)], nogds=True, device=device) as opened:
                return {name: opened.get_tensor(name) for name in opened.keys()}  # noqa: SIM118

        anchors["fastsafetensors"] = fastsafetensors
    if importlib.util.find_spec("runai_model_streamer") is not None:

        def runai_model_streamer() -> object:
            from runai_model_streamer import SafetensorsStreamer

            with SafetensorsStreamer() as streamer:
                streamer.stream_file(str(file), device=device)
                return dict(streamer.get_tensors())

        anchors["runai-model-streamer"] = runai_model_streamer
    return anchors


def touch(loaded: object) -> None:
    """Read one element of every page, so a loader that maps the file lazily
    (``safetensors.load_file`` on CPU) pays here what a first forward pass would pay."""
    import torch

    found: list[Any] = list(loaded.values()) if isinstance(loaded, dict) else [loaded]
    for item in found:
        tensor = torch.frombuffer(item, dtype=torch.uint8) if isinstance(item, memoryview) else item
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            continue
        flat = tensor.reshape(-1)
        flat[:: max(1, PAGE_BYTES // flat.element_size())].float().sum()


def time_load(load: Callable[[], object], *, device: str) -> float:
    started = time.perf_counter()
    loaded = load()
    touch(loaded)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    del loaded
    gc.collect()
    return elapsed


def run(
    *,
    gb: float,
    cache_dir: Path,
    repeats: int,
    device: str,
    threads: int,
    modes: list[str],
    log: Callable[[str], None],
    layer_shape: tuple[int, int] = LAYER_SHAPE,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Time every contender (or those in `only`, with ``ours`` always) in every mode."""
    paths = ensure_checkpoint(cache_dir, gb=gb, log=log, layer_shape=layer_shape)
    file_bytes = {name: path.stat().st_size for name, path in paths.items()}
    pool = HostPool()
    if device.startswith("cuda"):
        from sllm.loading.loader import pinned_pool

        pool = pinned_pool()
    loads = contenders(paths, device=device, threads=threads, pool=pool)
    result: dict[str, Any] = {
        "device": device,
        "threads": threads,
        "gb": round(file_bytes["safetensors"] / 1e9, 3),
        "repeats": repeats,
        "modes": {},
    }
    measured: dict[str, dict[str, float]] = {}  # bytes per second, by mode and contender
    for mode in modes:
        seconds: dict[str, list[float]] = {}
        names = [
            name
            for name in loads
            if (mode == "cold" or name != "ours-direct") and (not only or name in {*only, "ours"})
        ]
        if mode == "warm":
            for path in paths.values():
                path.read_bytes()  # into the page cache
        # Untimed: the pool and the recycled memory are touched once, as a worker's are
        # after its first load.
        time_load(loads["ours"], device=device)
        time_load(loads["read"], device=device)
        for _ in range(repeats):
            for name in names:  # interleaved, so a burst of noise hits every contender
                if mode == "cold":
                    for path in paths.values():
                        drop_from_page_cache(path)
                seconds.setdefault(name, []).append(time_load(loads[name], device=device))
        rates = {
            name: file_bytes["torch" if name == "torch.load" else "safetensors"]
            / statistics.median(times)
            for name, times in seconds.items()
        }
        rows = {
            name: {
                "seconds": round(statistics.median(seconds[name]), 3),
                # Three significant digits: a small checkpoint's rate would round to 0.0.
                "GBps": float(f"{rate / 1e9:.3g}"),
                "ours_over_this": round(rates["ours"] / rate, 2),
            }
            for name, rate in rates.items()
        }
        result["modes"][mode] = rows
        measured[mode] = rates
        log(f"{mode}: " + ", ".join(f"{n} {r['GBps']} GB/s" for n, r in rows.items()))
    result["bytes_per_second"] = measured
    if "warm" in result["modes"] and "read" in measured["warm"]:
        of_read = measured["warm"]["ours"] / measured["warm"]["read"]
        result["cpu_target"] = {
            "ours_warm_over_read_warm": round(of_read, 3),
            "target": CPU_TARGET_OF_READ,
            "met": of_read >= CPU_TARGET_OF_READ,
        }
    return result


def calibrate(
    *, gb: float, cache_dir: Path, device: str, log: Callable[[str], None]
) -> dict[str, float]:
    """This machine's tier bandwidths, measured with our loader, as `CostModel` fields.

    Host memory is a warm load (the checkpoint in the page cache), disk a cold one. The
    result is a COST_MODEL file's content: the worker and coordinator read it, and
    the shipped defaults (the shared H200 calibration data) remain for every other field.
    """
    result = run(
        gb=gb,
        cache_dir=cache_dir,
        repeats=3,
        device=device,
        threads=READ_THREADS,
        modes=["warm", "cold"],
        log=log,
        only=["ours"],
    )
    rates = result["bytes_per_second"]
    return {
        "host_bandwidth_Bps": round(rates["warm"]["ours"]),
        "disk_bandwidth_Bps": round(rates["cold"]["ours"]),
    }


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "loading",
        help="checkpoint loading: ours against safetensors and torch.load, warm and cold",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--gb", type=float, default=DEFAULT_GB, help="checkpoint size in GB")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sllm-bench-loading",
        help="where the generated checkpoint is written and reused",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed loads per contender")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda to time loads to the GPU")
    parser.add_argument("--threads", type=int, default=READ_THREADS, help="reading threads")
    parser.add_argument(
        "--modes", type=lambda text: text.split(","), default=["warm", "cold"], help="warm,cold"
    )
    parser.add_argument("--delete", action="store_true", help="delete the checkpoint after")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    def log(line: str) -> None:
        if not args.json:
            print(line, flush=True)

    try:
        result = run(
            gb=args.gb,
            cache_dir=args.cache_dir,
            repeats=args.repeats,
            device=args.device,
            threads=args.threads,
            modes=args.modes,
            log=log,
        )
    finally:
        if args.delete:
            for name in (SAFETENSORS_NAME, TORCH_NAME, MARKER_NAME):
                (args.cache_dir / name).unlink(missing_ok=True)
    print(json.dumps(result, indent=2 if args.json else None))
    return 0
