"""Task results as parallel numpy arrays, validated once, turned into the API's JSON shape.

Coordinates are always in source-image pixels. ``to_json`` gives exactly what
``/v1/models/{m}/predict`` returns and what the video pipelines write a line per frame.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from frameserve.processing.image import encode_png


def _r(x: float) -> float:
    return round(float(x), 2)


def pair_iou(a: list[float], b: list[float]) -> float:
    """IoU of two boxes ``[x1, y1, x2, y2]`` in Python floats, with the operations in the order
    the numpy versions use (face NMS, ByteTrack): the same float64 value, bit for bit."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(
        min(a[3], b[3]) - max(a[1], b[1]), 0.0
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(slots=True)
class Detections:
    """N boxes ``[x1, y1, x2, y2]`` with scores, labels and optional keypoints/track ids."""

    boxes: np.ndarray  # [N, 4] float
    scores: np.ndarray  # [N] float
    labels: list[str]
    keypoints: np.ndarray | None = None  # [N, K, 2] float
    track_ids: np.ndarray | None = None  # [N] int

    def __post_init__(self) -> None:
        n = len(self.scores)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(self.boxes) != n or len(self.labels) != n:
            raise ValueError(
                f"Detections: boxes, scores and labels must have one row each, got "
                f"{len(self.boxes)}, {n}, {len(self.labels)}"
            )
        if self.keypoints is not None and (
            self.keypoints.ndim != 3 or len(self.keypoints) != n or self.keypoints.shape[2] != 2
        ):
            raise ValueError(
                f"Detections: keypoints must be [{n}, K, 2], got {self.keypoints.shape}"
            )
        if self.track_ids is not None and len(self.track_ids) != n:
            raise ValueError(f"Detections: track_ids must have {n} rows, got {len(self.track_ids)}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), [])

    def take(self, index: np.ndarray | list[int]) -> Detections:
        idx = np.asarray(index, dtype=np.int64)
        return Detections(
            self.boxes[idx],
            self.scores[idx],
            [self.labels[i] for i in idx],
            None if self.keypoints is None else self.keypoints[idx],
            None if self.track_ids is None else self.track_ids[idx],
        )

    def filter(self, score_threshold: float = 0.0, max_results: int | None = None) -> Detections:
        """Keep scores >= the threshold, best first, at most ``max_results``."""
        order = np.argsort(-self.scores, kind="stable")
        order = order[self.scores[order] >= score_threshold]
        return self.take(order[:max_results])

    def to_json(self) -> dict[str, Any]:
        # Whole arrays to Python numbers first (one call each): every frame of a video
        # writes its detections, and numpy scalars one by one cost ~4x more.
        boxes, scores = self.boxes.tolist(), self.scores.tolist()
        keypoints = self.keypoints.tolist() if self.keypoints is not None else None
        track_ids = self.track_ids.tolist() if self.track_ids is not None else None
        out = []
        for i, label in enumerate(self.labels):
            d: dict[str, Any] = {
                "box": [round(v, 2) for v in boxes[i]],
                "score": round(float(scores[i]), 4),
                "label": label,
            }
            if keypoints is not None:
                d["keypoints"] = [[_r(x), _r(y)] for x, y in keypoints[i]]
            if track_ids is not None:
                d["track_id"] = int(track_ids[i])
            out.append(d)
        return {"detections": out}


@dataclass(slots=True)
class Mask:
    """A single-channel uint8 mask (0 or 255) at the source resolution."""

    mask: np.ndarray  # [H, W] uint8

    def __post_init__(self) -> None:
        if self.mask.ndim != 2 or self.mask.dtype != np.uint8:
            raise ValueError(f"Mask: expected HxW uint8, got {self.mask.dtype} {self.mask.shape}")

    def to_json(self) -> dict[str, Any]:
        h, w = self.mask.shape
        png = base64.b64encode(encode_png(self.mask)).decode("ascii")
        return {"mask": {"png": png, "width": w, "height": h}}


@dataclass(slots=True)
class Texts:
    """N text regions: quadrilaterals (clockwise from top-left), with text and scores."""

    polygons: np.ndarray  # [N, 4, 2] float
    scores: np.ndarray  # [N] detection or recognition scores
    texts: list[str] = field(default_factory=list)  # empty until recognised

    def __post_init__(self) -> None:
        self.polygons = np.asarray(self.polygons, dtype=np.float64).reshape(-1, 4, 2)
        if len(self.polygons) != len(self.scores) or (
            self.texts and len(self.texts) != len(self.scores)
        ):
            raise ValueError(
                f"Texts: polygons, scores and texts must match, got {len(self.polygons)}, "
                f"{len(self.scores)}, {len(self.texts)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> dict[str, Any]:
        out = []
        for i in range(len(self)):
            d: dict[str, Any] = {"polygon": [[_r(x), _r(y)] for x, y in self.polygons[i]]}
            if self.texts:
                d["text"] = self.texts[i]
            d["score"] = round(float(self.scores[i]), 4)
            out.append(d)
        return {"texts": out}


@dataclass(slots=True)
class Text:
    """One recognised line."""

    text: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(float(self.score), 4)}


@dataclass(slots=True)
class Classes:
    """Top-k labels, best first."""

    labels: list[str]
    scores: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": [
                {"label": lb, "score": round(float(s), 4)}
                for lb, s in zip(self.labels, self.scores, strict=True)
            ]
        }


@dataclass(slots=True)
class Quality:
    """A picture's quality: ``score`` 0..100 (higher is better) from the method's ``raw``
    score; ``raw`` is None where the method found nothing to score (a flat picture)."""

    score: float
    method: str
    raw: float | None

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 100.0:
            raise ValueError(f"Quality: score must be in [0, 100], got {self.score}")

    def to_json(self) -> dict[str, Any]:
        raw = None if self.raw is None else round(float(self.raw), 3)
        return {"quality": {"score": _r(self.score), "method": self.method, "raw": raw}}


@dataclass(slots=True)
class Verdict:
    """A frame's moderation verdict: ``unsafe`` when a detection of an unsafe label reached
    its threshold; ``score`` is the best score among unsafe-label detections (0 when none)."""

    unsafe: bool
    labels: list[str]  # the unsafe labels that reached their thresholds, best first
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "label": "unsafe" if self.unsafe else "safe",
            "labels": list(self.labels),
            "score": round(float(self.score), 4),
        }


@dataclass(slots=True)
class Moderation:
    """Detections with the frame's verdict."""

    detections: Detections
    verdict: Verdict

    def __len__(self) -> int:
        return len(self.detections)

    def to_json(self) -> dict[str, Any]:
        return {**self.detections.to_json(), "verdict": self.verdict.to_json()}


Result = Detections | Mask | Texts | Text | Classes | Quality | Moderation
