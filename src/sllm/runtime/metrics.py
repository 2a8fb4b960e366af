"""Prometheus metrics of the services, read from the core's own state when Prometheus scrapes.

Why it exists: the deployment guide's metrics (active workers, total requests, cache hit
rate, queue depth distribution, GPU utilization) already live in the core: the
coordinator's `Counters` and cluster view, the worker's `WorkerState`, the endpoint's
reject counter. Custom collectors read them at scrape time, so nothing is counted twice
and ``/metrics`` agrees with ``sllm status``. Only what the core does not keep, the
distributions of request latency and model load time, is recorded as it happens, by
`WorkerMetrics`, which the worker feeds with its `Finished` results and load completions.

Every service has its own `CollectorRegistry`, never the global one, so services that share
a process (the runtime tests do) never collide. Collectors run on the service's event loop
(the HTTP routes are ``async``), so they read the state without locks.

Names follow the Prometheus conventions: an ``sllm_`` prefix, base units in the name
(``_seconds``, ``_bytes``), ``_total`` on counters, labels for dimensions.

Coordinator (`register_coordinator`):

=====================================  =========  ============================================
``sllm_requests_total``                counter    placement decisions by ``model`` and
                                                  ``action`` (serve, cold_start, reject)
``sllm_cache_hits_total``              counter    warm placements: placed where the model
                                                  is (or is arriving) on the GPU; the seed's
                                                  "cache hit rate" is the warm placement rate
``sllm_cold_placements_total``         counter    cold placements: placed where the model
                                                  must be loaded
``sllm_worker_reports_total``          counter    worker reports received
``sllm_active_workers``                gauge      live workers in the view
``sllm_ready_workers``                 gauge      live workers that take work (readiness;
                                                  the "no ready workers" alert)
``sllm_worker_queue_depth``            gauge      queued requests per ``worker``, as reported
                                                  (the queue depth distribution)
``sllm_worker_slot_busy_ratio``        gauge      busy slots / slots per ``worker`` (0..1):
                                                  the seed's "GPU utilization" (the wire
                                                  field keeps that name); no GPU measures
                                                  it. It was ``sllm_gpu_utilization``.
``sllm_placement_policy_info``         gauge      1, labelled with the ``policy`` in use
=====================================  =========  ============================================

Worker (`register_worker`): ``sllm_request_ttft_seconds``, ``sllm_request_duration_seconds``
and ``sllm_request_queue_seconds`` (histograms of successful requests, by ``cold_start``:
whether the request waited for a model load, so their counts give the warm start rate),
``sllm_model_load_seconds`` (histogram by source ``tier``), ``sllm_worker_ready``,
``sllm_worker_queued_requests``, ``sllm_worker_running_requests``, ``sllm_worker_slots``,
``sllm_worker_model_memory_used_bytes`` and ``sllm_worker_model_memory_budget_bytes`` (the
scheduler's accounting of model bytes against its configured budget, not a measurement),
``sllm_worker_host_memory_used_bytes`` and ``sllm_worker_host_memory_budget_bytes`` (the
host-memory tier: copies as the engines measured them, against MODEL_HOST_GB)
and ``sllm_worker_requests_{accepted,completed,rejected,handed_back,migrated}_total``;
``sllm_worker_info`` maps a scrape target to its ``worker`` id. A worker names its own
gauges ``sllm_worker_*`` so that they never mix with the coordinator's view of the same
worker. Where NVML finds a GPU (`sllm.runtime.gpu`, the ``gpu`` extra),
``sllm_worker_gpu_memory_used_bytes{gpu}``, ``sllm_worker_gpu_memory_total_bytes{gpu}`` and
``sllm_worker_gpu_utilization_ratio{gpu}`` (`GpuCollector`); on a host without one, no GPU
metric at all.

Both: ``sllm_datagrams_rejected_total{reason}``, ``sllm_messages_unexpected_total{type}``
(valid messages of a type the service does not handle, dropped) and the ``process_*``
metrics.

A decentralized node registers `GossipMembersCollector` for ``sllm_gossip_members{state}``
and `ProbingCollector` for its probing counters (see their docstrings), plus whichever of
the above fit it.

The front door, on the coordinator and on each node. Kept from before, read at scrape
time (`FrontDoorCollector`): ``sllm_frontdoor_retries_total{reason}`` (the retries before
the first byte: ``worker_failed``, ``worker_busy``, ``worker_lost``) and
``sllm_frontdoor_requests_failed_total{reason}`` (requests that failed after placement:
``worker_lost``, ``stream_broken``, ``timeout``, ``no_worker``, ``overloaded``; see
`sllm.api.gateway`). Recorded as requests go (`FrontDoorMetrics`, the gateway's observer),
named after the vLLM metric each corresponds to, measured at the front door:

===============================================  ==========================================
``sllm_frontdoor_requests_total{model,status}``  every answer by HTTP status
                                                 (``vllm:request_success_total`` counts
                                                 only successes, by finish reason)
``sllm_frontdoor_requests_rejected_total``       429 and 503 by ``status`` and ``reason``
``sllm_frontdoor_prompt_tokens_total{model}``    ``vllm:prompt_tokens_total``
``sllm_frontdoor_generation_tokens_total``       ``vllm:generation_tokens_total``
``..._time_to_first_token_seconds{model}``       ``vllm:time_to_first_token_seconds``, from
                                                 arrival at the front door
``..._inter_token_latency_seconds{model}``       ``vllm:inter_token_latency_seconds``, per
                                                 run of events from the worker
``..._e2e_request_latency_seconds{model}``       ``vllm:e2e_request_latency_seconds``,
                                                 requests answered 200
``..._request_queue_time_seconds{model}``        ``vllm:request_queue_time_seconds``: here
                                                 placement and failed tries before the
                                                 worker that served it
``..._cold_start_wait_seconds{model}``           cold starts waited on (its ``_count``) and
                                                 their send-to-first-event time
===============================================  ==========================================

``model`` takes catalog names only; a request naming none is counted under `OTHER_MODEL`.
Per event of a stream the front door adds a clock read and one histogram observe (about
0.8 µs measured on the development machine).

Not handled yet: exemplars, and a per-token inter-token latency when several tokens arrive
in one read (they count as one gap).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sllm.api.observer import EventGap
from sllm.core.coordinator import Coordinator
from sllm.core.tiers import Tier
from sllm.core.worker import Finished, WorkerState
from sllm.runtime.gpu import Nvml
from sllm.runtime.monitoring import live_workers, ready_workers

if TYPE_CHECKING:
    from sllm.core.node import ProbingCounters
    from sllm.runtime.coordinator import CoordinatorServer
    from sllm.runtime.monitoring import FrontDoor
    from sllm.runtime.worker import WorkerServer

# Time to first token runs from ~20 ms (a warm small model) to minutes (a 70B model cold
# from the remote store behind a queue); the buckets cover that range at ~2.5x steps.
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)
# A whole request adds decode: up to a few minutes for long outputs.
DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0)
# Loads: ~0.1 s for a small model from host memory to minutes for a large one from remote.
LOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0, 600.0)
# Gaps between a stream's tokens: a decode step takes ~5 ms (a small model, small batch)
# to ~100 ms (a large model, full batch); a gap past a second is a stall worth seeing.
INTER_TOKEN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0)
# Source tiers a load can come from (a model already on the GPU is not loaded).
LOAD_TIERS: tuple[Tier, ...] = (Tier.HOST, Tier.DISK, Tier.REMOTE)

RejectCounts = Callable[[], Mapping[str, int]]


def tier_label(tier: Tier) -> str:
    return tier.name.lower()


class CoordinatorCollector(Collector):
    """The coordinator's counters and cluster view, read at scrape time."""

    def __init__(self, core: Coordinator, clock: Callable[[], float] = time.monotonic) -> None:
        self.core = core
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        counters = self.core.counters
        requests = CounterMetricFamily(
            "sllm_requests", "Placement decisions by model and action.", labels=("model", "action")
        )
        for (model, action), count in sorted(counters.by_action.items()):
            requests.add_metric((model, action), count)
        yield requests
        yield CounterMetricFamily(
            "sllm_cache_hits",  # the seed's name, kept: the warm placements
            "Warm placements: requests placed where the model is, or is arriving, on the GPU.",
            value=counters.warm_placements,
        )
        yield CounterMetricFamily(
            "sllm_cold_placements",
            "Cold placements: requests placed where the model must first be loaded.",
            value=counters.cold_placements,
        )
        yield CounterMetricFamily(
            "sllm_worker_reports", "Worker reports received.", value=counters.reports
        )
        yield CounterMetricFamily(
            "sllm_held_requests",
            "Requests that waited in the held queue (ADMISSION_HOLD) instead of a 429.",
            value=counters.held,
        )
        yield GaugeMetricFamily(
            "sllm_held_queue_length",
            "Requests in the held queue now, each waiting for the admission deadline to admit it.",
            value=len(self.core.held),
        )

        view = self.core.view
        now = self.clock()
        yield GaugeMetricFamily(
            "sllm_active_workers",
            "Workers that reported within WORKER_TIMEOUT.",
            value=live_workers(view, now),
        )
        yield GaugeMetricFamily(
            "sllm_ready_workers",
            "Live workers whose last report says they take work (what /readyz needs one of).",
            value=ready_workers(view, now),
        )
        depth = GaugeMetricFamily(
            "sllm_worker_queue_depth",
            "Requests queued on each live worker, as last reported.",
            labels=("worker",),
        )
        busy = GaugeMetricFamily(
            "sllm_worker_slot_busy_ratio",
            "Busy request slots over slots on each live worker, as last reported (0..1); "
            "the seed's GPU utilization, which no GPU measures.",
            labels=("worker",),
        )
        deadline = now - view.worker_timeout
        for entry in sorted(view.entries(), key=lambda entry: entry.worker_id):
            if entry.last_seen <= deadline:
                continue
            depth.add_metric((entry.worker_id,), entry.report.queue_depth)
            busy.add_metric((entry.worker_id,), entry.report.gpu_utilization)
        yield depth
        yield busy
        policy = GaugeMetricFamily(
            "sllm_placement_policy_info", "The placement policy in use.", labels=("policy",)
        )
        policy.add_metric((self.core.policy.name,), 1)
        yield policy


class RejectsCollector(Collector):
    """``sllm_datagrams_rejected_total{reason}`` from an endpoint's reject counter, and
    ``sllm_messages_unexpected_total{type}`` from its unexpected-message counter."""

    def __init__(self, counts: RejectCounts, unexpected: RejectCounts | None = None) -> None:
        self.counts = counts
        self.unexpected = unexpected

    def collect(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily(
            "sllm_datagrams_rejected",
            "Datagrams dropped by reason (oversized, bad encoding or fields, bad signature...).",
            labels=("reason",),
        )
        for reason, count in sorted(self.counts().items()):
            rejected.add_metric((reason,), count)
        yield rejected
        if self.unexpected is not None:
            unexpected = CounterMetricFamily(
                "sllm_messages_unexpected",
                "Valid messages dropped because this service does not handle their type.",
                labels=("type",),
            )
            for message_type, count in sorted(self.unexpected().items()):
                unexpected.add_metric((message_type,), count)
            yield unexpected


class WorkerCollector(Collector):
    """A worker's own queue, slots and totals, read from its `WorkerState` at scrape time."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        info = GaugeMetricFamily("sllm_worker_info", "This worker's id.", labels=("worker",))
        info.add_metric((state.worker_id,), 1)
        yield info
        gauges = (
            ("sllm_worker_ready", "1 while the worker accepts requests.", int(state.ready)),
            ("sllm_worker_queued_requests", "Requests waiting in the queue.", state.queue_depth),
            ("sllm_worker_running_requests", "Requests running now.", state.running),
            ("sllm_worker_slots", "Requests the worker runs at once.", state.resources.slots),
            (
                "sllm_worker_model_memory_used_bytes",
                "Bytes of the models loaded and loading, by the scheduler's accounting.",
                state.gpu_used,
            ),
            (
                "sllm_worker_model_memory_budget_bytes",
                "Bytes the scheduler lets models take on this worker (configured, not measured).",
                state.resources.gpu_bytes,
            ),
            (
                "sllm_worker_host_memory_used_bytes",
                "Bytes of model copies kept in host memory for fast reloads, as the engines "
                "measured them (the catalog's sizes where an engine cannot).",
                state.host_used,
            ),
            (
                "sllm_worker_host_memory_budget_bytes",
                "Bytes model copies may take in host memory (MODEL_HOST_GB).",
                state.resources.host_bytes,
            ),
        )
        for name, documentation, value in gauges:
            yield GaugeMetricFamily(name, documentation, value=value)
        counters = (
            ("accepted", "Requests queued.", state.accepted_total),
            ("completed", "Requests that finished successfully.", state.completed_total),
            ("rejected", "Requests refused at the door.", state.rejected_total),
            (
                "handed_back",
                "Requests given back to be placed elsewhere: their model's load found no room.",
                state.handed_back_total,
            ),
            (
                "migrated",
                "Running requests moved off to make room for a load; the rest ran elsewhere.",
                state.migrated_total,
            ),
        )
        for outcome, documentation, value in counters:
            yield CounterMetricFamily(f"sllm_worker_requests_{outcome}", documentation, value=value)


class WorkerMetrics:
    """Histograms fed by the live worker as requests finish and loads complete.

    It is the worker's ``observer`` (see `sllm.runtime.worker.WorkerObserver`).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "sllm_request_ttft_seconds",
            "Time to first token of successful requests, from arrival at the worker.",
            ("cold_start",),
            buckets=TTFT_BUCKETS_S,
            registry=registry,
        )
        self.duration = Histogram(
            "sllm_request_duration_seconds",
            "End-to-end time of successful requests, from arrival at the worker.",
            ("cold_start",),
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self.queue = Histogram(
            "sllm_request_queue_seconds",
            "Time successful requests waited for a slot (and their model).",
            ("cold_start",),
            buckets=TTFT_BUCKETS_S,
            registry=registry,
        )
        self.load = Histogram(
            "sllm_model_load_seconds",
            "Model load durations by the tier the checkpoint came from.",
            ("tier",),
            buckets=LOAD_BUCKETS_S,
            registry=registry,
        )
        # Every series exists from the start, so rate() and dashboards see zeros, not gaps.
        for cold in ("true", "false"):
            for histogram in (self.ttft, self.duration, self.queue):
                histogram.labels(cold_start=cold)
        for tier in LOAD_TIERS:
            self.load.labels(tier=tier_label(tier))

    def finished(self, result: Finished) -> None:
        if not result.ok:
            return  # failures are counted by reason elsewhere; their timings mean nothing
        cold = "true" if result.cold_start else "false"
        self.ttft.labels(cold_start=cold).observe(result.ttft_s)
        self.duration.labels(cold_start=cold).observe(result.e2e_s)
        self.queue.labels(cold_start=cold).observe(result.queue_s)

    def model_loaded(self, model: str, source: Tier, seconds: float) -> None:
        self.load.labels(tier=tier_label(source)).observe(seconds)


class GossipMembersCollector(Collector):
    """``sllm_gossip_members{state}``: members of a gossip view by state, read at scrape time.

    `counts` returns members by state, keyed by an enum (its lower-cased name is the label)
    or a string. A node registers it with its membership's counts::

        registry.register(GossipMembersCollector(node.membership.counts))

    which yields ``alive``, ``suspect``, ``dead`` and ``left`` series.
    """

    def __init__(self, counts: Callable[[], Mapping[Any, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        members = GaugeMetricFamily(
            "sllm_gossip_members", "Members of this node's gossip view by state.", labels=("state",)
        )
        for state, count in self.counts().items():
            label = state.name.lower() if isinstance(state, Enum) else str(state)
            members.add_metric((label,), count)
        yield members


class ProbingCollector(Collector):
    """A node's Sparrow-style probing, read from its core's counters at scrape time:
    ``sllm_node_probed_decisions_total`` (decisions made after asking candidates),
    ``sllm_node_probe_timeouts_total`` (of those, made at the timeout before every reply)
    and ``sllm_node_load_probes_total{purpose}`` (load probes sent: ``decision``, or
    ``fill`` for a report gossip never brought)."""

    def __init__(self, counters: Callable[[], ProbingCounters]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self.counters()
        yield CounterMetricFamily(
            "sllm_node_probed_decisions",
            "Placement decisions made after asking candidates for their load.",
            value=counters.decisions,
        )
        yield CounterMetricFamily(
            "sllm_node_probe_timeouts",
            "Probed decisions made at the probe timeout, before every candidate replied.",
            value=counters.timed_out,
        )
        probes = CounterMetricFamily(
            "sllm_node_load_probes",
            "Load probes sent, by purpose: before a decision, or to fill a missing report.",
            labels=("purpose",),
        )
        probes.add_metric(("decision",), counters.probes_sent)
        probes.add_metric(("fill",), counters.fill_probes)
        yield probes


class FrontDoorCollector(Collector):
    """The front door's retries and failures by reason, read from it at scrape time.

    `front_door` returns the service's front door, or None before it is installed (then
    the two counters are yielded empty).
    """

    def __init__(self, front_door: Callable[[], FrontDoor | None]) -> None:
        self.front_door = front_door

    def collect(self) -> Iterator[Metric]:
        front_door = self.front_door()
        retries = CounterMetricFamily(
            "sllm_frontdoor_retries",
            "Requests placed again before their first byte, by reason.",
            labels=("reason",),
        )
        failed = CounterMetricFamily(
            "sllm_frontdoor_requests_failed",
            "Requests that failed after placement, by reason.",
            labels=("reason",),
        )
        if front_door is not None:
            for reason, count in sorted(front_door.retries.items()):
                retries.add_metric((reason,), count)
            for reason, count in sorted(front_door.failed.items()):
                failed.add_metric((reason,), count)
        yield retries
        yield failed


class GpuCollector(Collector):
    """``sllm_worker_gpu_*{gpu}``: each device's memory and utilization, read from NVML at
    scrape time. Registered only where `Nvml.start` found a device."""

    def __init__(self, nvml: Nvml) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "sllm_worker_gpu_memory_used_bytes", "GPU memory in use, from NVML.", labels=("gpu",)
        )
        total = GaugeMetricFamily(
            "sllm_worker_gpu_memory_total_bytes", "GPU memory in all, from NVML.", labels=("gpu",)
        )
        utilization = GaugeMetricFamily(
            "sllm_worker_gpu_utilization_ratio",
            "Share of NVML's last sample period in which a kernel ran on the GPU (0..1).",
            labels=("gpu",),
        )
        for reading in self.nvml.readings():
            gpu = (str(reading.index),)
            used.add_metric(gpu, reading.memory_used_bytes)
            total.add_metric(gpu, reading.memory_total_bytes)
            utilization.add_metric(gpu, reading.utilization)
        yield used
        yield total
        yield utilization


# The model label of requests that named no catalog model (a 404, a body that did not
# parse): one value for all of them, so that clients cannot grow the series.
OTHER_MODEL = "other"
# Statuses that refuse a request for want of capacity (429 full queues, 503 no worker).
REJECTION_STATUSES = frozenset({429, 503})
SUCCESS = 200


class FrontDoorMetrics:
    """The front door's requests, tokens and latencies, fed by the gateway as they happen.

    It is the gateway's ``observer`` (`sllm.api.observer.FrontDoorObserver`). Names follow
    vLLM's (``vllm:time_to_first_token_seconds`` becomes
    ``sllm_frontdoor_time_to_first_token_seconds``, and so on), measured at the front door,
    so they include placement, retries and the hop to the worker. Labels are bounded:
    ``model`` takes catalog names (or `OTHER_MODEL`), ``status`` the HTTP codes the front
    door answers, ``reason`` the error codes it writes.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(
                f"sllm_frontdoor_{name}",
                documentation,
                ("model",),
                buckets=buckets,
                registry=registry,
            )

        def counter(name: str, documentation: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"sllm_frontdoor_{name}", documentation, labels, registry=registry)

        self.requests = counter(
            "requests", "Requests answered, by model and HTTP status.", ("model", "status")
        )
        self.rejected = counter(
            "requests_rejected",
            "Requests refused for want of capacity (429, 503), by status and reason.",
            ("status", "reason"),
        )
        self.prompt_tokens = counter(
            "prompt_tokens", "Prompt tokens of completed requests.", ("model",)
        )
        self.generation_tokens = counter(
            "generation_tokens", "Tokens generated for completed requests.", ("model",)
        )
        self.ttft = histogram(
            "time_to_first_token_seconds",
            "From arrival at the front door to the first event of the worker that served it.",
            TTFT_BUCKETS_S,
        )
        self.inter_token = histogram(
            "inter_token_latency_seconds",
            "Gaps between a stream's runs of events from the worker (one per token unless "
            "several arrived together).",
            INTER_TOKEN_BUCKETS_S,
        )
        self.e2e = histogram(
            "e2e_request_latency_seconds",
            "From arrival at the front door to the end of the answer, of requests answered 200.",
            DURATION_BUCKETS_S,
        )
        self.queue = histogram(
            "request_queue_time_seconds",
            "From arrival at the front door until the request was sent to the worker that "
            "served it: placement and the tries that failed before (the worker's own queue "
            "is sllm_request_queue_seconds on the worker).",
            TTFT_BUCKETS_S,
        )
        self.cold_start = histogram(
            "cold_start_wait_seconds",
            "Requests placed as cold starts: from the send to the worker to its first "
            "event, the model load included (the count is the cold starts waited on).",
            LOAD_BUCKETS_S,
        )

    def first_event(
        self,
        *,
        model: str,
        first_event_s: float,
        queued_s: float,
        cold_start_s: float | None,
    ) -> EventGap:
        self.ttft.labels(model=model).observe(first_event_s)
        self.queue.labels(model=model).observe(queued_s)
        if cold_start_s is not None:
            self.cold_start.labels(model=model).observe(cold_start_s)
        gap: EventGap = self.inter_token.labels(model=model).observe
        return gap

    def usage(self, *, model: str, prompt_tokens: int, generation_tokens: int) -> None:
        self.prompt_tokens.labels(model=model).inc(max(0, prompt_tokens))
        self.generation_tokens.labels(model=model).inc(max(0, generation_tokens))

    def finished(self, *, model: str | None, status: int, code: str | None, seconds: float) -> None:
        label = model if model is not None else OTHER_MODEL
        self.requests.labels(model=label, status=str(status)).inc()
        if status == SUCCESS:
            self.e2e.labels(model=label).observe(seconds)
        elif status in REJECTION_STATUSES:
            self.rejected.labels(status=str(status), reason=code or "unknown").inc()


def _endpoint_rejects(get: Callable[[], Mapping[str, int] | None]) -> RejectCounts:
    return lambda: get() or {}


def register_front_door(
    registry: CollectorRegistry, front_door: Callable[[], FrontDoor | None]
) -> FrontDoorMetrics:
    """The front door's metrics, into `registry`; returns the observer to give its gateway."""
    registry.register(FrontDoorCollector(front_door))
    return FrontDoorMetrics(registry)


def register_coordinator(
    registry: CollectorRegistry, server: CoordinatorServer
) -> FrontDoorMetrics:
    """The coordinator's metrics, into its own `registry`; returns its front door's observer."""
    registry.register(CoordinatorCollector(server.core))
    observer = register_front_door(registry, lambda: server.front_door)
    registry.register(
        RejectsCollector(
            _endpoint_rejects(lambda: server.endpoint.rejects.counts if server.endpoint else None),
            unexpected=_endpoint_rejects(
                lambda: server.endpoint.unexpected.counts if server.endpoint else None
            ),
        )
    )
    ProcessCollector(registry=registry)
    return observer


def register_worker(
    registry: CollectorRegistry,
    server: WorkerServer,
    *,
    find_gpus: Callable[[], Nvml | None] = Nvml.start,
) -> None:
    """A worker's metrics, into its own `registry`; makes the histograms its observer.

    Where `find_gpus` finds a GPU, its own readings too; where not, no GPU metric at all.
    """
    registry.register(WorkerCollector(server.state))
    nvml = find_gpus()
    if nvml is not None:
        registry.register(GpuCollector(nvml))
    registry.register(
        RejectsCollector(
            _endpoint_rejects(lambda: server.endpoint.rejects.counts if server.endpoint else None),
            unexpected=_endpoint_rejects(
                lambda: server.endpoint.unexpected.counts if server.endpoint else None
            ),
        )
    )
    ProcessCollector(registry=registry)
    server.observer = WorkerMetrics(registry)
