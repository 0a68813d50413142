"""Reading one live source with PyAV: open, demux, decode, sample, pace.

``SourceReader`` runs in the stream's worker process (``video.live.worker``), used by its
connection loop only. One ``open`` + ``frames`` is one connection (or one play of a file); the
loop reopens after a failure or, for a looping file, at the end. FFmpeg's own timeouts bound
every blocking call: ``open_timeout_s`` while connecting, ``read_timeout_s`` for each read
(PyAV's interrupt callback); a stop request is seen between packets.

Timestamps: a network source keeps its own pts (they may restart on a reconnect; the stream's
tracker restarts with them). A file is played at its real rate: each kept frame is released
when its pts is due on the wall clock, and that instant is its arrival; a looping file's later
plays are shifted by the length of the earlier ones, so pts and frame numbers keep increasing.
Frame numbers count decoded frames over the stream's whole life, across reconnects and loops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error

from frameserve.errors import VideoError
from frameserve.video.frames import Frame, FrameSelector, Sampling
from frameserve.video.inputs import FILE_OPTIONS
from frameserve.video.live.spec import NETWORK_FORMATS, LiveSettings, LiveSource

log = logging.getLogger(__name__)

DEFAULT_TIME_BASE = Fraction(1, 90000)  # a stream that states none (MPEG ticks)


@dataclass(frozen=True, slots=True)
class Arrival:
    """A kept frame and when it arrived (``time.monotonic()``), for the lag."""

    frame: Frame
    arrived: float


@dataclass(frozen=True, slots=True)
class ReaderResume:
    """Where a new reader of a stream goes on after an earlier one ended (its worker died):
    frame and connection numbers continue, and a file's next play starts after ``after_pts``."""

    decoded: int = 0  # the next frame's number
    connection: int = 0  # connections (plays) so far
    after_pts: int | None = None  # files: the last pts delivered, shifted as delivered
    step: int = 0  # files: ticks between the last two frames delivered


@dataclass(slots=True)
class _Play:
    """Timestamps of one play of a file, to shift the next play of a loop after it."""

    first: int | None = None
    last: int | None = None
    step: int = 0  # ticks between the last two frames


class SourceReader:
    """Frames of one live source, connection after connection (see the module docstring)."""

    def __init__(
        self,
        source: LiveSource,
        settings: LiveSettings,
        sampling: Sampling,
        max_fps: float | None,
        codec_options: dict[str, str] | None = None,
        resume: ReaderResume | None = None,
    ) -> None:
        """``codec_options``: FFmpeg decoder options (the pipeline's ``decode`` block);
        ``resume``: go on from an earlier reader of the same stream."""
        self.source = source
        self.settings = settings
        self.sampling = sampling
        self.max_fps = Fraction(max_fps).limit_denominator(1000) if max_fps else None
        self.codec_options = dict(codec_options or {})
        resume = resume or ReaderResume()
        self.decoded = resume.decoded  # frames decoded over the stream's life: the next number
        self.corrupt = 0  # packets or frames skipped as corrupt
        self._clock: float | None = None  # wall time of a file's stream time 0
        self._offset = 0  # ticks added to this play's pts (loops)
        self._play = _Play()
        self._after = resume.after_pts
        self._after_step = resume.step

    def open(self) -> Any:
        """Open the source: a container with a video stream, or an FFmpeg error / VideoError.
        A network source passes the destination policy again first (its name may point
        elsewhere now: ``InvalidInput``), and FFmpeg connects to the address it checked."""
        timeout = (self.settings.open_timeout_s, self.settings.read_timeout_s)
        url, options = self.source.url, {"protocol_whitelist": self.source.protocols}
        if self.source.network:
            destination = self.settings.policy.check(url)
            url = destination.url
            options.update(destination.options)
            options["format_whitelist"] = NETWORK_FORMATS
        else:
            options.update(FILE_OPTIONS)
        container = av.open(url, timeout=timeout, container_options=options,
                            metadata_errors="ignore")  # fmt: skip
        if not container.streams.video:
            kinds = sorted({str(s.type) for s in container.streams}) or ["none"]
            container.close()
            raise VideoError(f"source: expected a video stream, found streams: {', '.join(kinds)}")
        return container

    def frame_rate(self, container: Any) -> float:
        """The stream's nominal frame rate (the tracker's time unit); 30 when unknown."""
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else 30.0

    def frames(self, container: Any, stop: threading.Event) -> Iterator[Arrival]:
        """Kept frames of one connection (or play) until its end, an error or ``stop``."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.settings.decode_threads
        if self.codec_options:
            stream.codec_context.options = dict(self.codec_options)
        if self.sampling.mode == "keyframes":
            stream.codec_context.skip_frame = "NONKEY"
        time_base = Fraction(stream.time_base) if stream.time_base else DEFAULT_TIME_BASE
        rate = self.frame_rate(container)
        selectors = [FrameSelector(self.sampling)]
        if self.max_fps is not None:
            selectors.append(FrameSelector(Sampling("fps", fps=self.max_fps)))
        for packet in container.demux(stream):
            if stop.is_set():
                return
            for decoded in self._decode(packet):
                arrived = time.monotonic()
                index = self.decoded
                self.decoded += 1
                pts = self._pts(decoded, index, time_base, rate)
                key = bool(decoded.key_frame)
                if not all(s.keep(index, pts, time_base, key) for s in selectors):
                    continue
                if not self.source.network:
                    arrived = self._release(pts * time_base, stop)
                    if stop.is_set():
                        return
                frame = Frame(0, index, pts, time_base, None, key, picture=decoded)
                yield Arrival(frame, arrived)

    def end_play(self) -> None:
        """A file's play ended: the next one (a loop) continues where this one stopped."""
        p = self._play
        if p.first is not None and p.last is not None:
            self._offset += p.last - p.first + max(p.step, 1)
        self._play = _Play()

    def _pts(self, decoded: Any, index: int, time_base: Fraction, rate: float) -> int:
        """The frame's pts in ``time_base``, shifted for a loop; guessed from the frame rate
        when the container has none (raw elementary streams)."""
        pts = decoded.pts
        if pts is None:
            pts = int(index / Fraction(rate).limit_denominator(1000) / time_base)
        if self.source.network:
            return int(pts)
        p = self._play
        if p.first is None:
            p.first = pts
            if self._after is not None:  # a new reader: play on after the last frame delivered
                self._offset = self._after + max(self._after_step, 1) - pts
                self._after = None
        if p.last is not None and pts > p.last:
            p.step = pts - p.last
        p.last = pts if p.last is None else max(p.last, pts)
        return int(pts + self._offset)

    def _release(self, seconds: Fraction, stop: threading.Event) -> float:
        """Wait until a file's frame is due on the wall clock; return when it was due."""
        now = time.monotonic()
        if self._clock is None:
            self._clock = now - float(seconds)
        due = self._clock + float(seconds)
        if due > now:
            stop.wait(due - now)
        return due

    def _decode(self, packet: Any) -> list[Any]:
        """Frames of one packet; corrupt packets and frames are skipped and counted."""
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as err:
            self._corrupt(f"packet at pts {packet.pts} ({err})")
            return []
        good = []
        for frame in frames:
            if frame.is_corrupt:
                self._corrupt(f"frame at pts {frame.pts}")
                continue
            good.append(frame)
        return good

    def _corrupt(self, what: str) -> None:
        self.corrupt += 1
        level = logging.WARNING if self.corrupt == 1 or self.corrupt % 100 == 0 else logging.DEBUG
        log.log(
            level,
            "%s: skipped a corrupt %s (%d so far)",
            self.source.describe(),
            what,
            self.corrupt,
        )
