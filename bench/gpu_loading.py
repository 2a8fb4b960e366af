"""The GPU check for checkpoint loading: run it on a lent GPU machine, record what it prints.

    PYTHONPATH=src python3 bench/gpu_loading.py --out results/   # on the GPU machine

What it does, in under 5 minutes on an H200-class host (no internet needed; torch and
safetensors are all it imports beyond the standard library):

1. **Correctness**: a small generated checkpoint is loaded by `sllm.loading` onto the
   device and compared, tensor by tensor and bit for bit, with ``safetensors.load_file``
   onto the same device.
2. **Speed**: ``sllm bench loading --device cuda`` on a generated checkpoint of `--gb`
   gigabytes (4 by default), warm and cold, three loads per contender.
3. **Targets** (issue 17): warm at least `GPU_WARM_TARGET_GBPS` and at least
   `GPU_WARM_OVER_SAFETENSORS` times safetensors in the same run; cold at least
   `GPU_COLD_OF_READ` of the disk's read bandwidth (the ``read`` contender, cold).

The JSON result (with the date, the device's name and the versions) goes to stdout and,
with `--out`, to ``loading-<date>.json`` there. `--device cpu` runs every step except the
device copies, which is how the tests check this script on machines without a GPU.
**No GPU figure has been measured with it yet.** The shared calibration data
(H200, 2026-11-28) is the anchor: 29.8 GB/s page-cache reads, 55 GB/s pinned copies,
1.8 GB/s cold disk reads, and safetensors at 5.7 GB/s warm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

GPU_WARM_TARGET_GBPS = 20.0
GPU_WARM_OVER_SAFETENSORS = 3.5
GPU_COLD_OF_READ = 0.9
DEFAULT_GB = 4.0  # 3 contenders x 3 loads x 2 modes at 1.8 GB/s cold: about 2 minutes
CHECK_LAYER_SHAPE = (512, 1024)  # the correctness checkpoint: small, a few MB


def check_bit_exact(folder: Path, device: str) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from sllm.bench.loading import ensure_checkpoint
    from sllm.loading.loader import load_checkpoint

    paths = ensure_checkpoint(folder, gb=0.01, log=print, layer_shape=CHECK_LAYER_SHAPE)
    ours = load_checkpoint([paths["safetensors"]], device=device).tensors
    theirs = load_file(paths["safetensors"], device=device)
    different = [
        name
        for name, tensor in theirs.items()
        if name not in ours
        or ours[name].device != tensor.device
        or not torch.equal(ours[name].view(torch.int16), tensor.view(torch.int16))
    ]
    return {"tensors": len(theirs), "different": different, "ok": not different}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    warm, cold = result["modes"]["warm"], result["modes"]["cold"]
    over_safetensors = warm["ours"]["GBps"] / warm["safetensors"]["GBps"]
    cold_of_read = cold["ours"]["GBps"] / cold["read"]["GBps"]
    return {
        "warm_GBps": warm["ours"]["GBps"],
        "warm_met": warm["ours"]["GBps"] >= GPU_WARM_TARGET_GBPS,
        "warm_over_safetensors": round(over_safetensors, 2),
        "warm_over_safetensors_met": over_safetensors >= GPU_WARM_OVER_SAFETENSORS,
        "cold_over_read": round(cold_of_read, 3),
        "cold_met": cold_of_read >= GPU_COLD_OF_READ,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--gb", type=float, default=DEFAULT_GB)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "sllm-gpu-loading"
    )
    parser.add_argument("--out", type=Path, help="folder for the JSON result")
    args = parser.parse_args(argv)

    import torch

    from sllm.bench.loading import run
    from sllm.loading.pool import READ_THREADS

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu to check everything but the copies")
        return 2
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    report: dict[str, Any] = {
        "date": today,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    report["bit_exact"] = check_bit_exact(args.cache_dir / "check", args.device)
    report["bench"] = run(
        gb=args.gb,
        cache_dir=args.cache_dir / "bench",
        repeats=args.repeats,
        device=args.device,
        threads=READ_THREADS,
        modes=["warm", "cold"],
        log=print,
    )
    report["targets"] = targets(report["bench"])
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"loading-{today}.json").write_text(text + "\n", encoding="utf-8")
    return 0 if report["bit_exact"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
