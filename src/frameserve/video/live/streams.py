"""The live streams of one server: attach (validated up front), look up, detach, close.

``LiveStreams`` is thread-safe: the API layer calls ``attach`` and ``detach`` from worker
threads (they may wait on files and threads) and ``get``/``list`` from the loop. Everything a
client can get wrong is refused at ``attach`` with ``InvalidInput`` (source, pipeline, sample,
loop), ``ConfigError`` (the pipeline's models are not loaded) or ``QueueFull`` (``max_streams``
streams are running); an unreachable source is not an error there: the stream retries.

A stream that stops by itself (a file that ended) stays listed, ``stopped``, until it is
detached; it no longer counts against ``max_streams``, and at most ``max_streams`` stopped
streams are kept (the oldest are forgotten first).
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from frameserve.errors import InvalidInput, NotFound, QueueFull, Unavailable
from frameserve.serving.local import ServerHandle
from frameserve.serving.types import Admission
from frameserve.video.config import load_named_pipeline
from frameserve.video.decode import probe
from frameserve.video.frames import Sampling
from frameserve.video.live.spec import LiveSettings, StreamSpec, resolve_source
from frameserve.video.live.stream import LiveStream
from frameserve.video.media import MediaRoot
from frameserve.video.process import FrameProcessor, open_processor
from frameserve.video.push.spec import check_destinations, check_stream_push
from frameserve.video.script_streams import ScriptStreams
from frameserve.video.worker import run_isolated

if TYPE_CHECKING:
    from frameserve.video.push.hub import PushHub

log = logging.getLogger(__name__)

PROBE_S = 30.0  # at most for a file's header to be read (a child's start included)
SINK_SLACK = 4  # frames answered but not yet taken by the sink, beyond what can be in flight


class LiveStreams:
    """The registry of live streams (see the module docstring)."""

    def __init__(
        self, handle: ServerHandle, settings: LiveSettings, push: PushHub | None = None
    ) -> None:
        """``push``: the server's push outputs (without it, streams with ``push`` are
        refused)."""
        self.handle = handle
        self.settings = settings
        self.push = push
        self.media_root = MediaRoot(settings.media_root)
        self._lock = threading.Lock()
        self._streams: dict[str, LiveStream] = {}  # in attach order
        self._closed = False

    def attach(self, spec: StreamSpec, owner: str = "") -> LiveStream:
        """Validate ``spec``, start its threads and return the stream (``connecting``), owned
        by ``owner`` (an API key name; "" with keys off)."""
        with self._lock:
            self._check_room()  # before any work: a full server answers 429 at once
        source = resolve_source(spec.source, self.media_root, spec.loop, self.settings.policy)
        if spec.push:
            if self.push is None:
                raise InvalidInput("push: expected no push outputs here: only a server pushes")
            check_stream_push(spec.push)
            check_destinations(spec.push, self.settings.policy)
        if source.path is not None:
            # VideoError now for a file that is not a video; FFmpeg reads it in a child
            doing = f"reading the header of {source.path}"
            run_isolated(probe, source.path, name="live-probe", doing=doing, timeout_s=PROBE_S)
        name, config = load_named_pipeline(
            spec.pipeline, self.handle.server.repository.root, "pipeline"
        )
        if config.filters is not None:
            raise InvalidInput(
                f"pipeline: live streams do not run FFmpeg filters yet, and {name!r} has "
                "filters: expected a pipeline without them"
            )
        if config.transforms:
            raise InvalidInput(
                f"pipeline: expected an analysis pipeline (steps), got {name!r}, which makes "
                "new frames (interpolate) and has no results to stream"
            )
        sampling = Sampling.parse(spec.sample or config.sample, "sample")
        stream_id = uuid.uuid4().hex[:12]
        admission = Admission(
            stream_id=f"live-{stream_id}", droppable=True, max_inflight=spec.max_inflight
        )
        processor = open_processor(self.handle, name, config, admission)
        scripts = ScriptStreams(self.handle, processor, spec.params)
        scripts.open(0)  # a live stream is its processor's input 0; configure refuses: 400
        try:
            stream = LiveStream(
                stream_id,
                spec,
                source,
                self.handle,
                self.settings,
                processor,
                sampling,
                self._sink_queue(processor, spec.max_inflight),
                owner,
            )
            stream.on_end = lambda: scripts.close_all(wait=False)
            if spec.push and self.push is not None:
                stream.push = self.push.stream(stream_id, spec.push)
            with self._lock:
                self._check_room()
                self._streams[stream_id] = stream
                stream.start()
        except BaseException:
            scripts.close_all()
            raise
        return stream

    def _check_room(self) -> None:
        """``Unavailable`` when closed, ``QueueFull`` at ``max_streams`` (caller holds the lock)."""
        if self._closed:
            raise Unavailable("live streams: the server is shutting down")
        self._forget_stopped()
        active = sum(1 for s in self._streams.values() if s.state != "stopped")
        if active >= self.settings.max_streams:
            raise QueueFull(
                f"max_streams: expected at most {self.settings.max_streams} live streams, "
                f"{active} are attached; detach one first"
            )

    def _forget_stopped(self) -> None:
        """Keep at most ``max_streams`` stopped streams listed (caller holds the lock)."""
        stopped = [k for k, s in self._streams.items() if s.state == "stopped"]
        for key in stopped[: max(0, len(stopped) - self.settings.max_streams)]:
            del self._streams[key]

    def _sink_queue(self, processor: FrameProcessor, max_inflight: int) -> int:
        """Room between reader and sink: the frames a model may hold for this stream
        (queued plus one full batch per instance), and a few answered ones."""
        running = 0
        for model in processor.models:
            mv = self.handle.server.repository.get(model)
            running += max(1, mv.max_batch_size) * max(1, mv.instances)
        return max_inflight * len(processor.models) + running + SINK_SLACK

    # ``owner``: None sees every stream; a key name sees only that key's streams, and another's
    # stream answers NotFound exactly as one that does not exist.
    def get(self, stream_id: str, owner: str | None = None) -> LiveStream:
        """The stream ``stream_id``; ``NotFound`` when no such stream is attached."""
        with self._lock:
            stream = self._streams.get(stream_id)
            visible = [s for s in self._streams.values() if owner is None or s.owner == owner]
            count = len(visible)
        if stream is None or (owner is not None and stream.owner != owner):
            raise NotFound(
                f"stream: expected the id of an attached live stream ({count} attached), "
                f"got {stream_id!r}"
            )
        return stream

    def list(self, owner: str | None = None) -> builtins.list[LiveStream]:
        """Every listed stream (of ``owner``, None: all), in attach order."""
        with self._lock:
            return [s for s in self._streams.values() if owner is None or s.owner == owner]

    def detach(
        self, stream_id: str, timeout_s: float | None = None, owner: str | None = None
    ) -> None:
        """Stop the stream (waiting up to ``timeout_s`` for its threads, default the source
        timeouts + 1 s) and forget it; its subscribers see the end."""
        with self._lock:
            stream = self._streams.get(stream_id)
            if stream is not None and (owner is None or stream.owner == owner):
                del self._streams[stream_id]
            else:
                stream = None
        if stream is None:
            self.get(stream_id, owner)  # raises NotFound with the message
            return
        stream.stop(self.settings.stop_timeout_s if timeout_s is None else timeout_s)
        log.info("live stream %s: detached", stream_id)

    def close(self, timeout_s: float) -> None:
        """Server shutdown: refuse new streams, stop every stream within ``timeout_s`` in all."""
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.request_stop()
        deadline = time.monotonic() + timeout_s
        for stream in streams:
            stream.join(max(0.0, deadline - time.monotonic()))
