"""What the front door tells about each request as it goes, for metrics.

Why it exists: the front door (`sllm.api.gateway.Gateway`) is the only place that sees a
request whole, from arrival to its last event, so time to first token, inter-token
latency, end-to-end time and token counts are measured there. It imports only the
standard library and this protocol; the Prometheus objects that implement it live in
`sllm.runtime.metrics` (`FrontDoorMetrics`), installed by `sllm.runtime.monitoring`. A
gateway without one (tests, the OpenAPI document) uses `UNOBSERVED`.

The calls, in the order a request makes them:

- `FrontDoorObserver.first_event`: the first event came from the worker that serves the
  request. It returns the function the gateway calls with the gap before each later run of
  events (the inter-token latency), so the per-event work is a clock read and that call;
- `FrontDoorObserver.usage`: the worker's final ``usage`` (prompt and generated tokens),
  for a request that completed;
- `FrontDoorObserver.finished`: once per request, however it ended, with its status.

Not handled yet: per-token timing inside a run of events that arrived together (a run is
timed once; see `FrontDoorObserver.first_event`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

EventGap = Callable[[float], None]


class FrontDoorObserver(Protocol):
    def first_event(
        self,
        *,
        model: str,
        first_event_s: float,
        queued_s: float,
        cold_start_s: float | None,
    ) -> EventGap:
        """The first event of the worker that serves the request came.

        `first_event_s` runs from the request's arrival at the front door (time to first
        token); `queued_s` from arrival until the request was sent to that worker
        (placement and the tries that failed before it); `cold_start_s` is set when the
        placement was a cold start: from the send to that first event, the wait for the
        model load included. Returns what to call with each later gap between runs of
        events, in seconds.
        """
        ...

    def usage(self, *, model: str, prompt_tokens: int, generation_tokens: int) -> None:
        """A completed request's token counts, as its worker reported them."""
        ...

    def finished(self, *, model: str | None, status: int, code: str | None, seconds: float) -> None:
        """The request ended with `status` after `seconds`; `model` is None unless it named
        a catalog model, `code` is the error's code when it ended in an error."""
        ...


def ignore_gap(seconds: float) -> None:
    pass


class Unobserved:
    """An observer that records nothing."""

    def first_event(
        self,
        *,
        model: str,
        first_event_s: float,
        queued_s: float,
        cold_start_s: float | None,
    ) -> EventGap:
        return ignore_gap

    def usage(self, *, model: str, prompt_tokens: int, generation_tokens: int) -> None:
        pass

    def finished(self, *, model: str | None, status: int, code: str | None, seconds: float) -> None:
        pass


UNOBSERVED = Unobserved()
