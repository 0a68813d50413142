"""``frameserve serve --ray``: the live-stream API over streams placed on the cluster.

``ClusterStreams`` answers what the routes, the gRPC service and the metrics collector ask of
``LiveStreams`` (``attach``, ``get``, ``list``, ``detach``, ``close``) with ``ClusterStream``s
(``id``, ``owner``, ``state``, ``status()``, ``subscribe()``), so the API does not change. A
stream's records come back from its node in batches (``RayStreams``) and are handed to its
subscribers on the server's loop (one ``call_soon_threadsafe`` per batch). Its status is the
node's, with ``placement``: the node it runs on, how often it moved and why. A stream's
``push`` outputs run on the coordinator (the server's ``PushHub``): its records reach them on
the loop with its subscribers. Previews need the stream's pictures, which stay on its node:
``preview`` is None here and the preview routes say so.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from frameserve.errors import InvalidInput, NotFound, QueueFull, Unavailable
from frameserve.scale.streams import PlacedStream, RayStreams
from frameserve.video.live import LiveSettings, StreamSpec
from frameserve.video.live.policy import redact
from frameserve.video.live.records import LiveRecord, StatsSnapshot, StreamStatus
from frameserve.video.live.spec import resolve_source
from frameserve.video.live.subscribe import Subscribers, Subscription
from frameserve.video.media import MediaRoot
from frameserve.video.push.spec import check_destinations, check_stream_push

if TYPE_CHECKING:
    from frameserve.video.push.hub import PushHub, StreamPush

_NO_STATS = StatsSnapshot(0.0, 0.0, 0, 0, {}, None, None)


class ClusterStream:
    """One placed stream as the API sees it; subscribers live on the server's loop."""

    def __init__(
        self, placed: PlacedStream, placement: RayStreams, loop: asyncio.AbstractEventLoop,
        settings: LiveSettings,
    ) -> None:  # fmt: skip
        self.id = placed.id
        self.owner = placed.owner
        self.spec = placed.spec
        self.started = datetime.now(UTC)
        self._placement = placement
        self._loop = loop
        self._subscribers = Subscribers(self.id, settings.subscriber_queue,
                                        settings.max_subscribers)  # fmt: skip
        self.stopped = False
        self.preview = None  # the pictures stay on the stream's node (see the module docstring)
        self.push: StreamPush | None = None  # loop-owned push outputs (set at attach)

    @property
    def state(self) -> str:
        return "stopped" if self.stopped else self.status().state

    def status(self) -> StreamStatus:
        try:
            placed = self._placement.get(self.id)
        except NotFound:
            placed = None
        base = placed.status if placed is not None else None
        if base is None:
            started = self.started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            base = StreamStatus(self.id, redact(self.spec.source), self.spec.pipeline,
                                "connecting", _NO_STATS, None, started, 0)  # fmt: skip
        state = "stopped" if self.stopped else base.state
        where = placed.placement() if placed is not None else None
        push = self.push.status() if self.push is not None else ()
        return dataclasses.replace(
            base, id=self.id, owner=self.owner, state=state, placement=where, push=push
        )

    def subscribe(self) -> Subscription:
        """A new reader of the stream's records; call it on the server's event loop."""
        return self._subscribers.subscribe()

    def deliver(self, records: list[LiveRecord]) -> None:
        """From the poller thread: the batch goes to the subscribers on the loop."""
        self._loop.call_soon_threadsafe(self._publish, records)

    def _publish(self, records: list[LiveRecord]) -> None:
        for record in records:
            record = dataclasses.replace(record, stream=self.id)
            self._subscribers.deliver(record)
            if self.push is not None:
                self.push.deliver(record)  # queued only: a push target never holds the stream

    def end(self) -> None:
        self.stopped = True
        self._loop.call_soon_threadsafe(self._subscribers.end)
        if self.push is not None:
            self._loop.call_soon_threadsafe(self.push.end)  # flush what is queued, then close


class ClusterStreams:
    """The registry of placed streams (the ``LiveStreams`` interface, see the docstring)."""

    def __init__(
        self, ray: Any, loop: asyncio.AbstractEventLoop, repository: Any, settings: LiveSettings,
        model_cache_dir: Any = None, push: PushHub | None = None,
    ) -> None:  # fmt: skip
        """``push``: the server's push outputs (streams' ``push`` runs on the coordinator)."""
        self.settings = settings
        self.push = push
        self.media_root = MediaRoot(settings.media_root)
        self._loop = loop
        self._lock = threading.Lock()
        self._streams: dict[str, ClusterStream] = {}
        self._closed = False
        self.placement = RayStreams(ray, repository, settings, self._deliver, model_cache_dir)

    def _deliver(self, stream_id: str, records: list[LiveRecord]) -> None:
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is not None:
            stream.deliver(records)

    def attach(self, spec: StreamSpec, owner: str = "") -> ClusterStream:
        """Check the source here (400s before any placement), then place the stream."""
        with self._lock:
            if self._closed:
                raise Unavailable("live streams: the server is shutting down")
            active = sum(1 for s in self._streams.values() if not s.stopped)
            if active >= self.settings.max_streams:
                raise QueueFull(
                    f"max_streams: expected at most {self.settings.max_streams} live streams, "
                    f"{active} are attached; detach one first"
                )
        resolve_source(spec.source, self.media_root, spec.loop, self.settings.policy)
        if spec.push:
            if self.push is None:
                raise InvalidInput("push: expected no push outputs here: only a server pushes")
            check_stream_push(spec.push)
            check_destinations(spec.push, self.settings.policy)
        # the node runs the pipeline; the push outputs run here, on the coordinator
        placed = self.placement.attach(spec.model_copy(update={"push": ()}), owner)
        stream = ClusterStream(placed, self.placement, self._loop, self.settings)
        if spec.push and self.push is not None:
            stream.push = self.push.stream(stream.id, spec.push)
        with self._lock:
            self._streams[stream.id] = stream
        return stream

    def get(self, stream_id: str, owner: str | None = None) -> ClusterStream:
        with self._lock:
            stream = self._streams.get(stream_id)
        if stream is None or (owner is not None and stream.owner != owner):
            raise NotFound(f"live stream {stream_id!r}: no such stream")
        return stream

    def list(self, owner: str | None = None) -> builtins.list[ClusterStream]:
        with self._lock:
            return [s for s in self._streams.values() if owner is None or s.owner == owner]

    def detach(
        self, stream_id: str, timeout_s: float | None = None, owner: str | None = None
    ) -> None:
        stream = self.get(stream_id, owner)
        with self._lock:
            self._streams.pop(stream_id, None)
        self.placement.detach(stream_id)
        stream.end()

    def close(self, timeout_s: float) -> None:
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        self.placement.close()
        for stream in streams:
            stream.end()
