"""Token-count sources: how many prompt and output tokens each request carries.

Why: service time is prefill(prompt tokens) + decode(output tokens), so token counts drive
how long a worker stays busy. They come from a source of their own, independent of the arrival
process and of the model choice, so that each can be swapped alone:

- `TraceTokens` replays the counts of a loaded trace: in order (request i gets row i, cycling),
  which keeps each row's pair intact and, when the arrivals come from the same trace, keeps
  every request exactly as recorded; or resampled, with rows drawn uniformly by the Random.
- `LognormalTokens` is the default when there is no trace: prompt and output counts drawn
  independently from lognormal distributions fitted to the Azure LLM inference trace 2023
  (conversation service, 19,366 requests; maximum-likelihood fit of ln(tokens)):

  ======== ======== ========= ======= ===========================
  count    mu       sigma     cap     trace median / p99 / max
  ======== ======== ========= ======= ===========================
  prompt   6.63     0.99      16384   1020 / 4142 / 14050
  output   5.02     0.86      2048    129 / 601 / 1000
  ======== ======== ========= ======= ===========================

  The fit matches the geometric mean, not the median: the real prompt distribution is skewed
  left in log space, so the fitted median (about 760) is below the trace's (1020). Draws are
  rounded and clamped to ``[1, cap]``; the caps are common serving limits (context window,
  max new tokens).

Not handled yet: the correlation between prompt and output length (the lognormal draws are
independent), per-model token distributions, and shared prompt prefixes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sllm.workload.traces import RequestTrace

# ln(tokens) fitted on AzureLLMInferenceTrace_conv.csv; see the module docstring.
PROMPT_LOG_MU = 6.63
PROMPT_LOG_SIGMA = 0.99
PROMPT_TOKENS_MAX = 16384  # a common context window
OUTPUT_LOG_MU = 5.02
OUTPUT_LOG_SIGMA = 0.86
OUTPUT_TOKENS_MAX = 2048  # a common max_tokens limit


@dataclass(frozen=True, slots=True)
class LognormalTokens:
    """Independent lognormal prompt and output counts (defaults fitted to Azure conv 2023)."""

    prompt_log_mu: float = PROMPT_LOG_MU
    prompt_log_sigma: float = PROMPT_LOG_SIGMA
    prompt_max: int = PROMPT_TOKENS_MAX
    output_log_mu: float = OUTPUT_LOG_MU
    output_log_sigma: float = OUTPUT_LOG_SIGMA
    output_max: int = OUTPUT_TOKENS_MAX

    def __post_init__(self) -> None:
        if self.prompt_log_sigma < 0 or self.output_log_sigma < 0:
            raise ValueError("sigma must be >= 0")
        if self.prompt_max < 1 or self.output_max < 1:
            raise ValueError("token caps must be >= 1")

    def draw(self, rng: random.Random, index: int) -> tuple[int, int]:
        """``(prompt_tokens, output_tokens)`` for request `index` (unused: draws are i.i.d.)."""
        del index
        prompt = round(rng.lognormvariate(self.prompt_log_mu, self.prompt_log_sigma))
        output = round(rng.lognormvariate(self.output_log_mu, self.output_log_sigma))
        return (max(1, min(self.prompt_max, prompt)), max(1, min(self.output_max, output)))


@dataclass(frozen=True, slots=True)
class TraceTokens:
    """Token counts replayed from a trace: in order (cycling) or resampled by the Random."""

    trace: RequestTrace
    resample: bool = False

    def __post_init__(self) -> None:
        if len(self.trace) == 0:
            raise ValueError(f"trace {self.trace.path!r} has no requests")

    def draw(self, rng: random.Random, index: int) -> tuple[int, int]:
        """``(prompt_tokens, output_tokens)`` of row ``index % len(trace)``, or of a random
        row when `resample` is set."""
        n = len(self.trace)
        i = rng.randrange(n) if self.resample else index % n
        return (self.trace.prompt_tokens[i], self.trace.output_tokens[i])
