"""bench/gpu_loading.py, run as on a lent GPU machine but with ``--device cpu``.

Everything but the device copies runs: the bit-exact check against safetensors, the
benchmark warm and cold, the targets and the JSON file. A CUDA request on a machine
without CUDA is refused with exit code 2, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the script loads torch tensors")
pytest.importorskip("safetensors")

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_loading.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


def test_the_script_runs_every_step_but_the_copies_on_cpu(tmp_path: Path) -> None:
    done = _run(
        "--device", "cpu", "--gb", "0.01", "--repeats", "1",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = list((tmp_path / "out").glob("loading-*.json"))
    assert len(written) == 1
    report = json.loads(written[0].read_text())
    assert report["bit_exact"]["ok"] and report["bit_exact"]["tensors"] > 0
    assert set(report["bench"]["modes"]) == {"warm", "cold"}
    assert set(report["targets"]) >= {"warm_met", "warm_over_safetensors_met", "cold_met"}


def test_asking_for_cuda_without_it_is_a_clear_refusal(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = _run("--cache-dir", str(tmp_path))
    assert done.returncode == 2
    assert "no CUDA device" in done.stdout
