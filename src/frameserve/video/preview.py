"""Small annotated pictures of a video's frames, for live previews (MJPEG, one JPEG, HLS).

A preview picture is the frame scaled down to at most the preview width (``preview_size``), so
drawing and encoding cost little next to decoding. Results are in the source frame's pixels:
``scale_result`` maps them onto the preview (boxes, keypoints and text polygons scaled, a mask
resized with nearest neighbours so it stays 0/255), and ``annotate`` draws them exactly as
``--video-out`` draws (``video.overlay.draw``).
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from frameserve.processing.results import Detections, Mask, Moderation, Result, Texts
from frameserve.video.overlay import OverlayStyle, draw

JPEG_QUALITY = 80  # a preview to look at: small files, artefacts hardly visible at 640 px


def preview_size(width: int, height: int, max_width: int) -> tuple[int, int]:
    """The preview's (width, height): the frame's aspect, at most ``max_width`` wide, never
    wider than the frame, both even (H.264 in 4:2:0 needs even sizes) and at least 2."""
    if width <= 0 or height <= 0:
        raise ValueError(f"preview_size: expected a frame size > 0, got {width}x{height}")
    w = min(width, max_width)
    h = round(height * w / width)
    return max(2, w - w % 2), max(2, h - h % 2)


def _scale_detections(det: Detections, sx: float, sy: float) -> Detections:
    factors = np.array([sx, sy, sx, sy], dtype=np.float32)
    keypoints = det.keypoints
    if keypoints is not None:
        keypoints = keypoints * np.array([sx, sy], dtype=np.float32)
    return replace(det, boxes=det.boxes * factors, keypoints=keypoints)


def scale_result(result: Result, source: tuple[int, int], target: tuple[int, int]) -> Result:
    """``result`` (in pixels of a ``source`` = (width, height) frame) in pixels of a ``target``
    frame; results without coordinates (classes, text, quality) come back as they are."""
    sx, sy = target[0] / source[0], target[1] / source[1]
    if isinstance(result, Detections):
        return _scale_detections(result, sx, sy)
    if isinstance(result, Moderation):
        return Moderation(_scale_detections(result.detections, sx, sy), result.verdict)
    if isinstance(result, Texts):
        return replace(result, polygons=result.polygons * np.array([sx, sy], dtype=np.float32))
    if isinstance(result, Mask):
        if result.mask.shape[::-1] == target:
            return result
        return Mask(cv2.resize(result.mask, target, interpolation=cv2.INTER_NEAREST))
    return result


def annotate(
    picture: np.ndarray,
    result: Result | None,
    source: tuple[int, int],
    style: OverlayStyle | None = None,
) -> np.ndarray:
    """Draw ``result`` (in ``source`` frame pixels) onto ``picture`` (HxWx3 uint8 RGB, the
    frame scaled down) in place, as ``--video-out`` draws it; returns the picture."""
    if result is None:
        return picture
    target = (picture.shape[1], picture.shape[0])
    return draw(picture, scale_result(result, source, target), style)


def encode_jpeg(picture: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """An RGB picture as JPEG bytes."""
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"encode_jpeg: OpenCV could not encode a {picture.shape} picture")
    return data.tobytes()
