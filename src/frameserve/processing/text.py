"""PP-OCR post-processing: DB text detection, region crops, CTC decoding.

The DB steps follow PaddleOCR's ``DBPostProcess`` (binarise, dilate, contours, minimum-area
boxes, mean score inside the box, unclip by area * ratio / perimeter, clockwise order) so that
boxes agree with PP-OCR's reference pipeline to the pixel.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pyclipper

from frameserve.errors import ConfigError, ModelExecutionError
from frameserve.processing.results import Text, Texts
from frameserve.processing.spec import CtcSpec, TextDetectionSpec
from frameserve.processing.transform import Geometry

_LINE_GAP = 10  # px: boxes whose tops differ less are on one line (PP-OCR's reading order)


def _mini_box(contour: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle as 4 points (top-left first, clockwise) and its short side."""
    rect = cv2.minAreaRect(contour)
    pts = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = sorted(pts[:2], key=lambda p: p[1])
    right = sorted(pts[2:], key=lambda p: p[1])
    box = np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
    return box, min(rect[1])


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the box (PP-OCR's "fast" score)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = (box - np.array([x0, y0], dtype=np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [shifted.reshape(-1, 2)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    area = abs(cv2.contourArea(box))
    length = cv2.arcLength(box, True)
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    expanded = offset.Execute(area * ratio / length) if length > 0 else []
    if not expanded:
        return np.zeros((0, 1, 2), dtype=np.float32)
    # A region that splits when grown keeps all its points, as PP-OCR does.
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in expanded]).reshape(-1, 1, 2)


def _clockwise(pts: np.ndarray) -> np.ndarray:
    xs = pts[np.argsort(pts[:, 0], kind="stable")]
    left = xs[:2][np.argsort(xs[:2, 1], kind="stable")]
    right = xs[2:][np.argsort(xs[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=pts.dtype)


def reading_order(polygons: np.ndarray) -> np.ndarray:
    """Indices top to bottom, then left to right within a line."""
    if len(polygons) == 0:
        return np.zeros(0, dtype=np.int64)
    y = polygons[:, 0, 1]
    by_y = np.argsort(y, kind="stable")
    lines = np.concatenate([[0], np.cumsum(np.diff(y[by_y]) >= _LINE_GAP)])
    return by_y[np.lexsort((polygons[by_y, 0, 0], lines))]


def decode_text_regions(
    outputs: dict[str, np.ndarray],
    geometry: Geometry,
    spec: TextDetectionSpec,
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Texts:
    """A DB probability map ``[1, H, W]`` of one image -> quadrilaterals in source pixels."""
    raw = np.asarray(outputs[spec.output], dtype=np.float32)
    prob: np.ndarray = raw.reshape(raw.shape[-2], raw.shape[-1])
    bitmap: np.ndarray = (prob > spec.threshold).astype(np.uint8)
    if spec.dilation:
        bitmap = np.asarray(cv2.dilate(bitmap, np.ones((2, 2), dtype=np.uint8)))
    found = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    contours = found[-2]  # OpenCV 3 returned (image, contours, hierarchy)
    box_threshold = spec.box_threshold if score_threshold is None else score_threshold
    h, w = prob.shape
    src_w, src_h = geometry.source_size
    # The map covers the resized image; PP-OCR maps by the map/source size ratio.
    sx, sy = src_w / w, src_h / h
    polygons, scores = [], []
    for contour in contours[: spec.max_candidates]:
        box, side = _mini_box(contour)
        if side < spec.min_size:
            continue
        score = _box_score(prob, box)
        if score < box_threshold:
            continue
        grown = _unclip(box, spec.unclip_ratio)
        if len(grown) == 0:
            continue
        box, side = _mini_box(grown)
        if side < spec.min_size + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] * sx), 0, src_w)
        box[:, 1] = np.clip(np.round(box[:, 1] * sy), 0, src_h)
        box = _clockwise(box.astype(np.int32))
        box[:, 0] = np.clip(box[:, 0], 0, src_w - 1)
        box[:, 1] = np.clip(box[:, 1], 0, src_h - 1)
        if int(np.linalg.norm(box[0] - box[1])) <= 3 or int(np.linalg.norm(box[0] - box[3])) <= 3:
            continue
        polygons.append(box)
        scores.append(score)
    if not polygons:
        return Texts(np.zeros((0, 4, 2)), np.zeros(0))
    order = reading_order(np.asarray(polygons, dtype=np.float64))[:max_results]
    return Texts(np.asarray(polygons, dtype=np.float64)[order], np.asarray(scores)[order])


def crop_region(image: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Straighten one quadrilateral into an upright crop; tall crops are turned to lie flat."""
    pts = np.asarray(polygon, dtype=np.float32)
    width = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3])))
    height = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2])))
    width, height = max(width, 1), max(height, 1)
    target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(pts, target)
    crop = cv2.warpPerspective(
        image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC
    )
    if crop.shape[0] / crop.shape[1] >= 1.5:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


@lru_cache(maxsize=16)
def load_dictionary(path: Path) -> tuple[str, ...]:
    """CTC classes: blank, the dictionary's characters one a line, then a space."""
    try:
        chars = path.read_text(encoding="utf-8").split("\n")
    except OSError as err:
        raise ConfigError(f"{path}: postprocess.dictionary: cannot read: {err.strerror}") from None
    if chars and chars[-1] == "":
        chars.pop()
    return ("",) + tuple(c.rstrip("\r") for c in chars) + (" ",)


def decode_ctc(outputs: dict[str, np.ndarray], spec: CtcSpec, dictionary: tuple[str, ...]) -> Text:
    """Greedy CTC over ``[T, C]`` probabilities: collapse repeats, drop blanks."""
    probs = outputs[spec.output].reshape(-1, outputs[spec.output].shape[-1])
    if probs.shape[1] != len(dictionary):
        raise ModelExecutionError(
            f"{spec.output}: the model has {probs.shape[1]} classes, the dictionary "
            f"{len(dictionary)} (blank + characters + space)"
        )
    idx = probs.argmax(axis=1)
    best = probs.max(axis=1)
    keep = np.ones(len(idx), dtype=bool)
    keep[1:] = idx[1:] != idx[:-1]
    keep &= idx != 0
    text = "".join(dictionary[i] for i in idx[keep])
    confs = [round(float(c), 5) for c in best[keep]] or [0.0]
    return Text(text, float(np.round(np.mean(confs), 5)))  # numpy's rounding, as PP-OCR
