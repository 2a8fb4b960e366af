"""`sllm bench loading` on a small generated checkpoint: every contender, both modes, the target.

The real run is 2 GB (docs/benchmarks.md); here the checkpoint is two small layers, so
the test checks the mechanics: the checkpoint is written once and reused, each
contender is timed warm and cold, the ratios are ours over each, and the CPU target is
computed from the same run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sllm.cli import build_parser

pytest.importorskip("torch", reason="the contenders load torch tensors")
pytest.importorskip("safetensors")

from sllm.bench import loading


def test_a_small_run_times_every_contender_warm_and_cold(tmp_path: Path) -> None:
    lines: list[str] = []
    options = {
        "gb": 0.001,
        "cache_dir": tmp_path,
        "repeats": 1,
        "device": "cpu",
        "threads": 2,
        "modes": ["warm", "cold"],
        "log": lines.append,
        "layer_shape": (256, 512),
    }
    result = loading.run(**options)
    warm, cold = result["modes"]["warm"], result["modes"]["cold"]
    # fastsafetensors and runai-model-streamer join where installed (not a dependency)
    anchors = set(loading.outside_anchors(Path("unused.safetensors"), device="cpu"))
    assert anchors <= {"fastsafetensors", "runai-model-streamer"}
    assert set(warm) == {"read", "ours", "ours-fresh", "safetensors", "torch.load"} | anchors
    assert set(cold) == set(warm) | {"ours-direct"}
    for row in [*warm.values(), *cold.values()]:
        assert row["seconds"] > 0 and row["GBps"] > 0
    assert warm["ours"]["ours_over_this"] == 1.0
    target = result["cpu_target"]
    assert target["met"] == (target["ours_warm_over_read_warm"] >= loading.CPU_TARGET_OF_READ)
    written = [line for line in lines if line.startswith("writing")]
    assert len(written) == 1
    loading.run(**options)
    assert len([line for line in lines if line.startswith("writing")]) == 1  # reused


def test_the_command_line_reaches_the_benchmark() -> None:
    args = build_parser().parse_args(["bench", "loading", "--gb", "0.5", "--modes", "warm"])
    assert (args.gb, args.modes, args.run) == (0.5, ["warm"], loading.main)
