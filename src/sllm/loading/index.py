"""Where each tensor of a safetensors file lies: the index the loader builds its views from.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range inside the data section, then the data section.
That is already the layout a fast loader wants (one contiguous byte range per tensor,
an index of name, offset, shape and dtype), so the loader reads these files directly and
there is no format of our own, nor a converter (docs/loading.md says why, with figures).

Standard library only. A damaged or hostile header is a `CheckpointFormatError` naming
the file and every problem, never a crash or an unbounded allocation.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

# safetensors itself refuses headers above 100 MB; a header that large is damage, not a model.
MAX_HEADER_BYTES = 100_000_000
HEADER_LENGTH_BYTES = 8

# Bytes per element of each safetensors dtype (the format's own names).
ELEMENT_BYTES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


class CheckpointFormatError(ValueError):
    """A checkpoint file is not a valid safetensors file."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorEntry:
    """One tensor: its dtype, shape and byte range, counted from the start of the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointIndex:
    """The tensors of one file, and its total size (header included)."""

    path: Path
    file_bytes: int
    tensors: tuple[TensorEntry, ...]


def read_index(path: str | Path) -> CheckpointIndex:
    """Parse `path`'s header; raise `CheckpointFormatError` listing every problem."""
    path = Path(path)
    try:
        with open(path, "rb") as source:
            file_bytes = source.seek(0, 2)
            source.seek(0)
            prefix = source.read(HEADER_LENGTH_BYTES)
            if len(prefix) < HEADER_LENGTH_BYTES:
                raise CheckpointFormatError(f"{path}: shorter than a safetensors header")
            (header_bytes,) = struct.unpack("<Q", prefix)
            if header_bytes > min(MAX_HEADER_BYTES, file_bytes - HEADER_LENGTH_BYTES):
                raise CheckpointFormatError(
                    f"{path}: header length {header_bytes} does not fit the file"
                )
            header = source.read(header_bytes)
    except OSError as error:
        raise CheckpointFormatError(f"{path}: {error}") from error
    return parse_header(
        path=path,
        header=header,
        data_start=HEADER_LENGTH_BYTES + len(header),
        file_bytes=file_bytes,
    )


def parse_header(*, path: Path, header: bytes, data_start: int, file_bytes: int) -> CheckpointIndex:
    """The index of a header whose data section begins at `data_start` in a file of `file_bytes`."""
    try:
        document = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFormatError(f"{path}: header is not JSON: {error}") from error
    if not isinstance(document, dict):
        raise CheckpointFormatError(f"{path}: header is not a JSON object")
    problems: list[str] = []
    tensors: list[TensorEntry] = []
    for name, spec in document.items():
        if name == "__metadata__":
            continue
        entry = _entry(name=name, spec=spec, data_start=data_start, file_bytes=file_bytes)
        if isinstance(entry, str):
            problems.append(entry)
        else:
            tensors.append(entry)
    tensors.sort(key=lambda entry: entry.start)
    for previous, following in itertools.pairwise(tensors):
        if following.start < previous.end:
            problems.append(f"{previous.name} and {following.name} overlap")
    if problems:
        raise CheckpointFormatError(f"{path}: " + "; ".join(problems))
    return CheckpointIndex(path=path, file_bytes=file_bytes, tensors=tuple(tensors))


def _entry(*, name: str, spec: object, data_start: int, file_bytes: int) -> TensorEntry | str:
    if not isinstance(spec, dict):
        return f"{name}: not an object"
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in ELEMENT_BYTES:
        return f"{name}: unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        return f"{name}: shape {shape!r} is not a list of sizes"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(at, int) and not isinstance(at, bool) for at in offsets)
    ):
        return f"{name}: data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end or data_start + end > file_bytes:
        return f"{name}: data_offsets {offsets} fall outside the file"
    if end - begin != math.prod(shape) * ELEMENT_BYTES[dtype]:
        return f"{name}: {end - begin} bytes for shape {shape} of {dtype}"
    return TensorEntry(
        name=name, dtype=dtype, shape=tuple(shape), start=data_start + begin, end=data_start + end
    )
