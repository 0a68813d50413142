"""Results out of a script model's outputs, as its ``model.yaml`` declares them.

A script (``backend: python``) computes whatever it likes; ``postprocess: {task:
script_detections, ...}`` names which outputs hold its boxes, scores and labels so that the
video pipelines track, draw, summarise and write them like any detector's. Outputs of a batch
have a fixed shape per row, so a row holds up to K boxes and marks the unused ones with a
score <= 0.
"""

from __future__ import annotations

import numpy as np

from frameserve.errors import ModelExecutionError
from frameserve.processing.results import Detections
from frameserve.processing.spec import ScriptDetectionsSpec
from frameserve.processing.transform import Geometry


def _labels(outputs: dict[str, np.ndarray], spec: ScriptDetectionsSpec, n: int) -> list[str]:
    if spec.labels is None:
        return [spec.label] * n
    raw = np.asarray(outputs[spec.labels]).reshape(-1)
    if len(raw) != n:
        raise ModelExecutionError(
            f"postprocess.labels: output {spec.labels!r} has {len(raw)} rows, expected {n} "
            f"(one per row of {spec.scores!r})"
        )
    if raw.dtype.kind in "OSU":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    if not spec.label_names:
        return [str(int(v)) for v in raw]
    names = spec.label_names
    bad = [int(v) for v in raw if not 0 <= int(v) < len(names)]
    if bad:
        raise ModelExecutionError(
            f"postprocess.labels: output {spec.labels!r} gives class {bad[0]}, expected 0.."
            f"{len(names) - 1} (label_names has {len(names)})"
        )
    return [names[int(v)] for v in raw]


def decode_script_detections(
    outputs: dict[str, np.ndarray],
    geometry: Geometry,
    spec: ScriptDetectionsSpec,
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Detections:
    """One row's outputs (batch dimension removed) -> its detections in source pixels."""
    scores = np.asarray(outputs[spec.scores], dtype=np.float64).reshape(-1)
    boxes = np.asarray(outputs[spec.boxes], dtype=np.float64)
    if boxes.size != 4 * len(scores):
        raise ModelExecutionError(
            f"postprocess.boxes: output {spec.boxes!r} has shape {list(boxes.shape)}, expected "
            f"[{len(scores)}, 4] (one box per score of {spec.scores!r})"
        )
    corners = boxes.reshape(-1, 2, 2)  # [K, (x1,y1)/(x2,y2), 2]
    mapped = geometry.to_source(corners, normalized=spec.coordinates == "normalized")
    w, h = geometry.source_size
    mapped[..., 0] = mapped[..., 0].clip(0, w)
    mapped[..., 1] = mapped[..., 1].clip(0, h)
    found = Detections(mapped.reshape(-1, 4), scores, _labels(outputs, spec, len(scores)))
    keep = np.flatnonzero(scores > 0)
    threshold = max(spec.score_threshold, score_threshold or 0.0)
    limit = min(spec.max_results, max_results or spec.max_results)
    return found.take(keep).filter(threshold, limit)
