"""A decoded PyAV frame as ``YuvPlanes``: views of the decoder's own buffers, no conversion.

The colour tags are read the way FFmpeg's scaler reads them when ``to_ndarray(format="rgb24")``
converts the same frame (PyAV 18 hands them to ``sws_scale_frame``), so both paths apply the
same conversion: an untagged frame (``colorspace`` 2, ``color_range`` 0) is BT.601 limited
range; ``yuvj420p`` is full range whatever its range tag says. Anything else (other matrices,
10-bit, 4:2:2, hardware frames, flipped planes) gives None and stays on the RGB path.
"""

from __future__ import annotations

import av
import numpy as np

from frameserve.processing.yuv import ColorRange, Matrix, YuvPlanes

# AVColorSpace -> the matrix swscale applies: BT709, UNSPECIFIED (swscale's default),
# BT470BG and SMPTE170M (both BT.601).
_MATRICES: dict[int, Matrix] = {1: "bt709", 2: "bt601", 5: "bt601", 6: "bt601"}
_CHROMA_CHANNELS = {"yuv420p": 1, "yuvj420p": 1, "nv12": 2}
_AVCOL_RANGE_JPEG = 2


def planes_of(frame: av.VideoFrame) -> YuvPlanes | None:
    """The frame's planes and colour tags, or None where ``processing.yuv`` cannot follow."""
    tags = _tags(frame)
    if tags is None:
        return None
    channels, matrix, color_range = tags
    planes = frame.planes
    views = [_view(planes[0], 1)] + [_view(p, channels) for p in planes[1:]]
    if any(v is None for v in views):
        return None
    y, *chroma = [v for v in views if v is not None]
    return YuvPlanes(y, tuple(chroma), matrix, color_range)


def has_tags_to_follow(frame: av.VideoFrame) -> bool:
    """Whether ``processing.yuv`` follows the frame's pixel format and colour tags (what
    ``planes_of`` checks before it makes the planes' views; it also refuses bottom-up rows)."""
    return _tags(frame) is not None


def _tags(frame: av.VideoFrame) -> tuple[int, Matrix, ColorRange] | None:
    fmt = frame.format.name
    channels = _CHROMA_CHANNELS.get(fmt)
    matrix = _MATRICES.get(frame.colorspace)
    if channels is None or matrix is None:
        return None
    full = fmt == "yuvj420p" or frame.color_range == _AVCOL_RANGE_JPEG
    return channels, matrix, "full" if full else "limited"


def _view(plane: av.video.plane.VideoPlane, channels: int) -> np.ndarray | None:
    """Rows of ``plane`` without their padding (``line_size`` may exceed the width), as one
    strided array over the plane's buffer (a decode worker makes these per frame: one array,
    not a flat view reshaped and sliced twice); it keeps the plane, and so the frame, alive."""
    line = plane.line_size
    if line < 0:  # bottom-up rows: rare (flip filters), not worth a copy here
        return None
    width = plane.width  # in samples of ``channels`` bytes
    if channels > 1:
        shape: tuple[int, ...] = (plane.height, width, channels)
        strides: tuple[int, ...] = (line, channels, 1)
    else:
        shape, strides = (plane.height, width), (line, 1)
    return np.ndarray(shape, np.uint8, plane, 0, strides)  # type: ignore[arg-type]  # a buffer
