"""Decoding with PyAV (FFmpeg): frames with exact timestamps, sampled, corrupt data skipped.

FFmpeg decodes on its own codec threads (frame and slice threading, sized from the core
budget); this module runs in one decoder thread per input and converts only the frames the
sampling keeps to RGB. Timestamps stay integers in the stream's time base, so variable frame
rate survives. With ``keyframes`` sampling the decoder skips every other frame outright
(``skip_frame=NONKEY``), which is what makes that mode cheap.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error

from frameserve.errors import VideoError
from frameserve.processing.transform import Preprocessor
from frameserve.video.frames import Frame, FrameSelector, Sampling
from frameserve.video.scaler import ScalerPlan, plan_scaler

log = logging.getLogger(__name__)


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
    """``av.open`` with a clear error for anything that is not a readable video."""
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    try:
        container = av.open(str(path), metadata_errors="ignore")
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


class VideoSource:
    """The kept frames of one input, in presentation order, as ``Frame`` objects."""

    def __init__(
        self,
        path: Path,
        stream_id: int,
        sampling: Sampling,
        threads: int,
        resize_for: Preprocessor | None = None,
    ) -> None:
        """``resize_for``: the model's pre-processing, when only its input is needed (no
        full-size frames for crops or video output): FFmpeg may then resize (see ``scaler``)."""
        self.path = path
        self.stream_id = stream_id
        self.sampling = sampling
        self.threads = max(1, threads)
        self.info = probe(path)
        self.stats = DecodeStats()
        self._resize_for = resize_for
        self.scaler: ScalerPlan | None = None

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
        """Decode and yield kept frames until the end of the file or ``stop`` is set."""
        container = open_video(self.path)
        try:
            yield from self._decode(container, stop)
        finally:
            container.close()

    def _decode(self, container: Any, stop: threading.Event) -> Iterator[Frame]:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        if self.sampling.mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        time_base = stream.time_base or Fraction(1, 90000)
        selector = FrameSelector(self.sampling)
        seen_pts: list[int] = []  # packet pts, sorted: a frame's index is its rank
        started = time.perf_counter()
        for packet in container.demux(stream):
            if stop.is_set():
                return
            if packet.pts is not None:
                bisect.insort(seen_pts, packet.pts)
            for frame in self._decode_packet(packet):
                index = self._index(frame, seen_pts)
                self.stats.decoded += 1
                pts = frame.pts if frame.pts is not None else self._guess_pts(index, time_base)
                seconds = pts * time_base
                if not selector.keep(index, seconds, bool(frame.key_frame)):
                    continue
                image, scaled = self._image(frame)
                self.stats.kept += 1
                self.stats.seconds += time.perf_counter() - started
                yield Frame(
                    self.stream_id, index, pts, time_base, image, bool(frame.key_frame),
                    source_size=(frame.width, frame.height) if scaled else None,
                )  # fmt: skip
                started = time.perf_counter()
        self.stats.seconds += time.perf_counter() - started

    def _image(self, frame: Any) -> tuple[Any, bool]:
        """The frame in RGB: full size, or already resized by FFmpeg where that matches."""
        if self._resize_for is not None and self.scaler is None:
            self.scaler = plan_scaler(self._resize_for, frame)
            log.info("%s: %s", self.path, self.scaler.describe())
        plan = self.scaler
        if plan is not None and plan.size is not None:
            w, h = plan.size
            small = frame.reformat(
                width=w, height=h, format="rgb24", interpolation=plan.interpolation
            )
            return small.to_ndarray(), True
        return frame.to_ndarray(format="rgb24"), False

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
