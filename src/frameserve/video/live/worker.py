"""A live stream's source read in a worker process, so a crash inside FFmpeg ends one stream's
worker, never the server.

```
worker process (spawn)                                    server: the stream's reader thread
 connections: open -> demux -> decode -> sample/max_fps    LiveWorker.events(): each message
 -> pace a file -> FramePreparer (model-size tensor)        -> FramePump.send (lossy), stats,
 ──── Connected / Problem / Delivered / Busy / End ──pipe──> state; a "credit" back per frame
```

The child runs the connection loop: connection after connection with FFmpeg's timeouts,
exponential backoff for network sources, replays of a looping file, and pre-processing at model
size (the same ``FramePreparer`` as jobs). Live frames come at the source's rate, one at a time
(the frame at model size in uint8, or the whole RGB frame for multi-model pipelines), so they
travel over the pipe itself; jobs, which run as fast as the cores go in groups of frames, use a
shared-memory ring instead (``video.worker``). The child holds a credit for each frame it may
send: at most ``CREDITS`` frames the server has not taken, and the reader gives a credit back
only while the stream's pump has room. A frame decoded without a credit is dropped before pre-
processing (``Busy``), so a server that falls behind neither spends work on frames it would drop
nor makes the source back up into FFmpeg's buffers.

A child that dies (a signal, ``abort``, the out-of-memory killer) shows as the pipe closing:
``events`` raises ``WorkerDied`` and the stream starts a new worker after its backoff, from a
``ReaderResume`` so frame numbers, connection numbers and a looping file's timestamps keep
increasing (the new worker reconnects, or plays the file again from its start). While the
stream's preview is watched, the reader says so (a ``PreviewRequest``) and the child attaches a
small RGB picture to some frames (``video.live.preview``); otherwise it sends none. The child
ignores SIGINT and SIGTERM (a service manager signals every process of the service): the server
ends it, and a child whose server is gone sees its pipe close and ends by itself.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import av.error
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from frameserve.errors import FrameserveError
from frameserve.processing.spec import PreprocessSpec
from frameserve.processing.transform import Geometry, Preprocessor, opencv_on_caller_threads
from frameserve.video.frames import Frame, Sampling
from frameserve.video.live.preview import OFF, PictureGate, PreviewPicture, PreviewRequest
from frameserve.video.live.reader import ReaderResume, SourceReader
from frameserve.video.live.spec import LiveSettings, LiveSource
from frameserve.video.prepare import FramePreparer, Prepared
from frameserve.video.preview import preview_size
from frameserve.video.worker import POLL_S, WorkerProcess

log = logging.getLogger(__name__)

CREDITS = 3  # frames the child may have sent that the server has not taken yet
CREDIT_POLL_S = 0.005  # how often a held-back credit is looked at again
CLOSE_S = 0.5  # how long a stopped child may take to close its connection before it is killed
# Errors of opening or reading a source: the stream retries (network) or stops (file).
_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")  # user:password@ in a URL
SOURCE_ERRORS = (av.error.FFmpegError, OSError, EOFError, FrameserveError)


@dataclass(frozen=True)
class LiveWorkerSpec:
    """What a live stream's worker needs (pickled to the child)."""

    source: LiveSource
    settings: LiveSettings
    sampling: Sampling
    max_fps: float | None
    loop: bool
    codec_options: dict[str, str]
    preprocess: PreprocessSpec | None  # None: whole RGB frames (multi-model pipelines)
    fused: bool  # the runtime graph normalises: tensors stay uint8
    resume: ReaderResume
    where: str = "pipeline"
    log_level: int = logging.WARNING  # the child's log goes to stderr at this level


# -- messages from the child -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Connected:
    """A connection (or play of a file) delivered its first frame."""

    connection: int
    rate: float  # the source's nominal frame rate (the tracker's time unit)


@dataclass(frozen=True, slots=True)
class Problem:
    """An error of the source; ``retrying``: the worker tries again after its backoff."""

    message: str
    retrying: bool


@dataclass(frozen=True, slots=True)
class Delivered:
    """A kept frame, pre-processed: the frame at the model's input size (uint8, ``placed``; the
    server normalises it, a quarter of a float tensor's bytes over the pipe), or its ``[1, ...]``
    tensor (pre-processing that pads the normalised tensor), or, without pre-processing, its
    whole RGB image."""

    index: int
    pts: int
    time_base: Any
    keyframe: bool
    arrived: float  # time.monotonic() (one clock for every process of the machine)
    connection: int
    geometry: Geometry | None
    seconds: dict[str, float]
    placed: np.ndarray | None
    tensor: np.ndarray | None
    image: np.ndarray | None
    preview: PreviewPicture | None = None  # only while the reader asks for pictures

    def prepared(self) -> Prepared:
        """The frame as the pump takes it (still to be grouped: ``FrameProcessor.group``)."""
        frame = Frame(0, self.index, self.pts, self.time_base, self.image, self.keyframe)
        return Prepared(
            frame, placed=self.placed, tensor=self.tensor, geometry=self.geometry,
            seconds=dict(self.seconds),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Busy:
    """A kept frame dropped in the child: the server had not taken the earlier ones yet."""

    index: int
    pts: int


@dataclass(frozen=True, slots=True)
class End:
    """The source is done (a file ended, or an error retrying cannot fix)."""


Event = Connected | Problem | Delivered | Busy


# -- the child ---------------------------------------------------------------------------------
class _SourceUnusable(Exception):
    """An error of the source that retrying cannot fix: the stream stops."""


def _child(conn: Connection, spec: LiveWorkerSpec) -> None:
    """The worker process: read the source until it is done or the server says stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server ends its workers
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s %(levelname)s {spec.where} worker: %(message)s"
    )
    opencv_on_caller_threads()
    try:
        _SourceLoop(conn, spec).run()
        conn.send(End())
    except Exception as err:  # noqa: BLE001 - reported to the server, which stops the stream
        log.error("%s: the worker failed", spec.where, exc_info=err)
        try:
            conn.send(Problem(f"reader failed: {type(err).__name__}: {err}", retrying=False))
            conn.send(End())
        except OSError:
            pass  # the server is gone
    finally:
        conn.close()


class _SourceLoop:
    """Connections one after the other until stopped, a file ends, or it fails (the child)."""

    def __init__(self, conn: Connection, spec: LiveWorkerSpec) -> None:
        self.conn = conn
        self.spec = spec
        self.stop = threading.Event()
        self.credits = threading.BoundedSemaphore(CREDITS)
        self.reader = SourceReader(
            spec.source, spec.settings, spec.sampling, spec.max_fps, spec.codec_options,
            spec.resume,
        )  # fmt: skip
        pre = Preprocessor(spec.preprocess, spec.fused) if spec.preprocess else None
        self.preparer = FramePreparer(pre, spec.where)
        self.connection = spec.resume.connection
        self.preview = OFF  # pictures for the stream's preview (``video.live.preview``)
        self.scaler = VideoReformatter()  # kept: a new swscale context per picture costs more
        self.gate = PictureGate(0.0)
        self.listener = threading.Thread(target=self._listen, name="listen", daemon=True)
        self.listener.start()

    def _listen(self) -> None:
        """Credits, preview requests and the stop request from the server; a closed pipe (the
        server is gone) stops the worker too."""
        try:
            while (message := self.conn.recv()) != "stop":
                if message == "credit":
                    self.credits.release()
                elif isinstance(message, PreviewRequest):
                    self.preview = message
        except (EOFError, OSError):
            pass
        self.stop.set()

    def run(self) -> None:
        s, source = self.spec.settings, self.spec.source
        backoff = s.backoff_min_s
        while not self.stop.is_set():
            try:
                delivered, error = self._connection()
            except _SourceUnusable as err:
                self.conn.send(Problem(str(err), retrying=False))
                return
            if self.stop.is_set():
                return
            if not source.network:
                if error is not None:
                    self.conn.send(Problem(error, retrying=False))
                if error is not None or not self.spec.loop or delivered == 0:
                    return
                self.reader.end_play()
                continue
            if delivered:
                backoff = s.backoff_min_s  # the source worked: start the backoff again
            self.conn.send(Problem(error or "the source ended the stream", retrying=True))
            if self.stop.wait(backoff):
                return
            backoff = min(backoff * 2, s.backoff_max_s)

    def _connection(self) -> tuple[int, str | None]:
        """One connection (or play of a file): frames it delivered, and its error if any."""
        settings = self.spec.settings
        try:
            container = self.reader.open()
        except SOURCE_ERRORS as err:
            message = self._describe(err, "open_timeout_s", settings.open_timeout_s)
            if isinstance(err, av.error.ProtocolNotFoundError):
                scheme = self.spec.source.url.split(":", 1)[0]
                raise _SourceUnusable(
                    f"{message} (this server's FFmpeg cannot open {scheme} URLs)"
                ) from None
            return 0, message
        self.connection += 1
        delivered = 0
        try:
            rate = self.reader.frame_rate(container)
            for arrival in self.reader.frames(container, self.stop):
                self._check_size(arrival.frame)
                if delivered == 0:
                    self.conn.send(Connected(self.connection, rate))
                delivered += 1
                self._deliver(arrival.frame, arrival.arrived)
        except SOURCE_ERRORS as err:
            return delivered, self._describe(err, "read_timeout_s", settings.read_timeout_s)
        finally:
            container.close()
        return delivered, None

    def _check_size(self, frame: Frame) -> None:
        """A frame over ``max_frame_pixels`` stops the stream (a source may change its size
        at any frame; reading such frames on would hold their memory in the server)."""
        limit = self.spec.settings.max_frame_pixels
        if frame.size is None:
            return
        width, height = frame.size
        if limit is not None and width * height > limit:
            raise _SourceUnusable(
                f"frame {frame.index}: {width}x{height} ({width * height} pixels) exceeds the "
                f"limit of {limit} pixels (max_frame_pixels, --max-frame-pixels)"
            )

    def _describe(self, err: BaseException, setting: str, seconds: float) -> str:
        if isinstance(err, av.error.ExitError):  # PyAV's interrupt callback: our timeout
            return f"no data from the source within {setting} = {seconds:g} s"
        text = f"{type(err).__name__}: {err}"
        text = text.replace(self.spec.source.url, self.spec.source.describe())
        return _PASSWORD.sub(r"\1:***@", text)  # also in the URL rewritten to the address

    def _deliver(self, frame: Frame, arrived: float) -> None:
        """Pre-process and send a frame, or drop it when the server has not taken the last
        ``CREDITS`` frames yet."""
        if not self.credits.acquire(blocking=False):
            self.conn.send(Busy(frame.index, frame.pts))
            return
        try:
            picture = self._preview(frame, arrived)
            p = self.preparer.prepare(frame)
            image = None if p.model_input else frame.image
            message = Delivered(
                frame.index, frame.pts, frame.time_base, frame.keyframe, arrived,
                self.connection, p.geometry, p.seconds, p.placed, p.tensor, image, picture,
            )  # fmt: skip
            self.conn.send(message)
        except BaseException:
            self.credits.release()  # nothing reached the server: its credit is still ours
            raise

    def _preview(self, frame: Frame, arrived: float) -> PreviewPicture | None:
        """The frame scaled down for the stream's preview, while the server asks for pictures
        and one is due (``PreviewRequest``); made here from the decoder's picture, before it is
        let go, so the server process spends nothing on scaling (multi-model pipelines too,
        whose whole frame also comes: scaling it in the server would cost its cores)."""
        request = self.preview
        if self.gate.fps != request.fps:
            self.gate = PictureGate(request.fps)
        size = frame.size
        if not request.on or size is None or not self.gate.due(arrived):
            return None
        w, h = preview_size(size[0], size[1], request.width)
        small: np.ndarray
        if frame.picture is not None:
            small = self.scaler.reformat(frame.picture, width=w, height=h, format="rgb24",
                                         interpolation="BILINEAR").to_ndarray()  # fmt: skip
        else:
            assert frame.image is not None
            small = cv2.resize(frame.image, (w, h), interpolation=cv2.INTER_AREA)
        return PreviewPicture(small, size)


# -- the server's side -------------------------------------------------------------------------
class LiveWorker(WorkerProcess):
    """One connection loop of a live stream in a child process; ``events`` yields what it says."""

    def __init__(self, spec: LiveWorkerSpec, name: str) -> None:
        self.spec = spec
        super().__init__(_child, (spec,), name, f"reading {spec.source.describe()}")

    def events(self, stop: threading.Event, room: Callable[[], bool]) -> Iterator[Event]:
        """The child's messages until its ``End`` (the source is done) or ``stop``. A frame's
        credit goes back once the caller has taken it and ``room()`` says the next one could be
        used. Raises ``WorkerDied`` when the child ends without saying so."""
        owed = 0
        while not stop.is_set():
            if owed and room():
                for _ in range(owed):
                    self.send("credit")
                owed = 0
            message = self.receive(CREDIT_POLL_S if owed else POLL_S)
            if message is None:
                continue
            if isinstance(message, End):
                return
            yield message
            if isinstance(message, Delivered):
                owed += 1

    def close(self) -> None:
        """Ask the child to stop, give it a moment to close its connection, then end it."""
        self.send("stop")
        self.process.join(CLOSE_S)
        super().close()
