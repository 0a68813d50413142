"""The per-node host of live streams placed by the coordinator (``scale.streams``).

A ``StreamHost`` is a Ray actor (one per node and attempt, hard node affinity, no CPUs
reserved: streams are placed by the coordinator's own count of streams per CPU). It runs the
same ``LiveStreams`` as ``frameserve serve`` over a ``LocalServer`` of the model repository at
the same path as the coordinator's, loading a pipeline's models on its first stream. Each
stream's records are drained on the host's loop into a bounded buffer that the coordinator
empties with ``poll`` a few times a second: records travel in batches, never one Ray call per
frame. This module imports no Ray: the coordinator wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from pathlib import Path
from typing import Any

from frameserve.cpu import CpuBudget
from frameserve.errors import NotFound
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_named_pipeline
from frameserve.video.live import LiveSettings, LiveStreams, StreamSpec
from frameserve.video.live.records import LiveRecord, StreamStatus
from frameserve.video.live.subscribe import Subscription

BUFFER = 4096  # records kept per stream between two polls (the oldest go first)


class StreamHost:
    """Live streams on one node; every method runs on the actor's one thread."""

    def __init__(
        self, repository: Path, settings: LiveSettings, cpus: int, model_cache_dir: Path | None
    ) -> None:
        """``settings``: the coordinator's (media root at the same path, source policy)."""
        self.node = socket.gethostname()
        server = ServerSettings(
            repository=repository,
            model_control_mode="explicit",
            budget=CpuBudget(max(1, cpus), "ray --num-cpus"),
            model_cache_dir=model_cache_dir,
        )
        self.local = LocalServer(server)
        self.streams = LiveStreams(self.local, settings)
        self._buffers: dict[str, deque[LiveRecord]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def attach(self, spec: dict[str, Any], owner: str) -> str:
        """Start a stream (its pipeline's models loaded first); returns its id here."""
        parsed = StreamSpec.model_validate(spec)
        repository = self.local.server.repository
        _, config = load_named_pipeline(parsed.pipeline, repository.root, "pipeline")
        for model in config.models:
            self.local.call(repository.load(model))
        stream = self.streams.attach(parsed, owner)
        buffer: deque[LiveRecord] = deque(maxlen=BUFFER)
        self._buffers[stream.id] = buffer
        self.local.call(self._drain_soon(stream.id, buffer))
        return stream.id

    async def _drain_soon(self, stream_id: str, buffer: deque[LiveRecord]) -> None:
        subscription = self.streams.get(stream_id).subscribe()  # on the loop, as it must be
        self._tasks[stream_id] = asyncio.create_task(self._drain(subscription, buffer))

    @staticmethod
    async def _drain(subscription: Subscription, buffer: deque[LiveRecord]) -> None:
        async for record in subscription:
            buffer.append(record)

    def poll(self) -> dict[str, tuple[list[LiveRecord], StreamStatus]]:
        """Each stream's records since the last poll, and its status."""
        out = {}
        for stream_id, buffer in list(self._buffers.items()):
            records = [buffer.popleft() for _ in range(len(buffer))]
            try:
                out[stream_id] = (records, self.streams.get(stream_id).status())
            except NotFound:  # stopped and forgotten here: nothing more will come
                self._buffers.pop(stream_id, None)
        return out

    def detach(self, stream_id: str) -> None:
        self._buffers.pop(stream_id, None)
        self.streams.detach(stream_id)

    def close(self) -> None:
        self.streams.close(10.0)
        self.local.close()
