"""Trace spans of a distributed job, when the server traces (``--trace-otlp-endpoint``).

One ``frameserve.job`` span per execution of a job on the cluster, and under it one
``frameserve.chunk`` span per chunk attempt: from the moment the chunk was sent to a worker to
its answer, with the chunk's number, pass (results or video), node, attempt outcome and frames.
``Tracing`` is used on the server's loop (``serving.tracing``), so the job's thread hands every
span over with ``run_coroutine_threadsafe``/``call_soon_threadsafe``; nothing is built when the
server does not trace or the sampler drops the job.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from frameserve.serving.tracing import RequestTrace, Tracing


@dataclass(frozen=True, slots=True)
class ChunkAttempt:
    """One chunk's run on a worker, as the coordinator saw it (``perf_counter_ns`` times)."""

    number: int
    render: bool  # the video pass
    node: str
    start_ns: int
    end_ns: int
    outcome: str  # committed | duplicate | failed | lost
    frames: int


class JobSpans:
    """The job's span and its chunks' spans; ``chunk`` and ``end`` from the job's thread."""

    def __init__(self, tracing: Tracing, loop: asyncio.AbstractEventLoop, job: str,
                 pipeline: str) -> None:  # fmt: skip
        self._tracing = tracing
        self._loop = loop
        attrs = {"frameserve.job.id": job, "frameserve.pipeline": pipeline}
        self._trace: RequestTrace | None = asyncio.run_coroutine_threadsafe(
            self._start(attrs), loop
        ).result(timeout=10)

    async def _start(self, attrs: dict[str, Any]) -> RequestTrace | None:
        return self._tracing.start_request("frameserve.job", None, None, attrs)

    def chunk(self, attempt: ChunkAttempt) -> None:
        if self._trace is None:
            return
        attrs = {
            "frameserve.chunk.number": attempt.number,
            "frameserve.chunk.pass": "video" if attempt.render else "results",
            "frameserve.chunk.node": attempt.node,
            "frameserve.chunk.outcome": attempt.outcome,
            "frameserve.chunk.frames": attempt.frames,
        }
        span = self._trace.span
        self._loop.call_soon_threadsafe(
            self._tracing.child, span, "frameserve.chunk", attempt.start_ns, attempt.end_ns, attrs
        )

    def end(self, ok: bool, error: str | None = None) -> None:
        if self._trace is not None:
            self._loop.call_soon_threadsafe(self._trace.end, 200 if ok else 500, error)
