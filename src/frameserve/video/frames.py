"""Frames as they travel through a video pipeline, and which decoded frames a run keeps.

A ``Frame`` is an RGB image with its exact timestamp (integer pts in the stream's time base),
the decoded frame index and the stream it belongs to. ``Sampling`` is what ``--sample`` and a
pipeline's ``sample:`` say; ``FrameSelector`` applies it to decoded frames in order, with
exact rational arithmetic so ``fps:F`` picks the same frames on every machine. A ``SeekPoint``
is a keyframe decoding can start again from, with the selector's state just before it, so a
resumed decode keeps exactly the frames the first one would have kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from frameserve.errors import InvalidInput

SamplingMode = Literal["all", "every", "fps", "keyframes"]
_SAMPLE_RE = re.compile(r"^(all|keyframes|every:(\d+)|fps:(\d+(?:\.\d+)?|\d+/\d+))$")


@dataclass(frozen=True, slots=True)
class Sampling:
    """``all`` | ``every:N`` (frames 0, N, 2N, ...) | ``fps:F`` | ``keyframes``."""

    mode: SamplingMode = "all"
    every: int = 1
    fps: Fraction = Fraction(0)

    @classmethod
    def parse(cls, text: str, where: str = "--sample") -> Sampling:
        m = _SAMPLE_RE.match(text.strip())
        if m is None:
            raise InvalidInput(f"{where}: expected all, every:N, fps:F or keyframes, got {text!r}")
        if m.group(2) is not None:
            n = int(m.group(2))
            if n < 1:
                raise InvalidInput(f"{where}: every:N needs N >= 1, got {n}")
            return cls("every", every=n)
        if m.group(3) is not None:
            try:
                fps = Fraction(m.group(3))
            except ZeroDivisionError:
                raise InvalidInput(f"{where}: fps:N/D needs D > 0, got {m.group(3)}") from None
            if fps <= 0:
                raise InvalidInput(f"{where}: fps:F needs F > 0, got {m.group(3)}")
            return cls("fps", fps=fps)
        return cls("keyframes" if text.strip() == "keyframes" else "all")

    def __str__(self) -> str:
        if self.mode == "every":
            return f"every:{self.every}"
        if self.mode == "fps":
            return f"fps:{self.fps}"
        return self.mode


def check_sample(value: str | None, where: str = "sample") -> str | None:
    """The body of a pydantic ``sample`` validator: ``value`` when None or a valid sampling,
    else ``ValueError`` (which pydantic reports with the field)."""
    if value is not None:
        try:
            Sampling.parse(value, where)
        except InvalidInput as err:
            raise ValueError(err.message) from None
    return value


@dataclass(frozen=True, slots=True)
class SeekPoint:
    """A keyframe to decode from again: its pts and frame index, and the selector state there.

    ``next_tick`` is ``FrameSelector``'s state before it decided on this keyframe (``fps:F``
    only; the other modes decide from the frame alone), so replayed decisions are identical.
    """

    pts: int
    index: int
    next_tick: Fraction | None = None


@dataclass(slots=True)
class FrameSelector:
    """Decides, frame by frame in presentation order, whether a decoded frame is kept.

    ``fps:F`` keeps the first frame at or after each tick ``t0 + k/F`` (and never two frames
    for one tick), which is what FFmpeg's ``fps`` filter does for a down-conversion without
    duplicating frames; it works on timestamps, so variable frame rate is handled.
    """

    sampling: Sampling
    _next_tick: Fraction | None = field(default=None, init=False)

    @classmethod
    def resume(cls, sampling: Sampling, point: SeekPoint | None) -> FrameSelector:
        """A selector in the state it had at ``point`` (a fresh one for None)."""
        selector = cls(sampling)
        if point is not None:
            selector._next_tick = point.next_tick
        return selector

    def seek_point(self, pts: int, index: int) -> SeekPoint:
        """Where decoding may restart: the keyframe at ``pts`` before ``keep`` decides on it."""
        return SeekPoint(pts, index, self._next_tick)

    def keep(self, index: int, pts: int, time_base: Fraction, keyframe: bool) -> bool:
        """Whether the frame at ``index`` (``pts`` in ``time_base``) is kept; only ``fps:F``
        reads its time (a decoder calls this for every frame: the other modes skip the
        ``Fraction`` product)."""
        s = self.sampling
        if s.mode == "all":
            return True
        if s.mode == "every":
            return index % s.every == 0
        if s.mode == "keyframes":
            return keyframe
        seconds = pts * time_base
        if self._next_tick is None:
            self._next_tick = seconds
        if seconds < self._next_tick:
            return False
        step = 1 / s.fps
        # Skip ticks that fell between frames (a gap in a variable-rate stream).
        ticks = (seconds - self._next_tick) // step + 1
        self._next_tick += ticks * step
        return True


@dataclass(slots=True)
class Frame:
    """One frame of one stream: the decoded picture and where it sits in time.

    A source yields ``picture`` (the decoder's own frame, still in its pixel format); the model
    stage converts it where it is used (``video.scaler.full_rgb`` for sinks that need the whole
    frame in RGB, the pre-processing for the model's tensor) and lets it go. ``image`` (RGB) is
    None until then, and for a spare frame (frame-rate up-conversion): a placeholder at the new
    rate that a model fills from its two neighbours ``previous`` and ``next``.
    """

    stream: int
    index: int  # decoded frame index in the stream (0-based, presentation order)
    pts: int  # in ``time_base``
    time_base: Fraction
    image: np.ndarray | None
    keyframe: bool = False
    previous: np.ndarray | None = None
    next: np.ndarray | None = None
    # The keyframe passed since the previous kept frame: decoding from it again yields this
    # frame next (jobs checkpoint there). None for frames after the first of a GOP.
    seek: SeekPoint | None = None
    picture: Any = None  # the decoded frame (PyAV), until it is converted
    defects: list[str] | None = None  # a pipeline with ``defects:``: this frame's flags

    @property
    def seconds(self) -> Fraction:
        return self.pts * self.time_base

    @property
    def spare(self) -> bool:
        return self.image is None and self.picture is None

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the picture or the RGB image; None when the frame holds neither."""
        if self.picture is not None:
            return int(self.picture.width), int(self.picture.height)
        if self.image is not None:
            height, width = self.image.shape[:2]
            return int(width), int(height)
        return None
