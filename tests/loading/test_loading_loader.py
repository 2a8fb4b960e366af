"""The loader's tensors: bit-exact copies of what safetensors reads, views into one allocation.

Why bit-exact and not `allclose`: the loader reinterprets raw bytes, so one byte in the
wrong place (a piece read at the wrong offset, an alignment pad counted as data) would
be a wrong weight, not a rounding difference. The pieces are made small here, so every
file spans many pieces, some files end inside one, and the threads finish out of order.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sllm.loading.index import CheckpointFormatError, read_index
from sllm.loading.pool import ALIGNMENT, HostPool, plan, read_files

torch = pytest.importorskip("torch", reason="the loader's tensors need the torch extra")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sllm.loading.loader import load_checkpoint  # noqa: E402  (needs torch)

SMALL_PIECE = ALIGNMENT  # many pieces per file, so the parallel reads are exercised


def _as_bytes(tensor):
    return tensor.contiguous().view(torch.uint8) if tensor.dtype != torch.bool else tensor


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    generator = torch.Generator().manual_seed(7)
    first = {
        "embed.weight": torch.randn(300, 17, generator=generator).to(torch.bfloat16),
        "layer.0.weight": torch.randn(33, 65, generator=generator),
        "layer.0.half": torch.randn(5, 7, generator=generator).to(torch.float16),
        "positions": torch.arange(1001, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "bytes": torch.randint(0, 255, (4099,), dtype=torch.uint8, generator=generator),
    }
    second = {"head.weight": torch.randn(129, 31, generator=generator, dtype=torch.float64)}
    paths = [tmp_path / "model-00001.safetensors", tmp_path / "model-00002.safetensors"]
    safetensors_torch.save_file(first, paths[0], metadata={"format": "pt"})
    safetensors_torch.save_file(second, paths[1])
    return paths


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("threads", [1, 4])
def test_tensors_are_bit_exact_views_into_one_allocation(shards, threads, direct) -> None:
    loaded = load_checkpoint(shards, threads=threads, direct=direct)
    expected = {}
    for path in shards:
        expected |= safetensors_torch.load_file(path)
    assert set(loaded.tensors) == set(expected)
    for name, tensor in expected.items():
        ours = loaded.tensors[name]
        assert (ours.dtype, ours.shape) == (tensor.dtype, tensor.shape), name
        assert torch.equal(_as_bytes(ours), _as_bytes(tensor)), name
    storages = {tensor.untyped_storage().data_ptr() for tensor in loaded.tensors.values()}
    assert len(storages) == 1  # one allocation, every tensor a view into it
    assert loaded.nbytes == sum(-(-path.stat().st_size // ALIGNMENT) * ALIGNMENT for path in shards)


def test_small_pieces_read_every_byte_of_every_file_in_place(shards) -> None:
    placements, total = plan(shards)
    pool = HostPool()
    memory = pool.reserve(total)
    memory[:] = b"\xff" * len(memory)
    read_files(placements=placements, into=memory, threads=3, chunk_bytes=SMALL_PIECE)
    for placement in placements:
        at = placement.pool_offset
        assert bytes(memory[at : at + placement.file_bytes]) == placement.path.read_bytes()


def test_the_pool_is_allocated_once_and_reused() -> None:
    pool = HostPool()
    first = pool.reserve(10_000)
    second = pool.reserve(5_000)
    assert pool.allocations == 1
    assert len(first) >= 10_000 and len(second) >= 5_000
    pool.reserve(3 * ALIGNMENT + 10_000)
    assert pool.allocations == 2  # grown only when a larger model comes


def test_a_chunk_that_breaks_alignment_is_refused(shards) -> None:
    placements, total = plan(shards)
    with pytest.raises(ValueError, match="multiple of 4096"):
        read_files(placements=placements, into=HostPool().reserve(total), chunk_bytes=1000)


def _file_with_header(path: Path, header: object, data: bytes = b"") -> Path:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_a_damaged_header_names_every_problem(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
        "c": {"dtype": "F32", "shape": [4], "data_offsets": [0, 400]},
        "d": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
        "e": "not an object",
    }
    path = _file_with_header(tmp_path / "bad.safetensors", header, data=b"\0" * 16)
    with pytest.raises(CheckpointFormatError) as raised:
        read_index(path)
    message = str(raised.value)
    for expected in ("a: unknown dtype", "b: shape", "c: data_offsets", "d: 8 bytes", "e: not"):
        assert expected in message


def test_overlapping_tensors_are_refused(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    path = _file_with_header(tmp_path / "overlap.safetensors", header, data=b"\0" * 12)
    with pytest.raises(CheckpointFormatError, match="a and b overlap"):
        read_index(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01\x02", struct.pack("<Q", 1 << 40) + b"{}", struct.pack("<Q", 2) + b"[]"],
    ids=["empty", "short", "huge-header", "not-an-object"],
)
def test_a_file_that_is_not_safetensors_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=r"broken\.safetensors"):
        read_index(path)
