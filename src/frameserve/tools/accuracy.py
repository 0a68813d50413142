"""How closely two versions of a model agree, frame by frame, in the task's own terms.

``frameserve quantize`` compares a model with its INT8 copy on held-out frames. The source
version is the reference, so it scores 1.0 against itself and the drop is ``1 - agreement``:

- detections (``ssd_anchors``): boxes matched one to one (Hungarian assignment on IoU, same
  label, IoU >= 0.5); a frame scores ``sum(IoU of the matches) / max(n_source, n_int8)``;
- text regions (``db_text``): the same on quadrilaterals, with polygon IoU (convex hulls
  intersected exactly), since rotated text boxes are poorly described by their bounding boxes;
- masks (``segmentation``): mask IoU;
- recognised text (``ctc``): exact match; classes: the same top-1 label.

Two empty results agree fully (1.0). Pure numpy, plus scipy's assignment and OpenCV's convex
polygon intersection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from frameserve.processing.results import (
    Classes,
    Detections,
    Mask,
    Moderation,
    Result,
    Text,
    Texts,
)

MIN_IOU = 0.5

METRICS: dict[str, str] = {
    "ssd_anchors": "box IoU agreement",
    "yolo": "box IoU agreement",
    "detr": "box IoU agreement",
    "db_text": "text region polygon IoU agreement",
    "segmentation": "mask IoU",
    "ctc": "exact text match rate",
    "classes": "top-1 agreement",
}
"""The metric ``frameserve quantize`` uses, by ``postprocess.task``."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``[N, 4]`` with every box of ``b`` ``[M, 4]`` (x1, y1, x2, y2)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _hull(polygon: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2))


def polygon_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every polygon of ``a`` ``[N, K, 2]`` with every one of ``b`` ``[M, K, 2]``.

    Each polygon is taken as its convex hull (DB text regions are rectangles already).
    """
    hulls_a = [_hull(p) for p in a]
    hulls_b = [_hull(p) for p in b]
    area_a = [abs(cv2.contourArea(h)) for h in hulls_a]
    area_b = [abs(cv2.contourArea(h)) for h in hulls_b]
    out = np.zeros((len(hulls_a), len(hulls_b)))
    for i, ha in enumerate(hulls_a):
        for j, hb in enumerate(hulls_b):
            inter, _ = cv2.intersectConvexConvex(ha, hb)
            union = area_a[i] + area_b[j] - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def matched_agreement(iou: np.ndarray, allowed: np.ndarray | None = None) -> float:
    """One-to-one matches (IoU >= 0.5, ``allowed`` pairs only): sum of IoU / max(N, M)."""
    n, m = iou.shape
    if n == 0 and m == 0:
        return 1.0
    if n == 0 or m == 0:
        return 0.0
    valid = iou >= MIN_IOU
    if allowed is not None:
        valid &= allowed
    weights = np.where(valid, iou, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    matched = valid[rows, cols]
    return float(weights[rows, cols][matched].sum() / max(n, m))


def detection_agreement(source: Detections, other: Detections) -> float:
    """Box agreement of two detection results of one frame (labels must match)."""
    same = np.array([[la == lb for lb in other.labels] for la in source.labels], dtype=bool)
    same = same.reshape(len(source), len(other))
    return matched_agreement(box_iou(source.boxes, other.boxes), same)


def text_region_agreement(source: Texts, other: Texts) -> float:
    """Polygon agreement of two text detection results of one frame."""
    return matched_agreement(polygon_iou(source.polygons, other.polygons))


def mask_iou(source: Mask, other: Mask) -> float:
    """IoU of the foregrounds of two masks of one frame; 1.0 when both are empty."""
    if source.mask.shape != other.mask.shape:
        raise ValueError(
            f"mask_iou: masks must have one shape, got {source.mask.shape} and {other.mask.shape}"
        )
    a, b = source.mask > 0, other.mask > 0
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def text_match(source: Text, other: Text) -> float:
    """1.0 when the recognised strings are identical."""
    return float(source.text == other.text)


def top1_agreement(source: Classes, other: Classes) -> float:
    """1.0 when both give the same best label (or both give none)."""
    if not source.labels or not other.labels:
        return float(not source.labels and not other.labels)
    return float(source.labels[0] == other.labels[0])


_AGREEMENT: dict[type, Callable[..., float]] = {
    Detections: detection_agreement,
    Texts: text_region_agreement,
    Mask: mask_iou,
    Text: text_match,
    Classes: top1_agreement,
    Moderation: lambda a, b: detection_agreement(a.detections, b.detections),
}


def agreement(source: Result, other: Result) -> float:
    """How well ``other`` agrees with ``source`` on one frame, in 0..1."""
    if type(source) is not type(other):
        raise ValueError(
            f"agreement: results must be of one type, got {type(source).__name__} and "
            f"{type(other).__name__}"
        )
    return _AGREEMENT[type(source)](source, other)


def mean_agreement(pairs: Iterable[tuple[Result, Result]]) -> float:
    """Mean of ``agreement`` over (source, other) pairs of results of one frame each."""
    scores = [agreement(a, b) for a, b in pairs]
    if not scores:
        raise ValueError("mean_agreement: expected at least one pair of results, got none")
    return float(np.mean(scores))
