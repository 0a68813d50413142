"""Decoding with PyAV (FFmpeg): frames with exact timestamps, sampled, corrupt data skipped.

FFmpeg decodes on its own codec threads (frame and slice threading, sized from the core
budget: ``default_decode_threads``); this module runs in one decoder thread per input and
yields the frames the sampling keeps as FFmpeg decoded them (the model stage converts them to
what it needs). Timestamps stay integers in the stream's time base, so variable frame rate
survives. With ``keyframes`` sampling the decoder skips every other frame outright
(``skip_frame=NONKEY``), which is what makes that mode cheap. A source may start at a
``SeekPoint`` (a resumed job): the demuxer seeks back to that keyframe, and indices and
sampling continue as if the file had been decoded from its beginning.
"""

from __future__ import annotations

import bisect
import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import av.error

from frameserve.errors import VideoError
from frameserve.video.filters import FilterChain, filter_frames
from frameserve.video.frames import Frame, FrameSelector, Sampling, SeekPoint
from frameserve.video.inputs import FILE_OPTIONS, check_file_format, format_refused

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What the container says about its first video stream."""

    path: Path
    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate; None when the container does not know
    frames: int  # 0 when unknown
    duration_s: float | None
    codec: str
    has_audio: bool


@dataclass(slots=True)
class DecodeStats:
    """Counters of one decode, read by the profile and the summary."""

    decoded: int = 0
    kept: int = 0
    corrupt: int = 0
    seconds: float = 0.0


def open_video(path: Path) -> Any:
    """``av.open`` with a clear error for anything that is not a readable video; only the
    ``file`` protocol and demuxers that read nothing but their file (``video.inputs``)."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    check_file_format(path, str(path))
    try:
        container = av.open(str(path), metadata_errors="ignore",
                            container_options=dict(FILE_OPTIONS))  # fmt: skip
    except av.error.ArgumentError as err:  # EINVAL: the probed demuxer is not on the whitelist
        raise format_refused(path) from err
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoError(f"{path}: not a video FFmpeg can read ({err})") from None
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg reads a still image as 1 frame
        container.close()
        raise VideoError(f"{path}: is a still image ({fmt}), not a video")
    if not container.streams.video:
        kinds = sorted({str(s.type) for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(f"{path}: expected a video stream, found streams: {', '.join(kinds)}")
    return container


def probe(path: Path) -> VideoInfo:
    """Read the container header only."""
    container = open_video(path)
    try:
        return _info(path, container)
    finally:
        container.close()


def _info(path: Path, container: Any) -> VideoInfo:
    stream = container.streams.video[0]
    ctx = stream.codec_context
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        path=path,
        width=ctx.width,
        height=ctx.height,
        time_base=stream.time_base or Fraction(1, 90000),
        rate=Fraction(rate) if rate else None,
        frames=stream.frames or (round(duration * rate) if duration and rate else 0),
        duration_s=duration,
        codec=ctx.name,
        has_audio=bool(container.streams.audio),
    )


class _SeekMissed(Exception):
    """The demuxer's seek landed after the keyframe asked for: MPEG-TS and other formats
    without an index seek by bisecting bytes and may resume a GOP late."""


def default_decode_threads(cores: int, inputs: int, filters: bool = False) -> int:
    """FFmpeg threads per input when the caller does not say: half the core budget, shared by
    the inputs, at least one; the whole budget for a pipeline with ``filters:`` (its FFmpeg
    graph is then the heavy part, and uses the same threads).

    The models' runtime already keeps the budget busy; codec threads on top of it only
    oversubscribe the cores. Measured with ``faces`` on 1280x720 H.264, 2 cores: one thread
    instead of two, 3% less wall and 2% less CPU on both benchmark clips.
    """
    if filters:
        return max(1, cores)
    return max(1, cores // (2 * max(1, inputs)))


class VideoSource:
    """The kept frames of one input, in presentation order, as ``Frame`` objects."""

    def __init__(
        self,
        path: Path,
        stream_id: int,
        sampling: Sampling,
        threads: int,
        start: SeekPoint | None = None,
        first_index: int = 0,
        codec_options: dict[str, str] | None = None,
        info: VideoInfo | None = None,
        filters: FilterChain | None = None,
        *,
        exact_seek: bool = False,
        until: Callable[[int], bool] | None = None,
    ) -> None:
        """``codec_options``: FFmpeg decoder options (a pipeline's ``decode`` block);
        ``info``: the input's header, probed elsewhere (in a worker process); None: probe now.
        ``start``: decode from this keyframe (a resumed job), with the frame indices and the
        sampling decisions of a decode from the beginning; kept frames with an index below
        ``first_index`` are decoded and sampled but not yielded (they were written before).
        ``filters``: a pipeline's FFmpeg filter chain, run on the kept frames (``video.filters``);
        ``info`` then gives the size of the frames it makes. ``exact_seek``: a seek that
        misses its keyframe raises ``VideoError`` (a second decoder, ``video.split``) instead
        of decoding from the start. ``until(pts)``: asked of each decoded frame, in
        presentation order; True ends the decoding before that frame, which is not counted (an
        input split between two decoders, ``video.split``)."""
        self.path = path
        self.exact_seek = exact_seek
        self.until = until
        self.start = start
        self.first_index = first_index
        self.stream_id = stream_id
        self.sampling = sampling
        self.threads = max(1, threads)
        self.info = info if info is not None else probe(path)
        self.stats = DecodeStats()
        self.codec_options = dict(codec_options or {})
        self.filters = filters
        if filters is not None:
            width, height = filters.output_size(self.info.width, self.info.height)
            self.info = replace(self.info, width=width, height=height)

    def expected_frames(self) -> int:
        """How many frames the sampling will keep, estimated from the header (0: unknown)."""
        n, s, info = self.info.frames, self.sampling, self.info
        if s.mode == "every":
            return -(-n // s.every)
        if s.mode == "fps" and info.duration_s:
            return min(n, int(info.duration_s * s.fps) + 1) if n else int(info.duration_s * s.fps)
        if s.mode == "keyframes":
            return 0
        return n

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Decode and yield kept frames until the end of the file or ``stop`` is set (through
        the pipeline's filters, when it has some: their time counts as decoding)."""
        if self.filters is None:
            yield from self._frames(stop)
            return
        kept = self._frames(stop)
        for frame, seconds in filter_frames(kept, self.filters, self.threads, str(self.path)):
            self.stats.seconds += seconds
            yield frame

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        seek = self.start is not None
        while True:
            container = open_video(self.path)
            try:
                yield from self._decode(container, stop, seek)
                return
            except _SeekMissed as missed:
                if self.exact_seek:
                    raise VideoError(f"{self.path}: {missed}") from None
                log.warning("%s: %s; decoding from the start instead", self.path, missed)
                seek = False  # nothing was yielded yet: the same frames come from the start
            finally:
                container.close()

    def _decode(self, container: Any, stop: threading.Event, seek: bool) -> Iterator[Frame]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        if self.codec_options:
            stream.codec_context.options = dict(self.codec_options)
        if self.sampling.mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        time_base = stream.time_base or Fraction(1, 90000)
        selector = FrameSelector.resume(self.sampling, self.start)
        passed: SeekPoint | None = None  # the keyframe passed since the last kept frame
        started = time.perf_counter()
        for frame, index in self._decoded(container, stream, stop, seek):
            pts = frame.pts if frame.pts is not None else self._guess_pts(index, time_base)
            if frame.key_frame and frame.pts is not None:
                passed = selector.seek_point(pts, index)
            keep = selector.keep(index, pts, time_base, bool(frame.key_frame))
            if not keep or index < self.first_index:
                continue
            self.stats.kept += 1
            self.stats.seconds += time.perf_counter() - started
            yield Frame(
                self.stream_id, index, pts, time_base, None, bool(frame.key_frame),
                seek=passed, picture=frame,
            )  # fmt: skip
            passed = None
            started = time.perf_counter()
        self.stats.seconds += time.perf_counter() - started

    def _decoded(
        self, container: Any, stream: Any, stop: threading.Event, seek: bool
    ) -> Iterator[tuple[Any, int]]:
        """Decoded frames from ``start`` on (all without one) with their index: the rank of
        their pts among the packet pts seen, offset by the start keyframe's index."""
        start = self.start
        low, offset = (start.pts, start.index) if start is not None else (None, 0)
        if seek and start is not None:  # back to the keyframe (or one before it)
            container.seek(start.pts, stream=stream, backward=True, any_frame=False)
        checked = not seek
        seen_pts: list[int] = []  # packet pts from the start on, sorted
        for packet in container.demux(stream):
            if stop.is_set():
                return
            if packet.pts is not None and (low is None or packet.pts >= low):
                bisect.insort(seen_pts, packet.pts)
            for frame in self._decode_packet(packet):
                if low is not None and frame.pts is not None:
                    if frame.pts < low:  # before the keyframe: the previous run wrote it
                        continue
                    if not checked and frame.pts > low:
                        raise _SeekMissed(f"seeking to pts {low} landed at pts {frame.pts}")
                    checked = True
                if self.until is not None and frame.pts is not None and self.until(frame.pts):
                    return  # the rest is another decoder's
                index = offset + self._index(frame, seen_pts)
                self.stats.decoded += 1
                yield frame, index
        if not checked:  # the seek went past the keyframe and the last frame
            raise _SeekMissed(f"seeking to pts {low} found no frame at or after it")

    def _decode_packet(self, packet: Any) -> list[Any]:
        """Frames of one packet; a corrupt packet is skipped with a warning and counted."""
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as err:
            self.stats.corrupt += 1
            # With frame threads FFmpeg reports the error a packet or two late.
            where = f"pts {packet.pts}" if packet.pts is not None else "the end"
            log.warning("%s: skipped a corrupt packet at or before %s (%s)", self.path, where, err)
            return []
        good = []
        for frame in frames:
            if frame.is_corrupt:
                self.stats.corrupt += 1
                log.warning("%s: skipped a corrupt frame at pts %s", self.path, frame.pts)
                continue
            good.append(frame)
        return good

    def _index(self, frame: Any, seen_pts: list[int]) -> int:
        if frame.pts is None or not seen_pts:
            return self.stats.decoded  # no timestamps: count decoded frames
        return bisect.bisect_left(seen_pts, frame.pts)

    def _guess_pts(self, index: int, time_base: Fraction) -> int:
        """A frame without a timestamp (raw elementary streams): place it by the frame rate."""
        rate = self.info.rate or Fraction(25)
        return int(index / rate / time_base)


READ_AHEAD = 4  # decoded frames waiting for the thread that prepares them, at most
_POLL_S = 0.1  # how often a blocked read-ahead thread looks at its stop events
_END = object()


def read_ahead(
    frames: Iterator[T], stop: threading.Event, name: str, depth: int = READ_AHEAD
) -> Iterator[T]:
    """``frames``, decoded on a thread of their own (``name``) at most ``depth`` ahead.

    The thread that iterates this one then only prepares frames (colour conversion and
    resizing at model size), while FFmpeg decodes the next ones on another core: one thread
    doing both was the run's critical path (``faces`` on 1280x720, one codec thread: busy
    95-98% of the run while the models waited). The decoding thread runs the whole generator,
    ``close`` included; its error is raised here, after the frames it decoded before it.
    It ends on ``stop``, at the end of ``frames``, or when the caller stops iterating.
    """
    ahead: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    leaving = threading.Event()  # the caller stopped iterating
    failed: list[BaseException] = []

    def put(item: object) -> bool:
        while not (stop.is_set() or leaving.is_set()):
            try:
                ahead.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    break
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(err)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
            put(_END)

    runner = contextvars.copy_context().run  # the caller's log context (a job's id)
    thread = threading.Thread(target=runner, args=(decode,), name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = ahead.get(timeout=_POLL_S)
            except queue.Empty:
                if not thread.is_alive() and ahead.empty():
                    break  # stopped before it could say so
                continue
            if item is _END:
                break
            yield item
        if failed:
            raise failed[0]
    finally:
        leaving.set()
        thread.join()
