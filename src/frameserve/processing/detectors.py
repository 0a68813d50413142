"""Generic detector decoders: the YOLO family's output layouts and DETR-style boxes + logits.

What users bring are mostly YOLO exports, and each export family lays its output out its own
way; ``postprocess`` declares which (``spec.YoloSpec``, ``spec.DetrSpec``) and the layout is
checked against the model file at load, so a wrong declaration fails there and not on the
first request. Boxes are decoded in the input tensor's pixels and mapped back to the source
image through the pre-processing ``Geometry`` (letterbox or pad), then clipped to it.

Suppression is OpenCV's ``cv2.dnn.NMSBoxesBatched`` (class-aware; a class offset per box, as
Ultralytics does) or ``cv2.dnn.NMSBoxes`` (``class_agnostic``), greedy on IoU, best first.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

from frameserve.errors import ConfigError, ModelExecutionError, ModelLoadError
from frameserve.processing.results import Detections, Moderation, Verdict
from frameserve.processing.spec import DetrSpec, VerdictSpec, YoloSpec
from frameserve.processing.transform import Geometry

DETECTION_TASKS = frozenset({"ssd_anchors", "yolo", "detr", "script_detections"})
"""Tasks whose results are boxes: video pipelines may track them (``track:``)."""

DetectorSpec = YoloSpec | DetrSpec
Metadata = Callable[[], Mapping[str, str]]
"""Reads the model file's metadata properties (called only when names come from there)."""


# -- class names ------------------------------------------------------------------------------


def parse_names(text: str, where: str) -> list[str]:
    """Ultralytics' ``names`` metadata: a dict literal ``{0: 'person', 1: 'car'}`` (or a list).

    Parsed with ``ast.literal_eval`` (literals only: nothing in a model file is executed)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ConfigError(
            f"{where}: expected a dict literal such as {{0: 'person', 1: 'car'}}, got {text[:80]!r}"
        ) from None
    if isinstance(value, list | tuple):
        value = dict(enumerate(value))
    if not isinstance(value, dict) or not all(isinstance(k, int) for k in value):
        raise ConfigError(f"{where}: expected class index -> name, got {text[:80]!r}")
    if sorted(value) != list(range(len(value))):
        raise ConfigError(
            f"{where}: expected class indices 0..{len(value) - 1}, got {sorted(value)[:10]}"
        )
    return [str(value[i]) for i in range(len(value))]


def read_label_file(path: Path) -> list[str]:
    """One class name a line; blank lines at the end are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the labels file: {err.strerror}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ConfigError(f"{path}: the labels file is empty, expected one class name a line")
    return [line.strip() for line in lines]


def resolve_labels(
    spec: DetectorSpec, folder: Path, metadata: Metadata | None, source: str
) -> tuple[str, ...]:
    """The class names: ``labels`` (a file in the model folder), else the ONNX metadata."""
    if spec.labels is not None:
        return tuple(read_label_file(folder / spec.labels))
    props = metadata() if metadata is not None else {}
    if "names" not in props:
        raise ConfigError(
            f"{source}: postprocess.labels: unset, and the model file has no 'names' metadata "
            f"property (found {sorted(props) or 'none'}); name a labels file (one class a line)"
        )
    return tuple(parse_names(props["names"], f"{source}: the model's 'names' metadata"))


def check_verdict(spec: DetectorSpec, labels: tuple[str, ...], source: str) -> None:
    """Every label a verdict names is one of the model's."""
    if spec.verdict is None:
        return
    unknown = [lb for lb in spec.verdict.unsafe if lb not in labels]
    if unknown:
        raise ConfigError(
            f"{source}: postprocess.verdict.unsafe: unknown labels {unknown}; the model's "
            f"labels are {list(labels)}"
        )


# -- layouts, checked at load -----------------------------------------------------------------


def _strip(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """Drop leading batch-like dims of 1 (models served with ``max_batch_size: 0``)."""
    while len(shape) > ndim and shape[0] in (1, -1):
        shape = shape[1:]
    return shape


def _fits(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
    """Whether a model's shape (``-1``: dynamic) can be the declared one."""
    if want == (1,) and shape == ():
        return True  # a scalar count per image
    s = _strip(shape, len(want))
    return len(s) == len(want) and all(
        w is None or d == -1 or d == w for d, w in zip(s, want, strict=True)
    )


def _yolo_forms(classes: int) -> dict[str, tuple[int | None, ...]]:
    """Single-output layouts (batch dim excluded); None: any size."""
    return {
        "format v5": (None, 5 + classes),
        "format v8": (4 + classes, None),
        "format v8, transposed": (None, 4 + classes),
        "format end2end": (None, 6),
    }


def _show(want: tuple[int | None, ...], names: tuple[str, ...]) -> str:
    """A declared shape as the error prints it, e.g. ``[22, A]``."""
    return (
        "[" + ", ".join(n if w is None else str(w) for w, n in zip(want, names, strict=True)) + "]"
    )


Shape = tuple[int | None, ...]  # a declared shape: None is any size
_YOLO_LAYOUTS = (
    "; YOLO layouts: v5 [A, 5+C], v8 [4+C, A], v8 transposed [A, 4+C], end2end [K, 6] or "
    "num/boxes/scores/classes"
)
_DETR_LAYOUTS = "; DETR layouts: boxes [Q, 4], logits [Q, C+1] (softmax) or [Q, C] (sigmoid)"


def _declared(spec: DetectorSpec, c: int) -> tuple[str, dict[str, tuple[Shape, tuple[str, ...]]]]:
    """The declared form's name and, per output, its shape with the symbols it prints."""
    if isinstance(spec, DetrSpec):
        logits = c + 1 if spec.activation == "softmax" else c
        return f"detr ({spec.activation})", {
            spec.boxes: ((None, 4), ("Q", "4")),
            spec.logits: ((None, logits), ("Q", "C")),
        }
    if spec.outputs is not None:
        o = spec.outputs
        return "yolo end2end (four outputs)", {
            o.num: ((1,), ("1",)),
            o.boxes: ((None, 4), ("K", "4")),
            o.scores: ((None,), ("K",)),
            o.classes: ((None,), ("K",)),
        }
    assert spec.output is not None
    key = f"format {spec.format}" + (", transposed" if spec.transposed else "")
    symbol = "K" if spec.format == "end2end" else "A"
    return f"yolo {key}", {spec.output: (_yolo_forms(c)[key], (symbol, symbol))}


def check_layout(
    spec: DetectorSpec,
    shapes: Mapping[str, tuple[int, ...]],
    labels: tuple[str, ...],
    source: str,
) -> None:
    """Refuse (at load) a model whose outputs match none of the declared layout's shapes."""
    c = len(labels)
    form, declared = _declared(spec, c)
    bad = [n for n, (want, _) in declared.items() if not _fits(shapes[n], want)]
    if not bad:
        return
    found = ", ".join(f"{n!r} {list(shapes[n])}" for n in bad)
    expected = ", ".join(f"{n!r} {_show(*declared[n])}" for n in bad)
    hint = _YOLO_LAYOUTS if isinstance(spec, YoloSpec) else _DETR_LAYOUTS
    if isinstance(spec, YoloSpec) and spec.output is not None:
        fits = [k for k, w in _yolo_forms(c).items() if _fits(shapes[spec.output], w)]
        hint += f"; the shape fits {', '.join(fits)}" if fits else ""
    raise ModelLoadError(
        f"{source}: postprocess ({form}, {c} labels): the model's outputs are {found} (batch "
        f"dim excluded), expected {expected}{hint}"
    )


# -- decoding ---------------------------------------------------------------------------------


def _matrix(array: np.ndarray, name: str, ndim: int = 2) -> np.ndarray:
    a = np.asarray(array)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise ModelExecutionError(f"{name}: expected {ndim} dims per image, got {list(a.shape)}")
    return a.astype(np.float64, copy=False)


def _class_count(width: int, extra: int, labels: tuple[str, ...], name: str) -> None:
    if width - extra != len(labels):
        raise ModelExecutionError(
            f"{name}: the model gives {width - extra} class scores per box, the labels "
            f"name {len(labels)} classes"
        )


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2.0
    return np.concatenate([b[:, 0:2] - half, b[:, 0:2] + half], axis=1)


def suppress(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, agnostic: bool
) -> np.ndarray:
    """Indices kept by greedy NMS (per class unless ``agnostic``), best score first."""
    if len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    rects = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    # Boxes were thresholded already; OpenCV keeps scores > 0 here (a 0 is never an object).
    if agnostic:
        kept = cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), 0.0, iou)
    else:
        ids = classes.astype(np.int32).tolist()
        kept = cv2.dnn.NMSBoxesBatched(rects.tolist(), scores.tolist(), ids, 0.0, iou)
    order = np.asarray(kept, dtype=np.int64).reshape(-1)
    return order[np.argsort(-scores[order], kind="stable")]


def _candidates(
    outputs: Mapping[str, np.ndarray], spec: YoloSpec, labels: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(xyxy boxes, scores, class ids, whether NMS still has to run) before thresholds."""
    if spec.outputs is not None:
        o = spec.outputs
        num = int(np.asarray(outputs[o.num]).reshape(-1)[0])
        boxes = _matrix(outputs[o.boxes], o.boxes)[:num]
        scores = _matrix(outputs[o.scores], o.scores, 1)[:num]
        classes = _matrix(outputs[o.classes], o.classes, 1)[:num]
        return boxes, scores, classes, False
    assert spec.output is not None
    raw = _matrix(outputs[spec.output], spec.output)
    if spec.format == "end2end":
        return raw[:, :4], raw[:, 4], raw[:, 5], False
    if spec.format == "v8" and not spec.transposed:
        raw = raw.T  # [4+C, A] -> [A, 4+C]
    head = 5 if spec.format == "v5" else 4
    _class_count(raw.shape[1], head, labels, spec.output)
    cls = raw[:, head:]
    if spec.format == "v5":
        cls = cls * raw[:, 4:5]  # objectness times class probability
    classes = np.argmax(cls, axis=1) if len(cls) else np.zeros(0, dtype=np.int64)
    scores = cls[np.arange(len(cls)), classes]
    return _xywh_to_xyxy(raw[:, :4]), scores, classes, True


def _to_source(boxes: np.ndarray, geometry: Geometry, normalized: bool) -> np.ndarray:
    """Tensor boxes -> source pixels, clipped to the source image."""
    corners = geometry.to_source(boxes.reshape(-1, 2, 2), normalized=normalized).reshape(-1, 4)
    w, h = geometry.source_size
    return np.clip(corners, 0.0, [w, h, w, h])


def _labelled(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, labels: tuple[str, ...], name: str
) -> Detections:
    ids = classes.astype(np.int64)
    bad = ids[(ids < 0) | (ids >= len(labels))]
    if len(bad):
        raise ModelExecutionError(
            f"{name}: class index {int(bad[0])} is outside the {len(labels)} labels"
        )
    return Detections(boxes, scores, [labels[i] for i in ids])


def decode_yolo(
    outputs: Mapping[str, np.ndarray],
    geometry: Geometry,
    spec: YoloSpec,
    labels: tuple[str, ...],
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Detections:
    """One image's YOLO outputs -> detections in source pixels, best first."""
    boxes, scores, classes, needs_nms = _candidates(outputs, spec, labels)
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    keep = np.flatnonzero(scores >= threshold)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if spec.normalized:
        boxes = boxes * np.tile(np.asarray(geometry.tensor_size, dtype=np.float64), 2)
    if needs_nms:
        order = suppress(boxes, scores, classes, spec.iou_threshold, spec.class_agnostic)
    else:
        order = np.argsort(-scores, kind="stable")
    limit = min(spec.max_results, max_results) if max_results else spec.max_results
    order = order[:limit]
    name = spec.output or (spec.outputs.classes if spec.outputs else "")
    source = _to_source(boxes[order], geometry, normalized=False)
    return _labelled(source, scores[order], classes[order], labels, name)


def decode_detr(
    outputs: Mapping[str, np.ndarray],
    geometry: Geometry,
    spec: DetrSpec,
    labels: tuple[str, ...],
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Detections:
    """One image's DETR outputs -> detections (no NMS: each query is one object)."""
    logits = _matrix(outputs[spec.logits], spec.logits)
    boxes = _matrix(outputs[spec.boxes], spec.boxes)
    if spec.activation == "softmax":
        _class_count(logits.shape[1], 1, labels, spec.logits)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob = (e / e.sum(axis=1, keepdims=True))[:, :-1]  # the last class is "no object"
        classes = np.argmax(prob, axis=1)
        scores = prob[np.arange(len(prob)), classes]
        query = np.arange(len(prob))
    else:
        _class_count(logits.shape[1], 0, labels, spec.logits)
        prob = 1.0 / (1.0 + np.exp(-logits))
        query, classes = np.unravel_index(np.arange(prob.size), prob.shape)
        scores = prob.reshape(-1)
    threshold = spec.score_threshold if score_threshold is None else score_threshold
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    limit = min(spec.max_results, max_results) if max_results else spec.max_results
    keep = keep[:limit]
    xyxy = _xywh_to_xyxy(boxes[query[keep]])
    source = _to_source(xyxy, geometry, normalized=True)
    return _labelled(source, scores[keep], classes[keep], labels, spec.logits)


def judge(detections: Detections, spec: VerdictSpec) -> Verdict:
    """``unsafe`` when a detection of an unsafe label reaches that label's threshold."""
    unsafe = set(spec.unsafe)
    best: dict[str, float] = {}
    top = 0.0
    for label, score in zip(detections.labels, detections.scores, strict=True):
        if label not in unsafe:
            continue
        top = max(top, float(score))
        if score >= spec.scores.get(label, spec.min_score):
            best[label] = max(best.get(label, 0.0), float(score))
    found = sorted(best, key=lambda lb: -best[lb])
    return Verdict(bool(found), found, top)


def decode_detector(
    outputs: Mapping[str, np.ndarray],
    geometry: Geometry,
    spec: DetectorSpec,
    labels: tuple[str, ...],
    score_threshold: float | None = None,
    max_results: int | None = None,
) -> Detections | Moderation:
    """Detections of one image, with the frame's verdict when the model declares one (judged
    on the detections returned, so after the request's own threshold)."""
    if isinstance(spec, YoloSpec):
        found = decode_yolo(outputs, geometry, spec, labels, score_threshold, max_results)
    else:
        found = decode_detr(outputs, geometry, spec, labels, score_threshold, max_results)
    return found if spec.verdict is None else Moderation(found, judge(found, spec.verdict))
