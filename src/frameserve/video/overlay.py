"""Draw task results onto video frames, for previews and re-encoded output.

A video sink that burns results into the picture calls ``draw`` once per frame and result, so
drawing must cost little next to decoding and encoding: everything is drawn in place on the
RGB uint8 frame, and mask effects work in uint8 on the mask's bounding box only (no full-frame
float copy; about 1-3 ms for a person-sized mask at 1280x720 on one core).

Choices a viewer can see:

- Boxes of a tracked object are coloured by track id from a fixed palette, so a track keeps its
  colour from frame to frame and from run to run; untracked boxes are coloured by label.
- ``mask="blur"`` blurs the masked region (a privacy blur: the person goes, the background
  stays); ``"tint"`` alpha-blends a colour over it.
- Text is drawn only when OpenCV can draw every character of it. OpenCV 5 builds with the
  built-in Unicode font draw Latin, Greek, Cyrillic and CJK; Hershey-only builds (OpenCV 4)
  draw ASCII. Anything else (Thai, Devanagari, emoji, and right-to-left scripts, which OpenCV
  draws unshaped and in the wrong order) falls back to the outline alone: no rows of "?".
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np

from frameserve.processing.results import (
    Classes,
    Detections,
    Mask,
    Moderation,
    Quality,
    Result,
    Text,
    Texts,
)

MaskEffect = Literal["tint", "blur", "none"]
Colour = tuple[int, int, int]

# RGB, well apart in hue and brightness; a track id picks ``PALETTE[id % len(PALETTE)]``.
PALETTE: tuple[Colour, ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE: Colour = (255, 255, 255)
_MASK_EFFECTS = ("tint", "blur", "none")


@dataclass(frozen=True)
class OverlayStyle:
    """How results look on the frame; colours are RGB like the frames."""

    mask: MaskEffect = "tint"
    tint_color: Colour = (255, 0, 160)
    tint_alpha: float = 0.45  # weight of the tint colour in masked pixels
    blur_kernel: int = 41  # odd, in pixels; small kernels leave faces recognisable
    box_thickness: int = 2
    font_scale: float = 0.5
    keypoint_radius: int = 3
    draw_keypoints: bool = True
    draw_labels: bool = True  # captions: "#<track id>" or "label score", and OCR text
    text_region_color: Colour = (255, 255, 0)  # outlines of OCR text regions

    def __post_init__(self) -> None:
        if self.mask not in _MASK_EFFECTS:
            raise ValueError(
                f"OverlayStyle.mask: expected one of {_MASK_EFFECTS}, got {self.mask!r}"
            )
        for name in ("tint_color", "text_region_color"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in value):
                raise ValueError(f"OverlayStyle.{name}: expected 3 ints in 0..255, got {value!r}")
        if not 0.0 <= self.tint_alpha <= 1.0:
            raise ValueError(f"OverlayStyle.tint_alpha: expected 0..1, got {self.tint_alpha}")
        if self.blur_kernel < 3 or self.blur_kernel % 2 == 0:
            raise ValueError(f"OverlayStyle.blur_kernel: expected odd >= 3, got {self.blur_kernel}")
        for name in ("box_thickness", "keypoint_radius"):
            if getattr(self, name) < 1:
                raise ValueError(f"OverlayStyle.{name}: expected >= 1, got {getattr(self, name)}")
        if self.font_scale <= 0:
            raise ValueError(f"OverlayStyle.font_scale: expected > 0, got {self.font_scale}")


def draw(frame: np.ndarray, result: Result, style: OverlayStyle | None = None) -> np.ndarray:
    """Draw ``result`` onto ``frame`` (HxWx3 uint8 RGB) in place and return the same frame.

    Draw a mask before the boxes of the same frame, or the mask effect covers the boxes.
    """
    style = style or OverlayStyle()
    _check_frame(frame)
    if isinstance(result, Detections):
        _draw_detections(frame, result, style)
    elif isinstance(result, Mask):
        _draw_mask(frame, result.mask, style)
    elif isinstance(result, Texts):
        _draw_texts(frame, result, style)
    elif isinstance(result, Text):
        if style.draw_labels:
            _draw_caption_block(frame, [f"{result.text} {result.score:.2f}"], style)
    elif isinstance(result, Classes):
        if style.draw_labels:
            lines = [f"{lb} {s:.2f}" for lb, s in zip(result.labels, result.scores, strict=True)]
            _draw_caption_block(frame, lines, style)
    elif isinstance(result, Quality):
        if style.draw_labels:
            _draw_caption_block(frame, [f"{result.method} quality {result.score:.1f}"], style)
    elif isinstance(result, Moderation):
        _draw_detections(frame, result.detections, style)
        if style.draw_labels:
            v = result.verdict
            caption = "unsafe: " + ", ".join(v.labels) if v.unsafe else "safe"
            _draw_caption_block(frame, [f"{caption} {v.score:.2f}"], style)
    else:
        raise TypeError(f"draw: expected a task result, got {type(result).__name__}")
    return frame


def colour_for(track_id: int) -> Colour:
    """The palette colour of a track id: the same id always gets the same colour."""
    return PALETTE[int(track_id) % len(PALETTE)]


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame: expected HxWx3 uint8, got {frame.dtype} {frame.shape}")
    # OpenCV draws in place only into arrays whose pixels are packed (row slices are fine)
    if not frame.flags.writeable or frame.strides[1:] != (3, 1):
        raise ValueError("frame: expected a writable array with packed RGB pixels (a copy)")


# --- masks -------------------------------------------------------------------------------


def _draw_mask(frame: np.ndarray, mask: np.ndarray, style: OverlayStyle) -> None:
    if mask.ndim != 2 or mask.dtype != np.uint8 or mask.shape != frame.shape[:2]:
        raise ValueError(
            f"mask: expected {frame.shape[0]}x{frame.shape[1]} uint8 like the frame, "
            f"got {mask.dtype} {mask.shape}"
        )
    if style.mask == "none":
        return
    x, y, w, h = cv2.boundingRect(mask)  # of the nonzero pixels; (0, 0, 0, 0) when empty
    if w == 0 or h == 0:
        return
    if style.mask == "tint":
        _tint(frame[y : y + h, x : x + w], mask[y : y + h, x : x + w], style)
    else:
        _blur(frame, mask, (x, y, w, h), style.blur_kernel)


def _tint(roi: np.ndarray, mask: np.ndarray, style: OverlayStyle) -> None:
    """roi = roi * (1 - a) + colour * a where mask is set, in uint8 (rounding error <= 1)."""
    a = style.tint_alpha
    tint = tuple(float(c) * a for c in style.tint_color) + (0.0,)
    # scalar operands: no colour image to fill; OpenCV's stubs omit these (documented) overloads
    keep = cv2.multiply(roi, (1.0 - a, 1.0 - a, 1.0 - a, 0.0))  # type: ignore[call-overload]
    cv2.add(keep, tint, dst=roi, mask=mask)  # type: ignore[call-overload]


def _blur(
    frame: np.ndarray, mask: np.ndarray, rect: tuple[int, int, int, int], kernel: int
) -> None:
    """Box-blur the mask's bounding box (widened by the kernel radius) and copy masked pixels."""
    x, y, w, h = rect
    r = kernel // 2
    x0, y0 = max(x - r, 0), max(y - r, 0)
    x1, y1 = min(x + w + r, frame.shape[1]), min(y + h + r, frame.shape[0])
    # a box filter costs the same for any kernel size; two passes look close to a Gaussian
    blurred = cv2.blur(frame[y0:y1, x0:x1], (kernel, kernel))
    blurred = cv2.blur(blurred, (kernel, kernel))
    inner = blurred[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
    cv2.copyTo(inner, mask[y : y + h, x : x + w], frame[y : y + h, x : x + w])


# --- boxes, keypoints, text regions ------------------------------------------------------


def _draw_detections(frame: np.ndarray, det: Detections, style: OverlayStyle) -> None:
    if len(det) == 0:
        return
    boxes = _to_pixels(det.boxes.reshape(-1, 2, 2), frame, style.box_thickness).reshape(-1, 4)
    shown = _on_frame(det.boxes.reshape(-1, 2, 2), frame)
    colours = [_detection_colour(det, i) for i in range(len(det))]
    for i in np.flatnonzero(shown):
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        cv2.rectangle(frame, (x1, y1), (x2, y2), colours[i], style.box_thickness)
    if style.draw_keypoints and det.keypoints is not None:
        _draw_keypoints(frame, det.keypoints, colours, style)
    if style.draw_labels:  # after every box, so no box is drawn over a caption
        for i in np.flatnonzero(shown):
            caption = _detection_caption(det, int(i))
            _draw_caption(frame, caption, (int(boxes[i, 0]), int(boxes[i, 1])), colours[i], style)


def _draw_keypoints(
    frame: np.ndarray, keypoints: np.ndarray, colours: Sequence[Colour], style: OverlayStyle
) -> None:
    points = _to_pixels(keypoints, frame, style.keypoint_radius)
    visible = np.isfinite(keypoints).all(axis=2)
    for i, k in zip(*np.nonzero(visible), strict=True):
        x, y = int(points[i, k, 0]), int(points[i, k, 1])
        cv2.circle(frame, (x, y), style.keypoint_radius, colours[i], -1, cv2.LINE_AA)


def _draw_texts(frame: np.ndarray, texts: Texts, style: OverlayStyle) -> None:
    if len(texts) == 0:
        return
    colour = style.text_region_color
    points = _to_pixels(texts.polygons, frame, style.box_thickness)
    for i in np.flatnonzero(_on_frame(texts.polygons, frame)):
        cv2.polylines(frame, [points[i]], True, colour, style.box_thickness, cv2.LINE_AA)
        if style.draw_labels and texts.texts and drawable(texts.texts[i]):
            left, top = points[i].min(axis=0)
            _draw_caption(frame, texts.texts[i], (int(left), int(top)), colour, style)


def _on_frame(shapes: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Which of the [N, K, 2] point sets are finite and have a bounding box that meets the frame."""
    h, w = frame.shape[:2]
    finite = np.isfinite(shapes).all(axis=(1, 2))
    clean = np.where(finite[:, None, None], shapes, -1.0)
    low, high = clean.min(axis=1), clean.max(axis=1)
    return finite & (high >= 0).all(axis=1) & (low[:, 0] < w) & (low[:, 1] < h)


def _to_pixels(coords: np.ndarray, frame: np.ndarray, reach: int) -> np.ndarray:
    """Round [..., 2] (x, y) to int32, clipped just outside the frame so nothing overflows."""
    margin = 2 * reach + 2  # far enough that a clipped shape stays out of sight
    h, w = frame.shape[:2]
    low = np.array([-margin, -margin])
    high = np.array([w - 1 + margin, h - 1 + margin])
    clean = np.nan_to_num(coords, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(clean), low, high).astype(np.int32)


def _detection_colour(det: Detections, i: int) -> Colour:
    if det.track_ids is not None:
        return colour_for(int(det.track_ids[i]))
    # crc32, not hash(): str hashes change from process to process
    return PALETTE[zlib.crc32(det.labels[i].encode("utf-8")) % len(PALETTE)]


def _detection_caption(det: Detections, i: int) -> str:
    if det.track_ids is not None:
        return f"#{int(det.track_ids[i])}"
    label = det.labels[i]
    score = f"{float(det.scores[i]):.2f}"
    return f"{label} {score}" if label and drawable(label) else score


# --- captions ----------------------------------------------------------------------------


def _draw_caption(
    frame: np.ndarray, text: str, corner: tuple[int, int], colour: Colour, style: OverlayStyle
) -> None:
    """Text on a filled ``colour`` tab above ``corner`` (inside, below it, at the top edge)."""
    if not drawable(text):
        return
    thickness = _text_thickness(style)
    (tw, th), base = cv2.getTextSize(text, _FONT, style.font_scale, thickness)
    pad = 3
    h, w = frame.shape[:2]
    x = min(max(corner[0], 0), max(w - tw - 2 * pad, 0))
    top = corner[1] - th - base - 2 * pad
    if top < 0:
        top = max(corner[1], 0)
    cv2.rectangle(frame, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), colour, -1)
    ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 150 else WHITE
    origin = (x + pad, top + pad + th)
    cv2.putText(frame, text, origin, _FONT, style.font_scale, ink, thickness, cv2.LINE_AA)


def _draw_caption_block(frame: np.ndarray, lines: Sequence[str], style: OverlayStyle) -> None:
    """Stacked captions in the top-left corner, for results without a place in the frame."""
    (_, th), base = cv2.getTextSize("Ag", _FONT, style.font_scale, _text_thickness(style))
    step = th + base + 6 + 2  # a tab's height (2 * 3 px padding) and a 2 px gap
    y = step
    for line in lines:
        if drawable(line):
            _draw_caption(frame, line, (4, y), (32, 32, 32), style)
            y += step


def _text_thickness(style: OverlayStyle) -> int:
    return max(1, round(style.font_scale * 2))


def drawable(text: str) -> bool:
    """Whether OpenCV draws every character of ``text`` faithfully (see the module notes)."""
    return bool(text) and all(_glyph_drawable(ch) for ch in text)


@lru_cache(maxsize=4096)
def _glyph_drawable(ch: str) -> bool:
    if " " <= ch <= "~":
        return True
    if unicodedata.category(ch)[0] in "CM":
        return False  # controls and combining marks: not drawn on their own
    if unicodedata.bidirectional(ch) in ("R", "AL", "AN"):
        return False  # OpenCV draws right-to-left scripts unshaped, left to right
    # a glyph the font lacks is drawn as "?" (one per code point, or per byte in older builds)
    probe = _render(ch)
    return not any(np.array_equal(probe, _render("?" * n)) for n in {1, len(ch.encode())})


def _render(text: str) -> np.ndarray:
    canvas = np.zeros((48, 160), np.uint8)
    cv2.putText(canvas, text, (4, 34), _FONT, 1.0, 255, 1, cv2.LINE_8)
    return canvas
