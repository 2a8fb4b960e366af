"""Model popularity: the shipped Alibaba-derived table, the CSV derivation, and sampling."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from sllm.workload import (
    ModelPopularity,
    PopularityFormatError,
    PopularityTable,
    derive_popularity,
    load_popularity,
    popularity_document,
    write_popularity_json,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ALIBABA = REPO_ROOT / "../shared/traces/alibaba_genai_2026/lora_request_trace.csv"
SHIPPED = REPO_ROOT / "src/sllm/workload/data/alibaba_genai_model_popularity.json"

HEADER = (
    "gmt_create,predict_type,predict_status,exec_time_seconds,groupId,prompt_length,"
    "negative_prompt_length,num_images_per_prompt,num_inference_steps,"
    "checkpoint_model_version_id,num_lora\n"
)


def _row(model: str, status: str = "SUCCEED") -> str:
    return f"2024-11-15 16:57:50,TXT_2_IMG,{status},32.0,G0000,63.0,26.0,1.0,30.0,{model},0\n"


def test_shipped_table_has_the_real_skew() -> None:
    table = load_popularity()
    assert len(table.counts) == 86
    assert table.num_requests == 26_798 == sum(c for _, c in table.counts)
    counts = [c for _, c in table.counts]
    assert counts == sorted(counts, reverse=True)
    assert table.counts[0] == ("M0002", 8234)
    assert table.top_share(1) == pytest.approx(0.307, abs=0.001)
    assert table.top_share(5) == pytest.approx(0.705, abs=0.001)
    assert table.top_share(10) == pytest.approx(0.867, abs=0.001)
    assert "Alibaba" in table.source
    assert "research" in table.license


def test_shipped_table_matches_the_trace_readme() -> None:
    # The README's shares are over all 26,823 rows, counting the 25 rows with no model id.
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    rows = doc["num_requests"] + doc["requests_without_model"]
    assert rows == 26_823
    counts = [m["requests"] for m in doc["models"]]
    for k, share in [(1, 0.307), (5, 0.704), (10, 0.866), (50, 0.990)]:
        assert round(sum(counts[:k]) / rows, 3) == share


def test_shipped_table_is_derived_from_the_trace() -> None:
    if not ALIBABA.exists():
        pytest.skip(f"{ALIBABA} not present")
    assert list(load_popularity().counts) == derive_popularity(ALIBABA)
    assert load_popularity(ALIBABA).counts == load_popularity().counts


def test_derive_counts_sorts_and_skips_rows_without_a_model(tmp_path: Path) -> None:
    rows = [_row("MB"), _row("MA"), _row("MC"), _row("MC"), _row("", "PENDING"), _row("MC")]
    path = tmp_path / "requests.csv"
    path.write_text(HEADER + "".join(rows), encoding="utf-8")
    assert derive_popularity(path) == [("MC", 3), ("MA", 1), ("MB", 1)]
    table = load_popularity(path)
    assert table.num_requests == 5
    assert table.counts == (("MC", 3), ("MA", 1), ("MB", 1))


def test_write_and_reload_json(tmp_path: Path) -> None:
    csv_path = tmp_path / "requests.csv"
    csv_path.write_text(HEADER + _row("MA") + _row("MB") + _row("MB") + _row(""), "utf-8")
    out = tmp_path / "popularity.json"
    written = write_popularity_json(csv_path, out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["requests_without_model"] == 1
    assert doc["num_models"] == 2
    assert load_popularity(out) == written
    assert written.counts == (("MB", 2), ("MA", 1))


def test_derive_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(HEADER + _row("MA") + "2024-11-15 16:57:50,TXT_2_IMG\n", encoding="utf-8")
    with pytest.raises(PopularityFormatError, match=r"requests\.csv:3:") as info:
        derive_popularity(path)
    assert isinstance(info.value, ValueError)
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(PopularityFormatError, match="checkpoint_model_version_id"):
        derive_popularity(path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(num_requests=d["num_requests"] + 1),
        lambda d: d.update(num_models=3),
        lambda d: d.update(format_version=99),
        lambda d: d.update(models=[]),
        lambda d: d["models"].append({"id": d["models"][0]["id"], "requests": 1}),
        lambda d: d["models"].append({"id": "MZ", "requests": 0}),
        lambda d: d["models"].append({"id": "MZ", "requests": True}),
    ],
)
def test_bad_json_is_rejected(tmp_path: Path, mutate: object) -> None:
    doc = popularity_document([("MA", 3), ("MB", 1)])
    assert callable(mutate)
    mutate(doc)
    path = tmp_path / "popularity.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(PopularityFormatError):
        load_popularity(path)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "popularity.json"
    path.write_text('{\n  "format_version": 1,\n  oops\n}\n', encoding="utf-8")
    with pytest.raises(PopularityFormatError, match=r"popularity\.json:3:"):
        load_popularity(path)


def test_top_m_shares_are_renormalized() -> None:
    table = load_popularity()
    names = [f"model-{i}" for i in range(5)]
    pop = ModelPopularity.from_table(table, names)
    top5 = [c for _, c in table.counts[:5]]
    assert pop.names == tuple(names)
    assert pop.shares == pytest.approx([c / sum(top5) for c in top5])
    assert math.fsum(pop.shares) == pytest.approx(1.0)
    assert pop.share("model-0") == pytest.approx(8234 / sum(top5))
    assert pop.share("unknown") == 0.0
    assert ModelPopularity.from_table(table, ["only"]).shares == (1.0,)


def test_sampling_frequencies_follow_the_shares() -> None:
    pop = ModelPopularity.from_table(load_popularity(), [f"m{i}" for i in range(10)])
    rng = random.Random(11)
    n = 100_000
    seen = Counter(pop.sample(rng) for _ in range(n))
    for name, share in zip(pop.names, pop.shares, strict=True):
        sigma = math.sqrt(share * (1 - share) / n)
        assert abs(seen[name] / n - share) < 5 * sigma + 1e-9


def test_sampling_is_deterministic() -> None:
    pop = ModelPopularity.from_table(load_popularity(), [f"m{i}" for i in range(20)])
    rng_a, rng_b, rng_c = random.Random(5), random.Random(5), random.Random(6)
    a = [pop.sample(rng_a) for _ in range(200)]
    assert a == [pop.sample(rng_b) for _ in range(200)]
    assert a != [pop.sample(rng_c) for _ in range(200)]


def test_uniform_and_bad_arguments() -> None:
    assert ModelPopularity.uniform(["a", "b", "c", "d"]).shares == (0.25,) * 4
    table = PopularityTable("s", "l", 3, (("MA", 2), ("MB", 1)))
    with pytest.raises(ValueError, match="only 2"):
        ModelPopularity.from_table(table, ["a", "b", "c"])
    with pytest.raises(ValueError):
        ModelPopularity([], [])
    with pytest.raises(ValueError):
        ModelPopularity(["a", "a"], [1.0, 1.0])
    with pytest.raises(ValueError):
        ModelPopularity(["a", "b"], [1.0, 0.0])
    with pytest.raises(ValueError):
        ModelPopularity(["a"], [1.0, 2.0])
