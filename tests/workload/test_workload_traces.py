"""The Azure LLM 2023 trace loader: offsets, cuts, scaling, and errors that name the line."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from sllm.workload import RequestTrace, TraceFormatError, load_azure_trace

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURE_CONV = REPO_ROOT / "data/traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv"

SMALL = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 23:59:59.9000000,374,44
2023-11-16 23:59:59.9000001,396,109
2023-11-17 00:00:00.1000000,879,55
2023-11-17 00:00:10.1000000,91,16
"""


def _write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_small_trace_offsets_and_tokens(tmp_path: Path) -> None:
    trace = load_azure_trace(_write(tmp_path, SMALL))
    assert len(trace) == 4
    assert trace.offsets_s[0] == 0.0
    assert trace.offsets_s[1] == pytest.approx(1e-7, abs=1e-12)  # the 7th fractional digit
    assert trace.offsets_s[2] == pytest.approx(0.2, abs=1e-9)  # across midnight
    assert trace.offsets_s[3] == pytest.approx(10.2, abs=1e-9)
    assert trace.span_s == trace.offsets_s[3]
    assert trace.prompt_tokens == (374, 396, 879, 91)
    assert trace.output_tokens == (44, 109, 55, 16)


def test_time_scale_halves_offsets(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL)
    full = load_azure_trace(path)
    half = load_azure_trace(path, time_scale=0.5)
    assert half.offsets_s == pytest.approx([t / 2 for t in full.offsets_s])
    assert half.prompt_tokens == full.prompt_tokens


def test_limit_and_duration_cut(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL)
    assert len(load_azure_trace(path, limit=2)) == 2
    assert len(load_azure_trace(path, limit=0)) == 0
    assert len(load_azure_trace(path, duration_s=1.0)) == 3
    assert len(load_azure_trace(path, duration_s=1.0, limit=1)) == 1
    # the duration applies to scaled offsets: 10.2 s at half speed is 5.1 s
    assert len(load_azure_trace(path, duration_s=6.0, time_scale=0.5)) == 4


def test_column_order_extra_columns_bom_and_blank_lines(tmp_path: Path) -> None:
    text = (
        "\ufeffGeneratedTokens,Service,ContextTokens,TIMESTAMP\n"
        "5,code,10,2023-11-16 18:00:00.5\n"
        "\n"
        "6,code,11,2023-11-16 18:00:01\n"
    )
    trace = load_azure_trace(_write(tmp_path, text))
    assert trace.offsets_s == (0.0, 0.5)
    assert trace.prompt_tokens == (10, 11)
    assert trace.output_tokens == (5, 6)


def test_unsorted_rows_are_sorted(tmp_path: Path) -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:00:02.0000000,3,30\n"
        "2023-11-16 18:00:00.0000000,1,10\n"
        "2023-11-16 18:00:01.0000000,2,20\n"
    )
    trace = load_azure_trace(_write(tmp_path, text))
    assert trace.offsets_s == (0.0, 1.0, 2.0)
    assert trace.prompt_tokens == (1, 2, 3)
    assert trace.output_tokens == (10, 20, 30)


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        ("2023-11-16 18:15:47,12,x", "GeneratedTokens"),
        ("2023-11-16 18:15:47,-5,3", "ContextTokens"),
        ("2023-11-16 18:15:47,+5,3", "ContextTokens"),
        ("2023/11/16 18:15:47,5,3", "TIMESTAMP"),
        ("2023-02-30 18:15:47,5,3", "TIMESTAMP"),
        ("2023-11-16 25:15:47,5,3", "TIMESTAMP"),
        ("2023-11-16 18:15:47.1234567890,5,3", "TIMESTAMP"),
        ("2023-11-16 18:15:47,5", "fields"),
    ],
)
def test_malformed_line_error_names_file_and_line(
    tmp_path: Path, bad_row: str, reason: str
) -> None:
    text = SMALL.splitlines()
    text.insert(2, bad_row)  # file line 3
    path = _write(tmp_path, "\n".join(text) + "\n")
    with pytest.raises(TraceFormatError) as info:
        load_azure_trace(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line == 3
    assert f"{path}:3:" in str(err)
    assert reason in str(err)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", 1),
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:47,5\n", 1),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", 2),
    ],
)
def test_bad_header_or_empty_file(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(TraceFormatError) as info:
        load_azure_trace(_write(tmp_path, text))
    assert info.value.line == line


def test_bad_options(tmp_path: Path) -> None:
    path = _write(tmp_path, SMALL)
    for kwargs in ({"time_scale": 0.0}, {"time_scale": -1.0}, {"limit": -1}, {"duration_s": -1.0}):
        with pytest.raises(ValueError):
            load_azure_trace(path, **kwargs)


def test_trace_is_an_arrival_source(tmp_path: Path) -> None:
    trace = load_azure_trace(_write(tmp_path, SMALL))
    assert list(trace.times(random.Random(0), None)) == list(trace.offsets_s)
    assert list(trace.times(random.Random(0), 1.0)) == list(trace.offsets_s[:3])
    with pytest.raises(ValueError):
        RequestTrace("x", (0.0,), (1, 2), (3,))


def test_real_azure_conversation_trace() -> None:
    if not AZURE_CONV.exists():
        pytest.skip(f"{AZURE_CONV} not present")
    trace = load_azure_trace(AZURE_CONV)
    assert len(trace) == 19_366
    assert trace.offsets_s[0] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(trace.offsets_s))
    assert 55 * 60 < trace.span_s < 60 * 60  # "about 57 minutes": 18:15:46 .. 19:14:08
    assert (trace.prompt_tokens[0], trace.output_tokens[0]) == (374, 44)
