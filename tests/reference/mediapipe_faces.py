"""Reference MediaPipe face detection (BlazeFace short and full range), numpy + cv2 only.

Written from MediaPipe's graphs (``modules/face_detection/face_detection.pbtxt`` with the
options of ``face_detection_full_range.pbtxt`` / ``face_detection_short_range.pbtxt``) and the
calculators they name, independently of frameserve:

1. ``ImageToTensorCalculator`` (keep_aspect_ratio, range [-1, 1], BORDER_ZERO): the RGB image is
   letterboxed into an SxS tensor, NHWC float32. ``sampler="warp"`` (the default) is what
   MediaPipe's CPU converter does: ``cv2.warpPerspective`` INTER_LINEAR of the ROI padded to a
   square around the image centre onto the tensor's corners (tensor pixel x samples source
   (x - pad) / scale, no half-pixel offset), so padding may be fractional. ``sampler="resize"``
   is the common approximation: ``cv2.resize`` INTER_LINEAR (half-pixel centres) placed on
   whole-pixel black borders. The half-pixel difference is not negligible for these
   detectors: against MediaPipe 0.10.21 itself (``MEDIAPIPE_ASTRONAUT`` in test_reference.py)
   "warp" gives box IoU >= 0.998, "resize" as low as 0.86 (short range, a 512x300 crop).
2. ``SsdAnchorsCalculator`` with fixed_anchor_size (every anchor 1x1).
3. ``TensorsToDetectionsCalculator`` (XYWH raw order, scales = S, sigmoid of clipped scores,
   score >= min_score_thresh, boxes with negative size dropped).
4. ``NonMaxSuppressionCalculator``: WEIGHTED, IoU, min_suppression_threshold 0.3.
5. ``DetectionProjectionCalculator`` (= letterbox removal here): back to source pixels, no clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from reference.openvino_cpu import infer

Variant = Literal["full", "short"]
Sampler = Literal["resize", "warp"]

# MediaPipe's keypoint order (sides are the subject's: "right eye" is on the image's left
# for a frontal, unmirrored face).
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)
NUM_COORDS = 4 + 2 * NUM_KEYPOINTS
MIN_SUPPRESSION_THRESHOLD = 0.3
SCORE_CLIPPING_THRESH = 100.0


@dataclass(frozen=True)
class FaceModelSpec:
    """One variant's graph options and its tensor names in the .tflite."""

    size: int  # tensor width = height; also x/y/w/h_scale
    input_name: str
    regressors_name: str
    classificators_name: str
    strides: tuple[int, ...]  # num_layers = len(strides)
    interpolated_scale_aspect_ratio: float
    min_score_thresh: float
    num_boxes: int
    anchor_offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)


FACE_MODELS: dict[str, FaceModelSpec] = {
    "full": FaceModelSpec(
        size=192,
        input_name="input_1",
        regressors_name="Identity",
        classificators_name="Identity_1",
        strides=(4,),
        interpolated_scale_aspect_ratio=0.0,
        min_score_thresh=0.6,
        num_boxes=2304,
    ),
    "short": FaceModelSpec(
        size=128,
        input_name="input",
        regressors_name="regressors",
        classificators_name="classificators",
        strides=(8, 16, 16, 16),
        interpolated_scale_aspect_ratio=1.0,
        min_score_thresh=0.5,
        num_boxes=896,
    ),
}


# --------------------------------------------------------------------------- pre-processing


@dataclass(frozen=True)
class Letterbox:
    """Where the source image lies in the SxS tensor: tensor_px = source_px * scale + pad."""

    size: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_source(self, xy: np.ndarray) -> np.ndarray:
        """Tensor-normalised points ``[..., 2]`` (x, y in [0, 1] of S) -> source pixels."""
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] * self.size - self.pad_x) / self.scale_x
        y = (xy[..., 1] * self.size - self.pad_y) / self.scale_y
        return np.stack([x, y], axis=-1)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")


def letterbox_image(
    rgb: np.ndarray, size: int, sampler: Sampler = "warp"
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox ``rgb`` (HxWx3 uint8) into a ``size``x``size`` uint8 image, black borders."""
    _check_rgb(rgb)
    height, width = rgb.shape[:2]
    scale = size / max(width, height)
    if sampler == "resize":
        new_w = max(1, min(size, round(width * scale)))
        new_h = max(1, min(size, round(height * scale)))
        left, top = (size - new_w) // 2, (size - new_h) // 2
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas[top : top + new_h, left : left + new_w] = resized
        return canvas, Letterbox(size, new_w / width, new_h / height, float(left), float(top))
    if sampler == "warp":
        # MediaPipe: the ROI (whole image) is padded to the tensor's aspect ratio around its
        # centre, and its corners are mapped onto the tensor's corners.
        pad_x, pad_y = (size - width * scale) / 2.0, (size - height * scale) / 2.0
        matrix = np.array([[scale, 0.0, pad_x], [0.0, scale, pad_y], [0.0, 0.0, 1.0]])
        warped = cv2.warpPerspective(
            rgb,
            matrix,
            (size, size),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        return warped, Letterbox(size, scale, scale, pad_x, pad_y)
    raise ValueError(f"unknown sampler {sampler!r}")


def letterbox_input(
    rgb: np.ndarray, size: int, sampler: Sampler = "warp"
) -> tuple[np.ndarray, Letterbox]:
    """The model input ``[1, S, S, 3]`` float32 in [-1, 1] (RGB, NHWC) and its letterbox."""
    canvas, box = letterbox_image(rgb, size, sampler)
    tensor = canvas.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return tensor[np.newaxis], box


def reference_face_input(rgb: np.ndarray, size: int, sampler: Sampler = "warp") -> np.ndarray:
    """The ``[1, S, S, 3]`` float32 tensor MediaPipe feeds a face detector of input S."""
    return letterbox_input(rgb, size, sampler)[0]


# --------------------------------------------------------------------------- anchors


def ssd_anchors(
    input_size: int,
    strides: tuple[int, ...],
    anchor_offset: float = 0.5,
    aspect_ratios: tuple[float, ...] = (1.0,),
    interpolated_scale_aspect_ratio: float = 1.0,
) -> np.ndarray:
    """``SsdAnchorsCalculator`` with fixed_anchor_size: ``[N, 4]`` rows (x_c, y_c, w=1, h=1).

    Consecutive layers with the same stride are merged into one feature map; every merged
    layer adds len(aspect_ratios) anchors per cell, plus one if interpolated_scale_aspect_ratio
    > 0. Order: y, then x, then the cell's anchors. (Scales and ratios only set anchor sizes,
    which fixed_anchor_size overrides, so they are not computed.)
    """
    rows: list[tuple[float, float]] = []
    per_layer = len(aspect_ratios) + (1 if interpolated_scale_aspect_ratio > 0.0 else 0)
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = per_layer * (last - layer)
        fm = math.ceil(input_size / strides[layer])  # square input: fm width = height
        for y in range(fm):
            for x in range(fm):
                centre = ((x + anchor_offset) / fm, (y + anchor_offset) / fm)
                rows.extend([centre] * per_cell)
        layer = last
    anchors = np.ones((len(rows), 4), dtype=np.float64)
    anchors[:, :2] = np.asarray(rows, dtype=np.float64)
    return anchors


def face_anchors(variant: Variant) -> np.ndarray:
    spec = FACE_MODELS[variant]
    return ssd_anchors(
        spec.size,
        spec.strides,
        spec.anchor_offset,
        spec.aspect_ratios,
        spec.interpolated_scale_aspect_ratio,
    )


# --------------------------------------------------------------------------- decoding + NMS


@dataclass
class Detections:
    """Boxes ``[K, 4]`` (x1, y1, x2, y2), keypoints ``[K, 6, 2]`` (x, y), scores ``[K]``."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def decode_detections(
    regressors: np.ndarray,
    classificators: np.ndarray,
    anchors: np.ndarray,
    scale: float,
    min_score_thresh: float,
) -> Detections:
    """``TensorsToDetectionsCalculator`` (XYWH, no exp on sizes), in tensor-normalised units.

    Keeps anchor order; drops scores below ``min_score_thresh`` and boxes of negative size.
    """
    raw = np.asarray(regressors, dtype=np.float64).reshape(-1, NUM_COORDS)
    logits = np.asarray(classificators, dtype=np.float64).reshape(len(raw), -1)[:, 0]
    if len(anchors) != len(raw):
        raise ValueError(f"{len(raw)} boxes but {len(anchors)} anchors")
    ax, ay, aw, ah = (anchors[:, i : i + 1] for i in range(4))
    xc = raw[:, 0:1] / scale * aw + ax
    yc = raw[:, 1:2] / scale * ah + ay
    w = raw[:, 2:3] / scale * aw
    h = raw[:, 3:4] / scale * ah
    boxes = np.concatenate([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kx = raw[:, 4::2] / scale * aw + ax
    ky = raw[:, 5::2] / scale * ah + ay
    keypoints = np.stack([kx, ky], axis=-1)
    clipped = np.clip(logits, -SCORE_CLIPPING_THRESH, SCORE_CLIPPING_THRESH)
    scores = 1.0 / (1.0 + np.exp(-clipped))
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (scores >= min_score_thresh) & (width >= 0) & (height >= 0)
    return Detections(boxes[keep], keypoints[keep], scores[keep])


def iou(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """IoU of two (x1, y1, x2, y2) boxes; 0 when they do not overlap or have no area."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(
    detections: Detections, min_suppression_threshold: float = MIN_SUPPRESSION_THRESHOLD
) -> Detections:
    """``NonMaxSuppressionCalculator`` WEIGHTED with IoU overlap.

    Repeatedly: take the best remaining detection; its cluster is every remaining detection
    (itself included) whose IoU with it is > the threshold; emit the score-weighted mean of the
    cluster's boxes (corners) and keypoints with the best one's score; drop the cluster.
    Ties in score keep input order (MediaPipe's std::sort leaves them unspecified).
    """
    order = list(np.argsort(-detections.scores, kind="stable"))
    boxes, kps, scores = [], [], []
    while order:
        best = order[0]
        overlaps = [iou(detections.boxes[i], detections.boxes[best]) for i in order]
        cluster = [i for i, o in zip(order, overlaps, strict=True) if o > min_suppression_threshold]
        rest = [i for i, o in zip(order, overlaps, strict=True) if o <= min_suppression_threshold]
        if cluster:
            weights = detections.scores[cluster]
            total = weights.sum()
            boxes.append((detections.boxes[cluster] * weights[:, None]).sum(0) / total)
            kps.append((detections.keypoints[cluster] * weights[:, None, None]).sum(0) / total)
        else:  # a zero-area best box has IoU 0 even with itself: emitted as is
            boxes.append(detections.boxes[best])
            kps.append(detections.keypoints[best])
        scores.append(detections.scores[best])
        if not cluster:  # nothing was removed: MediaPipe stops here
            break
        order = rest
    if not scores:
        return Detections(np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros((0,)))
    return Detections(np.stack(boxes), np.stack(kps), np.asarray(scores, dtype=np.float64))


# --------------------------------------------------------------------------- whole pipeline


def run_face_model(
    tensor: np.ndarray, model_path: str | Path, variant: Variant
) -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(regressors [1, N, 16], classificators [1, N, 1])`` from OpenVINO CPU f32."""
    spec = FACE_MODELS[variant]
    out = infer(model_path, {spec.input_name: tensor})
    return out[spec.regressors_name], out[spec.classificators_name]


def faces_from_outputs(
    regressors: np.ndarray,
    classificators: np.ndarray,
    letterbox: Letterbox,
    variant: Variant,
) -> list[dict[str, Any]]:
    """Post-processing alone: raw model outputs -> faces in source pixels (see module doc)."""
    spec = FACE_MODELS[variant]
    decoded = decode_detections(
        regressors, classificators, face_anchors(variant), float(spec.size), spec.min_score_thresh
    )
    kept = weighted_nms(decoded)
    faces = []
    for box, kps, score in zip(kept.boxes, kept.keypoints, kept.scores, strict=True):
        corners = letterbox.to_source(box.reshape(2, 2))
        faces.append(
            {
                "box": [float(v) for v in corners.reshape(4)],
                "score": float(score),
                "keypoints": [[float(x), float(y)] for x, y in letterbox.to_source(kps)],
            }
        )
    return faces


def reference_faces(
    rgb: np.ndarray, model_path: str | Path, variant: Variant, sampler: Sampler = "warp"
) -> list[dict[str, Any]]:
    """Faces MediaPipe finds in ``rgb`` (HxWx3 uint8), best first.

    Each face: ``box`` [x1, y1, x2, y2] and ``keypoints`` 6 x [x, y] in source pixels (not
    clipped to the image), ``score`` in [0, 1]. ``variant`` is "full" (192, sparse full-range
    model) or "short" (128, short-range model); ``model_path`` is the matching .tflite.
    """
    spec = FACE_MODELS[variant]
    tensor, box = letterbox_input(rgb, spec.size, sampler)
    regressors, classificators = run_face_model(tensor, model_path, variant)
    return faces_from_outputs(regressors, classificators, box, variant)
