"""OpenTelemetry tracing of inference requests (the optional ``tracing`` extra).

Nothing here imports ``opentelemetry`` until a ``Tracing`` is made, which happens only when
tracing is enabled: a server without the extra, or with tracing off, never loads it, and its
hot path pays one ``is None`` test per request (front ends hold ``server.tracing``, requests
carry ``trace=None``).

The span tree of one request (times measured where the work ran, recorded when it is known):

    POST /v2/models/{model}/infer            (or the gRPC method; SERVER kind; the request)
    ├── frameserve.decode / preprocess      image requests and pipelines (processing pool)
    ├── frameserve.queue                    submitted to the scheduler -> its batch started
    ├── frameserve.batch                    the batch it joined: size, requests, batch id
    │   └── frameserve.inference            the backend's run of that batch
    └── frameserve.postprocess

A batch serves many requests, often from different traces. Its spans are recorded once per
request, under that request's span, with the batch's measured start and end: each trace then
shows the whole path of its request, and the shared ``frameserve.batch.id`` attribute joins the
requests of one batch. (A single batch span with links to every request would not appear in
any request's tree, and cost the same.) The scheduler only stamps one ``BatchTiming`` on each
item it answers; spans are built afterwards by the request's own coroutine, never by the
batching task.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from frameserve import __version__
from frameserve.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

EXTRA_HINT = "pip install 'frameserve[tracing]'"
SCOPE = "frameserve"


@dataclass(frozen=True)
class TracingSettings:
    """Where spans go and which requests are traced."""

    otlp_endpoint: str  # OTLP/HTTP (protobuf) traces URL
    sample_rate: float = 1.0  # of requests that arrive without a sampled traceparent


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """When one executed batch went through its steps (``time.perf_counter_ns``)."""

    batch_id: int  # per scheduler, counting from 1
    items: int  # inferences in the batch (the sum of the requests' batch sizes)
    requests: int
    started_ns: int  # the batching task took it from the queue
    infer_start_ns: int  # inputs assembled; the backend starts
    infer_end_ns: int
    finished_ns: int  # outputs split back to the requests


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: ``/v1/traces`` is appended to a URL with no path, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` does; a URL with a path is used as it is."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--trace-otlp-endpoint: expected an http(s) URL such as http://collector:4318, "
            f"got {endpoint!r}"
        )
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def _provider(settings: TracingSettings) -> TracerProvider:
    """The SDK's provider: parent-based ratio sampling, batched OTLP/HTTP export."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
    except ImportError as err:
        raise ConfigError(
            f"tracing is enabled (--trace-otlp-endpoint) but OpenTelemetry is not installed "
            f"({err.name} is missing): install the tracing extra, {EXTRA_HINT}"
        ) from None
    if not 0.0 <= settings.sample_rate <= 1.0:
        raise ConfigError(
            f"--trace-sample-rate: expected a number in 0..1, got {settings.sample_rate}"
        )
    resource = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "frameserve"}))
    # Roots are sampled by Tracing.start_request before the SDK sees them (a dropped request
    # then costs one random number, not a span); the SDK follows a caller's traceparent.
    provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_ON))
    # Headers, certificates, compression and timeout come from OTEL_EXPORTER_OTLP_* as usual.
    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class Tracing:
    """A tracer and the W3C trace-context propagator of one server; used on its loop."""

    def __init__(self, provider: Any, sample_rate: float = 1.0) -> None:
        """``provider``: an OpenTelemetry ``TracerProvider`` (tests pass one with an in-memory
        exporter); ``from_settings`` builds the OTLP one. ``sample_rate``: the share of requests
        without a ``traceparent`` that are traced."""
        self._sample_rate = sample_rate
        self._random = random.Random()
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._provider = provider
        self._tracer = provider.get_tracer(SCOPE, __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        # perf_counter_ns (what the scheduler stamps) -> epoch ns (what spans take)
        self._epoch_offset_ns = time.time_ns() - time.perf_counter_ns()

    @classmethod
    def from_settings(cls, settings: TracingSettings) -> Tracing:
        """Tracing to an OTLP/HTTP collector; ``ConfigError`` naming the extra when the
        OpenTelemetry packages are missing."""
        return cls(_provider(settings), settings.sample_rate)

    def start_request(
        self,
        name: str,
        traceparent: str | None,
        tracestate: str | None,
        attributes: dict[str, Any],
    ) -> RequestTrace | None:
        """The span of one request, a child of ``traceparent`` when one came with it; None
        when the sampler drops it (nothing more is built for that request)."""
        if not traceparent and self._random.random() >= self._sample_rate:
            return None  # an unsampled root: decided before the SDK builds anything
        context = None
        if traceparent:
            carrier = {"traceparent": traceparent}
            if tracestate:
                carrier["tracestate"] = tracestate
            context = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            name, context=context, kind=self._server_kind, attributes=attributes
        )
        if not span.is_recording():
            return None
        return RequestTrace(self, span)

    def epoch_ns(self, perf_ns: int) -> int:
        return perf_ns + self._epoch_offset_ns

    def child(
        self, parent: Span, name: str, start_ns: int, end_ns: int, attributes: dict[str, Any]
    ) -> Span:
        """A finished child span of ``parent`` over measured ``perf_counter_ns`` times."""
        span = self._tracer.start_span(
            name,
            context=self._trace.set_span_in_context(parent),
            start_time=self.epoch_ns(start_ns),
            attributes=attributes,
        )
        span.end(end_time=self.epoch_ns(end_ns))
        return span

    def shutdown(self) -> None:
        """Export what is buffered and stop (at server exit)."""
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


class RequestTrace:
    """The span of one request and the steps recorded under it. Owned by the request's task."""

    __slots__ = ("_tracing", "span")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self._tracing = tracing
        self.span = span

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def set_attribute(self, key: str, value: Any) -> None:
        self.span.set_attribute(key, value)

    def record_batch(
        self, enqueued_ns: int, batch: BatchTiming, model: str, version: int, batch_size: int
    ) -> None:
        """Queue wait, the batch this request joined and its inference, as children."""
        t = self._tracing
        t.child(self.span, "frameserve.queue", enqueued_ns, batch.started_ns, {})
        attrs = {
            "frameserve.model": model,
            "frameserve.model_version": str(version),
            "frameserve.batch.id": batch.batch_id,
            "frameserve.batch.size": batch.items,
            "frameserve.batch.requests": batch.requests,
            "frameserve.request.batch_size": batch_size,
        }
        span = t.child(self.span, "frameserve.batch", batch.started_ns, batch.finished_ns, attrs)
        t.child(span, "frameserve.inference", batch.infer_start_ns, batch.infer_end_ns, {})

    def record_step(self, name: str, start_ns: int, end_ns: int) -> None:
        """A child span ``frameserve.<name>`` (decode, preprocess, postprocess) over measured
        ``perf_counter_ns`` times."""
        self._tracing.child(self.span, f"frameserve.{name}", start_ns, end_ns, {})

    def end(self, status_code: int, error: str | None = None) -> None:
        """End the request's span; ``status_code`` is the HTTP status (gRPC: its equivalent),
        and 5xx marks the span as an error, as OpenTelemetry's server conventions do."""
        if status_code >= 500:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
