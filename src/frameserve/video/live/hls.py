"""A live stream's annotated pictures as HLS, encoded only while someone reads the playlist.

``HlsEncoder`` owns one thread and one private folder. The stream's sink thread offers it
annotated pictures (``offer``: a queue of two, newest wins, never blocking); the thread encodes
them with H.264 (libx264, ``ultrafast``/``zerolatency``, one thread) into FFmpeg's own ``hls``
muxer, which writes ``index.m3u8`` and ``seg000000.ts``... into the folder, keeps the last
``list_size`` segments and deletes older ones. The HTTP route serves only names of that form
that exist there (``file``).

It ends by itself ``idle_s`` after the last request (``touch``), or when the stream ends
(``stop``); either way the muxer is closed and the folder removed in a ``finally``.

Timestamps: a picture's pts is its frame's stream time in 1/90000 s from the first picture,
so a variable picture rate keeps real time. They never repeat: a time at or before the last
one (a network source restarting its clock after a reconnect) continues one frame interval
after the last picture (``Timeline``).
"""

from __future__ import annotations

import logging
import math
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from frameserve.errors import ConfigError
from frameserve.video.preview import preview_size

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
PLAYLIST = "index.m3u8"
SEGMENTS = "seg%06d.ts"
NAME = re.compile(r"index\.m3u8|seg\d{6,9}\.ts")  # what the route may serve
POLL_S = 0.25  # how often the encoder thread looks at its idle time and stop request


@dataclass(frozen=True)
class HlsSettings:
    """HLS output of live streams (``serve --hls-*``)."""

    fps: float = 10.0  # pictures per second at most
    segment_s: float = 1.0  # FFmpeg's hls_time: a segment's length (a keyframe starts each)
    list_size: int = 6  # segments in the playlist
    idle_s: float = 20.0  # the encoder stops this long after the last request

    def __post_init__(self) -> None:
        for name in ("fps", "segment_s", "idle_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"HlsSettings.{name}: expected a number > 0, got {value!r}")
        if not isinstance(self.list_size, int) or self.list_size < 2:
            raise ConfigError(f"HlsSettings.list_size: expected >= 2, got {self.list_size!r}")


_Picture = tuple[np.ndarray, Fraction, tuple[int, int]]  # image, stream time, source size


class Timeline:
    """Strictly increasing pts (in ``TIME_BASE``) from stream times in seconds."""

    def __init__(self, fps: float) -> None:
        self._step = max(1, round(1 / (fps * TIME_BASE)))  # one picture interval in ticks
        self._offset: int | None = None
        self._last = -1

    def pts(self, seconds: Fraction | float) -> int:
        ticks = round(Fraction(seconds) / TIME_BASE)
        if self._offset is None:
            self._offset = -ticks
        pts = ticks + self._offset
        if pts <= self._last:  # the clock went back (a reconnect): carry on after the last
            self._offset += self._last + self._step - pts
            pts = self._last + self._step
        self._last = pts
        return pts


class HlsEncoder:
    """One HLS output of one stream (see the module docstring); thread-safe."""

    def __init__(
        self, settings: HlsSettings, root: Path | None, where: str, width: int = 640
    ) -> None:
        """``width``: the video's width at most (its size is set by the first picture's
        frame: a smaller picture asked for by an MJPEG viewer is scaled up to it)."""
        self.settings = settings
        self.where = where
        self.width = width
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="hls-", dir=root))
        self.frames = 0  # pictures encoded (written by the thread)
        self.ended = False  # the thread ended: no more segments come
        self._queue: queue.Queue[_Picture] = queue.Queue(maxsize=2)
        self._stop = threading.Event()
        self._output: Any = None  # the muxer (the thread's), closed in its finally
        self._last_request = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"hls-{where}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def touch(self) -> None:
        """A request read the playlist or a segment: keep encoding."""
        self._last_request = time.monotonic()

    def offer(self, image: np.ndarray, seconds: Fraction, source: tuple[int, int]) -> None:
        """A picture to encode (of a ``source`` = (width, height) frame, at ``seconds`` of the
        stream); never blocks: when the encoder is behind, the oldest waiting picture makes
        room."""
        while True:
            try:
                self._queue.put_nowait((image, seconds, source))
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass

    def file(self, name: str) -> Path | None:
        """The path of a file the muxer wrote (``index.m3u8``, ``segNNNNNN.ts``); None for any
        other name or a file not (or no longer) there."""
        if not NAME.fullmatch(name):
            return None
        path = self.folder / name
        return path if path.is_file() else None

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the thread (the muxer closes, the folder goes) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- the encoder thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._encode_until_idle()
        except Exception as err:  # noqa: BLE001 - logged; the next request starts a new one
            log.error("%s: HLS encoder failed", self.where, exc_info=err)
        finally:
            self.ended = True
            if self._output is not None:
                try:
                    self._output.close()
                except Exception as err:  # noqa: BLE001 - the folder goes anyway
                    log.warning("%s: closing the HLS muxer failed: %s", self.where, err)
            shutil.rmtree(self.folder, ignore_errors=True)
            log.info("%s: HLS encoder stopped after %d pictures", self.where, self.frames)

    def _idle(self) -> bool:
        return time.monotonic() - self._last_request > self.settings.idle_s

    def _encode_until_idle(self) -> None:
        output: Any = None
        stream: Any = None
        timeline = Timeline(self.settings.fps)
        while not self._stop.is_set() and not self._idle():
            try:
                image, seconds, source = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if output is None:
                output, stream = self._open(*preview_size(*source, self.width))
                self._output = output
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if (frame.width, frame.height) != (stream.width, stream.height):
                frame = frame.reformat(width=stream.width, height=stream.height)
            frame.pts = timeline.pts(seconds)
            frame.time_base = TIME_BASE
            for packet in stream.encode(frame):
                output.mux(packet)
            self.frames += 1
        if output is not None:
            for packet in stream.encode(None):
                output.mux(packet)

    def _open(self, width: int, height: int) -> tuple[Any, Any]:
        s = self.settings
        output = av.open(
            str(self.folder / PLAYLIST), mode="w", format="hls",
            options={
                "hls_time": f"{s.segment_s:g}", "hls_list_size": str(s.list_size),
                "hls_flags": "delete_segments+temp_file",
                "hls_segment_filename": str(self.folder / SEGMENTS),
            },
        )  # fmt: skip
        gop = max(1, round(s.fps * s.segment_s))
        stream = output.add_stream(
            "libx264", rate=Fraction(s.fps).limit_denominator(1000),
            options={"preset": "ultrafast", "tune": "zerolatency", "threads": "1"},
        )  # fmt: skip
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.codec_context.gop_size = gop
        log.info("%s: HLS encoder started (%dx%d, at most %g fps) in %s",
                 self.where, width, height, s.fps, self.folder)  # fmt: skip
        return output, stream
