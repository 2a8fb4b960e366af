"""Model popularity: which model each request asks for, with a real production skew.

Why: in a multi-model serverless service a few models take most requests and a long tail is
rarely used. That skew decides how often a request finds its model warm, so a cold-start study
with uniform popularity would measure the wrong thing. The skew here comes from a real
serverless inference service: the Alibaba cluster-trace-v2026-GenAI (GenTD26) request trace
(Stable Diffusion serving, 2024-11-15 .. 2024-12-08): 26,823 requests, of which 26,798 name one
of 86 base models; the other 25 were still PENDING with an empty model id (the trace's README
counts that empty id as an 87th model). Over the 26,798, the top model takes 30.7% of requests,
the top 5 take 70.5%, the top 10 86.7%, the top 50 99.1%.

The trace is licensed for research or study use and may not be redistributed, so the project
ships only derived per-model request counts, with attribution, in
``data/alibaba_genai_model_popularity.json``. `derive_popularity` computes those counts from
the original CSV: every request row that names a model counts, whatever its ``predict_status``
(a failed request was still demand for its model); rows with no model id are skipped.
To regenerate the shipped file from a local copy of the trace::

    PYTHONPATH=src python3 -c "from sllm.workload.popularity import write_popularity_json; \\
        write_popularity_json('lora_request_trace.csv', \\
        'src/sllm/workload/data/alibaba_genai_model_popularity.json')"

`ModelPopularity` maps M simulated model names onto the top-M shares of such a table
(renormalized to sum to 1; the first name gets the largest share) and samples one model per
request in O(log M), by bisection on the cumulative weights.

Not handled yet: popularity that drifts over time (the trace's mix changes from day to day),
per-model burstiness, and more than 86 models from the real table (a longer tail would need an
extrapolation, e.g. a Zipf fit, which we have not validated); `ModelPopularity.from_table`
raises instead of guessing.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

MODEL_COLUMN = "checkpoint_model_version_id"
FORMAT_VERSION = 1
DEFAULT_POPULARITY_FILE = "alibaba_genai_model_popularity.json"

SOURCE = (
    "Alibaba cluster-trace-v2026-GenAI (GenTD26), file lora_request_trace.csv, column "
    "checkpoint_model_version_id; https://github.com/alibaba/clusterdata. "
    "Cite: Lin et al., 'Understanding Diffusion Model Serving in Production: A Top-Down "
    "Analysis of Workload, Scheduling, and Resource Efficiency', ACM SoCC 2025."
)
LICENSE_NOTE = (
    "The Alibaba trace may be used for research or study purposes only and is not "
    "redistributed here. This file holds derived statistics only: the number of requests "
    "per (anonymized) base model id, computed by sllm.workload.popularity.derive_popularity."
)


class PopularityFormatError(ValueError):
    """A popularity JSON or request-trace CSV that does not have the expected shape."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PopularityTable:
    """Per-model request counts from a real trace, sorted by count (desc), then id."""

    source: str
    license: str
    num_requests: int
    counts: tuple[tuple[str, int], ...]

    def top_share(self, k: int) -> float:
        """Fraction of all requests that go to the `k` most popular models."""
        return sum(c for _, c in self.counts[:k]) / self.num_requests


def derive_popularity(csv_path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """Count requests per model in an Alibaba GenAI request-trace CSV.

    Returns ``(model id, request count)`` pairs sorted by count, descending (ties by id). Rows
    with an empty model id (requests still pending when the trace was cut) are skipped.
    Raises `PopularityFormatError` naming the file and line on a malformed file.
    """
    return _count_models(os.fspath(csv_path))[0]


def _count_models(path: str) -> tuple[list[tuple[str, int]], int]:
    """The sorted per-model counts, and how many rows had no model id."""
    counter: Counter[str] = Counter()
    without_model = 0
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        columns = [c.strip() for c in header] if header is not None else []
        if MODEL_COLUMN not in columns:
            raise PopularityFormatError(path, 1, f"missing column {MODEL_COLUMN!r} in header")
        index = columns.index(MODEL_COLUMN)
        try:
            for row in reader:
                if not row:
                    continue
                if index >= len(row):
                    raise PopularityFormatError(
                        path, reader.line_num, f"{len(row)} fields, no {MODEL_COLUMN}"
                    )
                model = row[index].strip()
                if model:
                    counter[model] += 1
                else:
                    without_model += 1
        except csv.Error as e:
            raise PopularityFormatError(path, reader.line_num, f"CSV error: {e}") from None
    if not counter:
        raise PopularityFormatError(path, reader.line_num, f"no request names a {MODEL_COLUMN}")
    return _sorted_counts(counter.items()), without_model


def _sorted_counts(items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))


def popularity_document(
    counts: Sequence[tuple[str, int]], requests_without_model: int = 0
) -> dict[str, Any]:
    """The JSON document shipped in ``data/``: attribution, license note and counts.

    ``num_requests`` is the sum of the per-model counts; ``requests_without_model`` (rows of
    the trace with an empty model id, not in any count) is kept for the record only.
    """
    ordered = _sorted_counts(counts)
    return {
        "format_version": FORMAT_VERSION,
        "source": SOURCE,
        "license": LICENSE_NOTE,
        "num_requests": sum(c for _, c in ordered),
        "requests_without_model": requests_without_model,
        "num_models": len(ordered),
        "models": [{"id": model, "requests": count} for model, count in ordered],
    }


def write_popularity_json(
    csv_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> PopularityTable:
    """Derive the counts from `csv_path` and write them as JSON to `out_path`.

    One model per line, so that a regenerated file diffs cleanly.
    """
    doc = popularity_document(*_count_models(os.fspath(csv_path)))
    models = doc.pop("models")
    head = json.dumps(doc, indent=2)[:-2]  # drop the closing "\n}"
    body = ",\n".join("    " + json.dumps(m) for m in models)
    text = f'{head},\n  "models": [\n{body}\n  ]\n}}\n'
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(text)
    return _table_from_document(json.loads(text), os.fspath(out_path))


def load_popularity(path: str | os.PathLike[str] | None = None) -> PopularityTable:
    """Load a popularity table.

    With no `path`, the shipped Alibaba GenAI table. A path ending in ``.csv`` is read as an
    Alibaba request trace and counted on the fly; anything else is read as a popularity JSON of
    the shipped shape.
    """
    if path is None:
        resource = resources.files("sllm.workload").joinpath("data", DEFAULT_POPULARITY_FILE)
        return _parse_json(resource.read_text(encoding="utf-8"), str(resource))
    name = os.fspath(path)
    if name.lower().endswith(".csv"):
        counts = derive_popularity(name)
        return PopularityTable(
            source=f"derived from {name}",
            license="",
            num_requests=sum(c for _, c in counts),
            counts=tuple(counts),
        )
    with open(name, encoding="utf-8") as f:
        return _parse_json(f.read(), name)


def _parse_json(text: str, name: str) -> PopularityTable:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PopularityFormatError(name, e.lineno, f"invalid JSON: {e.msg}") from None
    return _table_from_document(doc, name)


def _table_from_document(doc: Any, name: str) -> PopularityTable:
    if not isinstance(doc, dict):
        raise PopularityFormatError(name, None, "expected a JSON object")
    if doc.get("format_version") != FORMAT_VERSION:
        raise PopularityFormatError(
            name, None, f"unsupported format_version {doc.get('format_version')!r}"
        )
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise PopularityFormatError(name, None, "'models' must be a non-empty list")
    counts: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i, entry in enumerate(models):
        model = entry.get("id") if isinstance(entry, dict) else None
        count = entry.get("requests") if isinstance(entry, dict) else None
        if not isinstance(model, str) or not model or model in seen:
            raise PopularityFormatError(name, None, f"models[{i}]: missing or duplicate 'id'")
        if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
            raise PopularityFormatError(name, None, f"models[{i}]: 'requests' must be an int > 0")
        seen.add(model)
        counts.append((model, count))
    total = sum(c for _, c in counts)
    if doc.get("num_requests") != total:
        raise PopularityFormatError(
            name, None, f"num_requests {doc.get('num_requests')!r} != sum of requests {total}"
        )
    if "num_models" in doc and doc["num_models"] != len(counts):
        raise PopularityFormatError(
            name, None, f"num_models {doc['num_models']!r} != {len(counts)} entries in 'models'"
        )
    source, license_note = doc.get("source", ""), doc.get("license", "")
    if not isinstance(source, str) or not isinstance(license_note, str):
        raise PopularityFormatError(name, None, "'source' and 'license' must be strings")
    return PopularityTable(
        source=source,
        license=license_note,
        num_requests=total,
        counts=tuple(_sorted_counts(counts)),
    )


class ModelPopularity:
    """Samples the model of each request from fixed shares, in O(log M) per sample."""

    __slots__ = ("_cumulative", "_names", "_shares")

    def __init__(self, names: Sequence[str], weights: Sequence[float]) -> None:
        if not names:
            raise ValueError("need at least one model name")
        if len(names) != len(weights):
            raise ValueError(f"{len(names)} names but {len(weights)} weights")
        if len(set(names)) != len(names):
            raise ValueError("model names must be distinct")
        if any(not (math.isfinite(w) and w > 0) for w in weights):
            raise ValueError("weights must be positive finite numbers")
        running = list(itertools.accumulate(weights))
        total = running[-1]
        self._names = tuple(names)
        self._shares = tuple(w / total for w in weights)
        # Non-decreasing and ending at exactly 1.0, so every draw in [0, 1) lands on a name.
        self._cumulative = [r / total for r in running]

    @classmethod
    def from_table(cls, table: PopularityTable, model_names: Sequence[str]) -> ModelPopularity:
        """Give `model_names` the top-M shares of `table`, renormalized; the first name gets
        the largest share."""
        m = len(model_names)
        if m > len(table.counts):
            raise ValueError(
                f"{m} models but the popularity table has only {len(table.counts)}; "
                "a longer tail is not supported yet"
            )
        return cls(model_names, [count for _, count in table.counts[:m]])

    @classmethod
    def uniform(cls, model_names: Sequence[str]) -> ModelPopularity:
        """Every model equally popular (a baseline to compare the real skew against)."""
        return cls(model_names, [1.0] * len(model_names))

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    @property
    def shares(self) -> tuple[float, ...]:
        """Each name's probability, in the order of `names`; they sum to 1."""
        return self._shares

    def share(self, name: str) -> float:
        """The probability that a request asks for `name` (0.0 for an unknown name)."""
        try:
            return self._shares[self._names.index(name)]
        except ValueError:
            return 0.0

    def sample(self, rng: random.Random) -> str:
        """Draw one model name."""
        return self._names[bisect.bisect_right(self._cumulative, rng.random())]
