"""MediaPipe face detection decoding: SSD anchors, box/keypoint regression, weighted NMS.

Follows MediaPipe's ``SsdAnchorsCalculator`` (fixed-size anchors), ``TensorsToDetections
Calculator`` (raw order x, y, w, h; sigmoid scores clipped at +-``score_clipping``) and
``NonMaxSuppressionCalculator`` with the WEIGHTED algorithm, then removes the letterbox.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from frameserve.errors import ModelExecutionError
from frameserve.processing.results import Detections, pair_iou
from frameserve.processing.spec import AnchorSpec, FaceSsdSpec
from frameserve.processing.transform import Geometry


@lru_cache(maxsize=8)
def ssd_anchors(spec: AnchorSpec) -> np.ndarray:
    """Anchor centres ``[N, 2]`` (x, y in 0..1); layers sharing a stride share a grid."""
    centres: list[np.ndarray] = []
    strides = spec.strides
    per_cell = len(spec.aspect_ratios) + (1 if spec.interpolated_scale_aspect_ratio > 0 else 0)
    i = 0
    while i < len(strides):
        stride = strides[i]
        j = i
        while j < len(strides) and strides[j] == stride:
            j += 1
        count = per_cell * (j - i)
        fw = int(np.ceil(spec.input_size[0] / stride))
        fh = int(np.ceil(spec.input_size[1] / stride))
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        grid = np.stack(
            [(xs + spec.anchor_offset) / fw, (ys + spec.anchor_offset) / fh], axis=-1
        ).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(centres).astype(np.float64)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED suppression: each cluster becomes its score-weighted mean."""
    if (
        len(scores) < FEW
        and all(a.dtype == np.float64 for a in (boxes, scores, keypoints))
        and np.isfinite(boxes).all()  # NaN compares as numpy's max/min do not
    ):
        return _weighted_nms_few(boxes, scores, keypoints, iou_threshold)
    return _weighted_nms_arrays(boxes, scores, keypoints, iou_threshold)


# Below this many boxes (a face's few anchors: 1-3 a frame on video) suppression runs in Python
# floats. numpy adds fewer than 8 numbers one after the other, so the same operations in the
# same order give bit-identical clusters and means, for a third of the cost of ~25 numpy calls.
FEW = 8


def _weighted_nms_few(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b, s, k = boxes.tolist(), scores.tolist(), keypoints.tolist()
    remaining = sorted(range(len(s)), key=lambda i: -s[i])  # stable, as argsort's
    out_b, out_s, out_k = [], [], []
    while remaining:
        best = remaining[0]
        overlap = [pair_iou(b[best], b[i]) for i in remaining]
        cluster = [i for i, o in zip(remaining, overlap, strict=True) if o > iou_threshold]
        if best not in cluster:  # a degenerate (zero-area) box overlaps nothing, not even itself
            cluster = [best, *cluster]
        total, box, points = 0.0, [0.0] * 4, [[0.0, 0.0] for _ in k[best]]
        for n, i in enumerate(cluster):
            w = s[i]
            total += w
            box = [v * w if n == 0 else a + v * w for a, v in zip(box, b[i], strict=True)]
            points = [[x * w, y * w] if n == 0 else [px + x * w, py + y * w]
                      for (px, py), (x, y) in zip(points, k[i], strict=True)]  # fmt: skip
        out_b.append([v / total for v in box])
        out_k.append([[x / total, y / total] for x, y in points])
        out_s.append(s[best])
        remaining = [i for i, o in zip(remaining, overlap, strict=True)
                     if o <= iou_threshold and i != best]  # fmt: skip
    if not out_s:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, keypoints.shape[1], 2))
    return np.array(out_b), np.array(out_s), np.array(out_k).reshape(len(out_s), len(k[0]), 2)


def _weighted_nms_arrays(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out_b, out_s, out_k = [], [], []
    while len(remaining):
        best = remaining[0]
        overlap = _iou(boxes[best], boxes[remaining])
        cluster = remaining[overlap > iou_threshold]
        if best not in cluster:  # a degenerate (zero-area) box overlaps nothing, not even itself
            cluster = np.concatenate([[best], cluster])
        w = scores[cluster][:, None]
        out_b.append((boxes[cluster] * w).sum(0) / w.sum())
        out_k.append((keypoints[cluster] * w[:, :, None]).sum(0) / w.sum())
        out_s.append(scores[best])
        remaining = remaining[(overlap <= iou_threshold) & (remaining != best)]
    k = keypoints.shape[1]
    if not out_s:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, k, 2))
    return np.stack(out_b), np.asarray(out_s), np.stack(out_k)


def _logit(threshold: float) -> float:
    """The logit at or above which a sigmoid may reach ``threshold`` (a margin of 1e-3 in
    logit space covers float32 rounding: the candidates are then scored exactly)."""
    return math.log(threshold / (1.0 - threshold)) - 1e-3


def decode_faces(
    outputs: dict[str, np.ndarray],
    geometry: Geometry,
    spec: FaceSsdSpec,
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Detections:
    """Regressors ``[N, 4 + 2K]`` and logits ``[N, 1]`` of one image -> detections in pixels."""
    batched = {name: outputs[name][None] for name in (spec.boxes, spec.scores)}
    return decode_face_batch(batched, [geometry], spec, score_threshold, max_results)[0]


def decode_face_batch(
    outputs: dict[str, np.ndarray],
    geometries: list[Geometry],
    spec: FaceSsdSpec,
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> list[Detections]:
    """The detections of each image of a batch (``outputs`` with their batch dimension, one
    geometry per image), each exactly what ``decode_faces`` gives for that image alone.

    The anchors near the threshold are found, scored and turned into boxes for the whole
    batch in one pass (a video group: a few of 8 x 2304 anchors); only the suppression and
    the mapping back to the source run per image.
    """
    n = len(geometries)
    width = 4 + 2 * spec.num_keypoints
    raw_all = outputs[spec.boxes].reshape(n, -1, width)
    logits = outputs[spec.scores].reshape(n, -1)
    anchors = ssd_anchors(spec.anchors)
    for name, given in ((spec.boxes, raw_all.shape[1]), (spec.scores, logits.shape[1])):
        if given != len(anchors):
            raise ModelExecutionError(
                f"{name}: the model gives {given} boxes, its anchors expect {len(anchors)}"
            )
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    # Only anchors near the threshold are scored in float64 (a few of 2304 per image): the
    # same choice as scoring every one, for a fraction of the work.
    if 0.0 < threshold < 1.0:
        image, near = np.nonzero(logits >= _logit(threshold))
    else:
        image, near = np.divmod(np.arange(logits.size), logits.shape[1])
    raw = raw_all[image, near].astype(np.float64)
    clipped = np.clip(
        logits[image, near].astype(np.float64), -spec.score_clipping, spec.score_clipping
    )
    scores = 1.0 / (1.0 + np.exp(-clipped))
    # MediaPipe drops boxes of negative size (box_scale > 0: the sign is the raw value's)
    keep = (scores >= threshold) & (raw[:, 2] >= 0) & (raw[:, 3] >= 0)
    image, raw, scores, anchors = image[keep], raw[keep], scores[keep], anchors[near[keep]]
    s = spec.box_scale
    centre = raw[:, 0:2] / s + anchors
    half = raw[:, 2:4] / s / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    kps = raw[:, 4:].reshape(-1, spec.num_keypoints, 2) / s + anchors[:, None, :]
    limit = min(spec.max_results, max_results) if max_results else spec.max_results
    bounds = np.searchsorted(image, np.arange(n + 1)).tolist()  # ``image`` is sorted
    out = []
    for i, geometry in enumerate(geometries):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:  # no face (most frames of most videos): what the steps below give
            none = np.zeros((0, spec.num_keypoints, 2))
            out.append(Detections(np.zeros((0, 4)), np.zeros(0), [], none))
            continue
        b, sc, k = weighted_nms(boxes[lo:hi], scores[lo:hi], kps[lo:hi], spec.iou_threshold)
        b, sc, k = b[:limit], sc[:limit], k[:limit]
        corners = geometry.to_source(b.reshape(-1, 2, 2), normalized=True).reshape(-1, 4)
        points = geometry.to_source(k, normalized=True)
        out.append(Detections(corners, sc, [spec.label] * len(sc), points))
    return out
