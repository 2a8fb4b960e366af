"""Workloads for the simulator and the experiments: who asks for what, when, and how much.

Why: comparing scheduling architectures and placement policies is only as good as the load
they are compared under. This package builds request streams from three independent parts:

- **when**: a Poisson or Gamma (bursty) arrival process (`arrivals`), or a replayed production
  trace in the Azure LLM 2023 format (`traces`);
- **which model**: the real multi-model popularity skew of a serverless inference service,
  derived from the Alibaba GenAI trace and shipped as counts only (`popularity`), over a
  catalog of real open-model checkpoint sizes (`catalog`);
- **how many tokens**: the trace's own counts or a documented default distribution (`tokens`).

`build_workload` (`compose`) puts them together. Everything is standard library only, so the
seed scripts run on a bare ``python3``, and deterministic: randomness comes from a
`random.Random` the caller seeds; nothing reads the clock or the global random.

Not handled yet: see each module's docstring. In short, no time-varying rates, no popularity
drift, no correlation between prompt and output length, at most 86 models with the real skew.
"""

from sllm.workload.arrivals import (
    Arrival,
    GammaProcess,
    PoissonProcess,
    gamma_times,
    poisson_times,
)
from sllm.workload.catalog import (
    BASE_CATALOG,
    BYTES_PER_PARAM_BF16,
    ModelSpec,
    bf16_model,
    default_catalog,
)
from sllm.workload.compose import ArrivalSource, TokenSource, build_workload
from sllm.workload.popularity import (
    ModelPopularity,
    PopularityFormatError,
    PopularityTable,
    derive_popularity,
    load_popularity,
    popularity_document,
    write_popularity_json,
)
from sllm.workload.tokens import LognormalTokens, TraceTokens
from sllm.workload.traces import RequestTrace, TraceFormatError, load_azure_trace

__all__ = [
    "BASE_CATALOG",
    "BYTES_PER_PARAM_BF16",
    "Arrival",
    "ArrivalSource",
    "GammaProcess",
    "LognormalTokens",
    "ModelPopularity",
    "ModelSpec",
    "PoissonProcess",
    "PopularityFormatError",
    "PopularityTable",
    "RequestTrace",
    "TokenSource",
    "TraceFormatError",
    "TraceTokens",
    "bf16_model",
    "build_workload",
    "default_catalog",
    "derive_popularity",
    "gamma_times",
    "load_azure_trace",
    "load_popularity",
    "poisson_times",
    "popularity_document",
    "write_popularity_json",
]
