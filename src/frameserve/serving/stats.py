"""Per model-version statistics: Triton's statistics extension and Prometheus metrics.

``VersionStats`` is owned by one model version and updated only on the event loop that owns its
scheduler, so its counters need no locks. The Prometheus collectors belong to a ``Metrics``
object owned by the server (no module globals): each version binds its label values once.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(slots=True)
class Duration:
    """A count and a total in nanoseconds (Triton's ``StatisticDuration``)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class Metrics:
    """The Prometheus collectors of one server, in its own registry (with the process's)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model", "version"]
        r = self.registry
        # process_* (CPU seconds, resident memory, open fds, start time), python_info and the
        # garbage collector's counts: read from /proc and the interpreter at scrape time only.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.success = Counter(
            "frameserve_request_success", "Successful inference requests", labels, registry=r
        )
        self.failure = Counter(
            "frameserve_request_failure",
            "Failed inference requests by reason",
            [*labels, "reason"],
            registry=r,
        )
        self.inferences = Counter(
            "frameserve_inference_count", "Inferences performed (batch items)", labels, registry=r
        )
        self.executions = Counter(
            "frameserve_execution_count", "Batches executed by the backend", labels, registry=r
        )
        self.queue_time = Histogram(
            "frameserve_queue_duration_seconds",
            "Time a request waited in the scheduler queue",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_time = Histogram(
            "frameserve_compute_duration_seconds",
            "Backend time per batch (input assembly, inference, output split)",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_time = Histogram(
            "frameserve_request_duration_seconds",
            "Time from a request entering the scheduler to its result",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "frameserve_batch_size",
            "Items per executed batch",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "frameserve_inflight_requests",
            "Requests queued or executing",
            labels,
            registry=r,
        )
        self.queue_depth = Gauge(
            "frameserve_queue_depth", "Requests waiting in the scheduler queue", labels, registry=r
        )
        self.model_ready = Gauge(
            "frameserve_model_ready", "1 when the model version serves traffic", labels, registry=r
        )


class VersionStats:
    """Counters of one model version (success, failure, queue and compute times, batches)."""

    def __init__(self, model: str, version: str, metrics: Metrics | None) -> None:
        self.model = model
        self.version = version
        self.last_inference_ms = 0
        self.inflight = 0
        self.inference_count = 0
        self.execution_count = 0
        self.success = Duration()
        self.fail = Duration()
        self.queue = Duration()
        self.compute_input = Duration()
        self.compute_infer = Duration()
        self.compute_output = Duration()
        self.batches: dict[int, BatchStats] = {}
        self._metrics = metrics
        if metrics is not None:
            lv = (model, version)
            self._m_success = metrics.success.labels(*lv)
            self._m_inferences = metrics.inferences.labels(*lv)
            self._m_executions = metrics.executions.labels(*lv)
            self._m_queue = metrics.queue_time.labels(*lv)
            self._m_compute = metrics.compute_time.labels(*lv)
            self._m_request = metrics.request_time.labels(*lv)
            self._m_batch = metrics.batch_size.labels(*lv)
            self.inflight_gauge = metrics.inflight.labels(*lv)
            self.queue_gauge = metrics.queue_depth.labels(*lv)
            self.ready_gauge = metrics.model_ready.labels(*lv)

    def enter(self) -> None:
        """A request entered this version (queued or running)."""
        self.inflight += 1
        if self._metrics is not None:
            self.inflight_gauge.set(self.inflight)

    def leave(self) -> None:
        self.inflight -= 1
        if self._metrics is not None:
            self.inflight_gauge.set(self.inflight)

    def set_ready(self, ready: bool) -> None:
        if self._metrics is not None:
            self.ready_gauge.set(1 if ready else 0)

    def queue_depth(self, depth: int) -> None:
        if self._metrics is not None:
            self.queue_gauge.set(depth)

    def record_success(self, total_ns: int, queue_ns: int) -> None:
        self.success.add(total_ns)
        self.queue.add(queue_ns)
        if self._metrics is not None:
            self._m_success.inc()
            self._m_queue.observe(queue_ns / 1e9)
            self._m_request.observe(total_ns / 1e9)

    def record_failure(self, total_ns: int, reason: str) -> None:
        self.fail.add(total_ns)
        if self._metrics is not None:
            self._metrics.failure.labels(self.model, self.version, reason).inc()

    def record_batch(
        self, items: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One executed batch of ``items`` inferences from ``requests`` requests."""
        self.last_inference_ms = int(time.time() * 1000)
        self.inference_count += items
        self.execution_count += 1
        # Triton's semantics: every request of the batch spent the batch's time computing, so
        # per-request averages (what perf_analyzer shows) are total / count.
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        bs = self.batches.get(items)
        if bs is None:
            bs = self.batches[items] = BatchStats(items)
        bs.compute_input.add(input_ns)
        bs.compute_infer.add(infer_ns)
        bs.compute_output.add(output_ns)
        if self._metrics is not None:
            self._m_inferences.inc(items)
            self._m_executions.inc()
            self._m_batch.observe(items)
            self._m_compute.observe((input_ns + infer_ns + output_ns) / 1e9)

    def forget(self) -> None:
        """Remove this version's label series when it is unloaded."""
        if self._metrics is None:
            return
        m, lv = self._metrics, (self.model, self.version)
        collectors = (m.success, m.inferences, m.executions, m.queue_time, m.compute_time)
        for c in (
            *collectors,
            m.request_time,
            m.batch_size,
            m.inflight,
            m.queue_depth,
            m.model_ready,
        ):
            with contextlib.suppress(KeyError):
                c.remove(*lv)
