"""One live stream: a worker process, a reader and a sink thread, and its subscribers on the
server's loop.

```
worker process (video.live.worker)  reader thread          server loop                sink thread
 open (timeouts) -> demux ->         events -> FramePump    FrameProcessor.infer ->    FramePump
 decode -> sample/max_fps ->         .send (lossy: a full   Scheduler (droppable,      .results():
 (pace a file) -> pre-process  ───>  pump = "busy" drop) ─> max_inflight per stream) ─> tracker ->
 at model size                       state, stats                                      record ->
                                                                                       publish
```

FFmpeg parses what the source sends in a child process, so a crash there ends the worker, not
the server: the stream goes to ``retrying`` with the reason in ``last_error`` and a new worker
goes on after the backoff, with frame numbers (and a file's timestamps) still increasing. The
frames move through the same ``FramePump`` as ``video run`` and jobs, in its lossy mode: the
reader never blocks on what comes after it. The scheduler keeps at most ``max_inflight`` queued
frames of the stream and answers older ones with ``FrameDropped`` ("stale"); when the pump is
full the frame is not submitted at all ("busy"; the worker also drops frames before
pre-processing when the reader has not taken its last ones); a frame that fails is counted
("failed") and the stream goes on. A reload that retires the stream's model version moves the
pipeline to the new version (``FrameProcessor.infer``); one that changes the pre-processing
restarts the worker. A network source that fails or ends is reopened with exponential backoff
(reset once a connection delivered frames); a file ends the stream, or plays again with
``loop``. One stop event ends both threads and the worker. The state is ``connecting`` until
the first frame, ``running`` while frames come, ``retrying`` between connections (or workers)
and ``stopped`` at the end; the last error stays in ``last_error``. While someone watches its
preview, the sink also draws each result onto a small picture of the frame (``StreamPreview``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from frameserve import logcontext
from frameserve.errors import FrameDropped, FrameserveError
from frameserve.processing.detectors import DETECTION_TASKS
from frameserve.processing.results import Detections, Moderation
from frameserve.serving.local import ServerHandle
from frameserve.video.config import TrackSpec
from frameserve.video.frames import Sampling
from frameserve.video.live.policy import redact
from frameserve.video.live.preview import OFF, PreviewRequest, StreamPreview
from frameserve.video.live.reader import ReaderResume
from frameserve.video.live.records import LiveRecord, StreamStatus
from frameserve.video.live.spec import LiveSettings, LiveSource, StreamSpec
from frameserve.video.live.stats import StreamStats
from frameserve.video.live.subscribe import Subscribers, Subscription
from frameserve.video.live.worker import (
    Busy,
    Connected,
    Delivered,
    Event,
    LiveWorker,
    LiveWorkerSpec,
    Problem,
)
from frameserve.video.process import FrameProcessor
from frameserve.video.pump import Finished, FramePump
from frameserve.video.streams import overlay_style
from frameserve.video.track import Tracker, TrackerSettings
from frameserve.video.worker import WorkerDied

if TYPE_CHECKING:
    from frameserve.video.push.hub import StreamPush

log = logging.getLogger(__name__)

State = Literal["connecting", "running", "retrying", "stopped"]


class LiveStream:
    """One attached source and its threads; created and started by ``LiveStreams.attach``."""

    def __init__(
        self,
        stream_id: str,
        spec: StreamSpec,
        source: LiveSource,
        handle: ServerHandle,
        settings: LiveSettings,
        processor: FrameProcessor,
        sampling: Sampling,
        sink_queue: int,
        owner: str = "",
    ) -> None:
        """Build the stream (no thread runs until ``start``); ``sink_queue`` bounds the frames
        between the reader and the sink; ``owner``: the API key name that attached it."""
        self.id = stream_id
        self.owner = owner
        self.spec = spec
        self.source = source
        self.settings = settings
        self.stats = StreamStats()
        self.started = datetime.now(UTC)
        self._handle = handle
        self._loop = handle.loop
        self._track: TrackSpec | None = (
            processor.config.track if processor.task in DETECTION_TASKS else None
        )
        self._sampling = sampling
        self._stop = threading.Event()
        self._pump = FramePump(handle, processor, sink_queue, self._stop, lossy=True)
        self._subscribers = Subscribers(  # loop-owned
            stream_id, settings.subscriber_queue, settings.max_subscribers
        )
        self.preview = StreamPreview(  # annotated pictures while watched (video.live.preview)
            stream_id, settings.preview, self._loop, overlay_style(processor.config)
        )
        self._lock = threading.Lock()
        self._state: State = "connecting"
        self._last_error: str | None = None
        self._reconnects = 0
        self._ran = False  # a connection has delivered frames before
        self._connection_number = 0  # written by the reader thread only
        self._resume = ReaderResume()  # where a replacement worker goes on (reader thread)
        self._restart = False  # the reader thread replaces the worker at once (a reload)
        self._rates: dict[int, float] = {}  # connection -> its frame rate (the tracker's unit)
        self.on_end: Callable[[], None] | None = None  # the sink ended (script models release)
        self.push: StreamPush | None = None  # loop-owned push outputs (set before ``start``)
        self._threads = [
            threading.Thread(
                target=logcontext.bound(self._read, stream_id=stream_id),
                name=f"live-{stream_id}-reader",
                daemon=True,
            ),
            threading.Thread(
                target=logcontext.bound(self._sink, stream_id=stream_id),
                name=f"live-{stream_id}-sink",
                daemon=True,
            ),
        ]

    # -- any thread -------------------------------------------------------------------------
    @property
    def processor(self) -> FrameProcessor:
        """The stream's model stage (it follows its models through reloads)."""
        return self._pump.processor

    @property
    def state(self) -> State:
        """connecting | running | retrying | stopped (see the module docstring)."""
        return self._state

    @property
    def last_error(self) -> str | None:
        """The latest error of the source or of a frame; kept after a recovery."""
        return self._last_error

    @property
    def reconnects(self) -> int:
        """Times the source delivered frames again after a connection was lost."""
        return self._reconnects

    def start(self) -> None:
        """Start the reader and sink threads."""
        for thread in self._threads:
            thread.start()
        log.info(
            "live stream %s: %s through pipeline %s",
            self.id,
            self.source.describe(),
            self.spec.pipeline,
        )

    def request_stop(self) -> None:
        """Ask both threads and the worker to end (within ``POLL_S``, and the worker's close)."""
        self._stop.set()

    def stop(self, timeout_s: float) -> bool:
        """Stop both threads, waiting up to ``timeout_s``; True when both ended."""
        self.request_stop()
        return self.join(timeout_s)

    def join(self, timeout_s: float) -> bool:
        """Wait for both threads up to ``timeout_s`` in all; the state is ``stopped`` after."""
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning(
                "live stream %s: %s still running %.1f s after stop",
                self.id,
                ", ".join(alive),
                timeout_s,
            )
        self._set_state("stopped")
        return not alive

    def status(self) -> StreamStatus:
        """The stream's state and counters (see ``StreamStats.snapshot`` for the rates)."""
        started = self.started.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return StreamStatus(
            self.id, redact(self.spec.source), self.spec.pipeline, self._state,
            self.stats.snapshot(), self._last_error, started, self._reconnects, self.owner,
            self.push.status() if self.push is not None else (),
            preview=self.preview.status(),
        )  # fmt: skip

    def _set_state(self, state: State) -> None:
        with self._lock:
            if self._state == "stopped" or (self._stop.is_set() and state != "stopped"):
                return  # a stopping stream only goes to stopped, and never leaves it
            if state != self._state:
                log.info("live stream %s: %s -> %s", self.id, self._state, state)
            self._state = state

    def _error(self, message: str) -> None:
        self._last_error = message
        log.warning("live stream %s: %s", self.id, message)

    # -- event loop -------------------------------------------------------------------------
    def subscribe(self) -> Subscription:
        """A new reader of this stream's records; call it on the server's event loop."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self._loop:
            raise RuntimeError(
                f"live stream {self.id}: subscribe() must run on the server's event loop"
            )
        return self._subscribers.subscribe()

    def _deliver(self, record: LiveRecord, arrived: float) -> None:
        """On the loop: stamp the lag, count the record and hand it to every subscriber."""
        now = time.monotonic()
        lag = now - arrived
        self.stats.frame_out(now, lag)
        record = replace(record, lag_ms=round(lag * 1000.0, 2))
        self._subscribers.deliver(record)
        if self.push is not None:
            self.push.deliver(record)  # queued only: a push target never holds the stream

    # -- reader thread ----------------------------------------------------------------------
    def _read(self) -> None:
        try:
            self._supervise()
        except BaseException as err:  # noqa: BLE001 - recorded; the stream stops
            log.error("live stream %s: reader failed", self.id, exc_info=err)
            self._last_error = f"reader failed: {type(err).__name__}: {err}"
            self._stop.set()
        finally:
            self._pump.end()

    def _supervise(self) -> None:
        """Workers one after the other. A worker that ended says the source is done. One that
        died (or could not start) is replaced after the backoff, the stream ``retrying``
        meanwhile; a file that does not loop ends there instead, since a new worker would play
        it again from its start."""
        s = self.settings
        backoff = s.backoff_min_s
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self._run_worker():
                    return  # the source is done, or the stream stops
            except (WorkerDied, OSError) as err:
                self._error(str(err) if isinstance(err, WorkerDied) else f"cannot start the "
                            f"decode worker: {type(err).__name__}: {err}")  # fmt: skip
                if not self.source.network and not self.spec.loop:
                    return
                self._set_state("retrying")
            if self._restart:
                self._restart = False
                continue
            if time.monotonic() - started > s.backoff_max_s:
                backoff = s.backoff_min_s  # it ran a while: not a crash loop
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, s.backoff_max_s)

    def _run_worker(self) -> bool:
        """One worker until it ends (True) or the pre-processing changed (False); raises
        ``WorkerDied`` when it dies."""
        worker = LiveWorker(self._worker_spec(), f"live-{self.id}-worker")
        told = OFF  # what the worker was told about preview pictures
        try:
            for event in worker.events(self._stop, self._pump.has_room):
                told = self._tell_preview(worker, told)
                self._on(event, worker.spec)
                if self._restart:
                    return False
            return True
        finally:
            worker.close()

    def _tell_preview(self, worker: LiveWorker, told: PreviewRequest) -> PreviewRequest:
        """Tell the worker when the preview's watchers want other pictures (or none now)."""
        wanted = self.preview.request()
        if wanted != told:
            worker.send(wanted)
        return wanted

    def _worker_spec(self) -> LiveWorkerSpec:
        mv = self.processor.single
        pre = mv.processing.preprocess if mv is not None and mv.processing else None
        return LiveWorkerSpec(
            self.source, self.settings, self._sampling, self.spec.max_fps, self.spec.loop,
            self.processor.config.decode.codec_options(), pre.spec if pre else None,
            pre.fused if pre else False, self._resume, f"live stream {self.id}",
            logging.getLogger("frameserve").getEffectiveLevel(),
        )  # fmt: skip

    def _on(self, event: Event, spec: LiveWorkerSpec) -> None:
        """One message of the worker."""
        if isinstance(event, Connected):
            self._connection_number = event.connection
            self._rates[event.connection] = event.rate
            self._connected()
        elif isinstance(event, Problem):
            self._error(event.message)
            if event.retrying:
                self._set_state("retrying")
        else:
            self.stats.frame_in(time.monotonic())
            self._resumed(event.index, event.pts)
            if isinstance(event, Busy) or not self._submit(event, spec):
                self.stats.drop("busy")

    def _connected(self) -> None:
        """The first frame of a connection: running (again)."""
        if self._ran:
            self._reconnects += 1
        self._ran = True
        self._set_state("running")

    def _resumed(self, index: int, pts: int) -> None:
        """Where a replacement worker would go on after this frame."""
        last = self._resume.after_pts
        step = pts - last if last is not None and pts > last else self._resume.step
        self._resume = ReaderResume(index + 1, self._connection_number, pts, step)

    def _submit(self, event: Delivered, spec: LiveWorkerSpec) -> bool:
        """Send a delivered frame to the model; False when it was dropped (the sink is behind,
        or the worker prepared it for a pre-processing a reload replaced: the worker restarts,
        which for a network source is a reconnect)."""
        mv = self.processor.single
        pre = mv.processing.preprocess if mv and mv.processing else None
        serving = (pre.spec, pre.fused) if pre else (None, False)
        if serving != (spec.preprocess, spec.fused):
            log.info("live stream %s: the model's pre-processing changed; restarting the "
                     "worker", self.id)  # fmt: skip
            self._restart = True
            return False
        if event.preview is not None:
            self.preview.keep(event.index, event.preview)
        prepared = event.prepared()
        prepared.version = mv
        group = self.processor.group([prepared])  # normalised here (see ``Delivered``)
        return self._pump.send(group, event.arrived, event.connection)

    # -- sink thread ------------------------------------------------------------------------
    def _sink(self) -> None:
        tracker: Tracker | None = None
        connection = -1
        try:
            self._tracker(30.0)  # imports the tracking library now, not on the first frame
            for done in self._pump.results():
                if done.error is not None:
                    self._failed(done.error)
                    continue
                if done.item.tag != connection:  # timestamps restart with a connection
                    connection = done.item.tag
                    tracker = self._tracker(self._rates.get(connection, 30.0))
                    for old in [c for c in list(self._rates) if c < connection]:
                        self._rates.pop(old, None)  # earlier connections send no more frames
                self._publish(self._record(done, tracker), done.item.arrived)
        except BaseException as err:  # noqa: BLE001 - recorded; the stream stops
            log.error("live stream %s: sink failed", self.id, exc_info=err)
            self._last_error = f"sink failed: {type(err).__name__}: {err}"
        finally:
            self._stop.set()
            self._set_state("stopped")
            self.preview.close()
            self._call_loop(self._subscribers.end)
            if self.push is not None:
                self._call_loop(self.push.end)  # the outputs flush what is queued, then close
            if self.on_end is not None:
                self.on_end()

    def _tracker(self, rate: float) -> Tracker | None:
        spec = self._track
        if spec is None:
            return None
        return Tracker(TrackerSettings(spec.lost_seconds, spec.min_iou), frame_rate=rate)

    def _record(self, done: Finished, tracker: Tracker | None) -> LiveRecord:
        """The frame's record: its timestamps, its result (tracked) and the stream."""
        frame = done.frame
        assert done.output is not None
        result = done.output.result
        if tracker is not None and isinstance(result, Detections):
            result = tracker.update(result, float(frame.seconds))
        elif tracker is not None and isinstance(result, Moderation):
            tracked = tracker.update(result.detections, float(frame.seconds))
            result = Moderation(tracked, result.verdict)
        self.preview.render(frame.index, frame.seconds, result)  # only while watched
        fields = result.to_json() if result is not None else {}
        return LiveRecord(self.id, frame.index, frame.pts, frame.time_base, fields)

    def _failed(self, err: BaseException) -> None:
        """A frame gave no result: dropped as stale, or failed (the stream goes on)."""
        if isinstance(err, FrameDropped):
            self.stats.drop("stale")
            return
        self.stats.drop("failed")
        if not isinstance(err, FrameserveError):
            log.error("live stream %s: a frame failed", self.id, exc_info=err)
        self._last_error = f"a frame failed: {type(err).__name__}: {err}"

    def _publish(self, record: LiveRecord, arrived: float) -> None:
        self._call_loop(self._deliver, record, arrived)

    def _call_loop(self, callback: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the server is gone, nobody listens
            self._stop.set()
