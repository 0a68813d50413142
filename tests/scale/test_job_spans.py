"""The trace spans of a distributed job: one ``frameserve.job`` span, a ``frameserve.chunk``
child per chunk attempt with its node, pass and outcome, handed to the server's loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra is not installed")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from frameserve.scale.tracing import ChunkAttempt, JobSpans  # noqa: E402
from frameserve.serving.tracing import Tracing  # noqa: E402


def test_a_job_span_has_a_child_per_chunk_attempt() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        spans = JobSpans(Tracing(provider), loop, "job1", "faces")
        now = time.perf_counter_ns()
        spans.chunk(ChunkAttempt(0, False, "10.0.0.7 (71c11ef6)", now, now + 5_000_000,
                                 "committed", 144))  # fmt: skip
        spans.chunk(ChunkAttempt(1, False, "10.0.0.9 (48f70448)", now, now + 9_000_000,
                                 "lost", 144))  # fmt: skip
        spans.end(True)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # after the spans
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    finished = {s.name: s for s in exporter.get_finished_spans()}
    job = finished["frameserve.job"]
    assert job.attributes["frameserve.job.id"] == "job1"
    chunks = [s for s in exporter.get_finished_spans() if s.name == "frameserve.chunk"]
    assert len(chunks) == 2
    assert all(c.parent.span_id == job.context.span_id for c in chunks)
    outcomes = {c.attributes["frameserve.chunk.number"]: c.attributes["frameserve.chunk.outcome"]
                for c in chunks}  # fmt: skip
    assert outcomes == {0: "committed", 1: "lost"}
    assert chunks[0].attributes["frameserve.chunk.node"].startswith("10.0.0.")
