"""Resize in FFmpeg's scaler while decoding, but only where that is the declared resize.

swscale converts YUV to RGB and resizes in one pass, so a 1280x720 frame never exists in RGB
when the model wants 256x256: cheaper than converting the whole frame and resizing it in
OpenCV. But the two scalers filter differently (swscale's bilinear widens its filter when
shrinking, OpenCV's ``resize``/``warpPerspective`` do not, and chroma is upsampled in a different
order), and a model must see the pixels it was trained on. So the first frame of each input
is resized both ways and compared: FFmpeg's scaler is used only when it matches within
``MAX_MEAN_DIFF`` / ``MAX_P99_DIFF`` grey levels, otherwise ``processing/`` resizes, and the
run's summary says which and why.

Conversions go through a ``VideoReformatter`` that the caller keeps for its input
(``reformatter``): ``VideoFrame.reformat`` and ``to_ndarray(format=...)`` make a new swscale
context for every frame, and setting one up cost more than the conversion itself (1280x720 to
RGB: 0.52 ms a frame with a new context, 0.23 ms with a kept one; a 640x360 preview 1.7 vs 0.85
ms). The output is the same: the kept context is the one FFmpeg would have made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from frameserve.processing.transform import Preprocessor
from frameserve.video.frames import Frame

MAX_MEAN_DIFF = 0.5  # grey levels, mean over the content
MAX_P99_DIFF = 3.0  # grey levels, 99th percentile
_FLAGS = {
    "nearest": "POINT",
    "linear": "BILINEAR",
    "cubic": "BICUBIC",
    "area": "AREA",
    "lanczos": "LANCZOS",
}


@dataclass(frozen=True, slots=True)
class ScalerPlan:
    """Where frames of one input are resized, and the comparison that decided it."""

    size: tuple[int, int] | None  # content (width, height) FFmpeg resizes to; None: processing/
    interpolation: str = ""
    reason: str = ""

    @property
    def ffmpeg(self) -> bool:
        return self.size is not None

    def describe(self) -> str:
        where = "FFmpeg's scaler" if self.ffmpeg else "processing/"
        return f"resize in {where} ({self.reason})"


def plan_scaler(preprocessor: Preprocessor, frame: Any) -> ScalerPlan:
    """Compare FFmpeg's one-pass convert+resize with the declared resize on ``frame``."""
    r = preprocessor.spec.resize
    if r.sampler != "resize" or r.mode not in ("stretch", "letterbox", "pad"):
        return ScalerPlan(None, reason=f"declared sampler {r.sampler}, mode {r.mode}")
    if r.pad_in != "image":
        return ScalerPlan(None, reason="padding happens in the tensor")
    rgb = frame.to_ndarray(format="rgb24")
    h, w = rgb.shape[:2]
    cw, ch = preprocessor.content_size((w, h))
    reference, geometry = preprocessor.resize_image(rgb)
    x0, y0, x1, y1 = geometry.content_box
    flag = _FLAGS[r.interpolation]
    candidate = frame.reformat(width=cw, height=ch, format="rgb24", interpolation=flag)
    diff = np.abs(
        candidate.to_ndarray().astype(np.int16) - reference[y0:y1, x0:x1].astype(np.int16)
    )
    mean, p99 = float(diff.mean()), float(np.percentile(diff, 99))
    numbers = f"mean difference {mean:.2f}, p99 {p99:.0f} grey levels"
    if mean <= MAX_MEAN_DIFF and p99 <= MAX_P99_DIFF:
        return ScalerPlan((cw, ch), flag, f"matches the declared resize: {numbers}")
    return ScalerPlan(None, reason=f"FFmpeg's {flag.lower()} differs: {numbers}")


def full_rgb(frame: Frame, reformatter: Any = None) -> np.ndarray | None:
    """The whole frame in RGB (converted once, then kept in ``frame.image``); None for a
    spare frame. ``reformatter``: the input's ``VideoReformatter`` (one thread uses it)."""
    if frame.image is None and frame.picture is not None:
        if reformatter is None:
            frame.image = frame.picture.to_ndarray(format="rgb24")
        else:
            frame.image = reformatter.reformat(frame.picture, format="rgb24").to_ndarray()
    return frame.image
