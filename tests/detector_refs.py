"""Independent reference decoders for the detector layouts, and tiny ONNX models that emit them.

The references follow each format's published decoding with plain numpy and a plain greedy
NMS (no OpenCV), so a test that compares them with ``frameserve.processing.detectors`` checks
the layouts, the thresholds, the suppression and the letterbox geometry on the same tensors.
Import as ``from detector_refs import ...`` (``tests/`` is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frameserve.tools.example_models import save_model

Ref = tuple[np.ndarray, np.ndarray, list[int]]  # boxes [N, 4] in source pixels, scores, classes


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Best first; drop every box that overlaps a kept one by more than ``threshold``."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        best, rest = order[0], np.asarray(order[1:], dtype=np.int64)
        keep.append(int(best))
        order = (
            [int(i) for i in rest[iou(boxes[best], boxes[rest]) <= threshold]] if len(rest) else []
        )
    return keep


def nms_per_class(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, threshold: float, agnostic: bool
) -> list[int]:
    if agnostic:
        keep = greedy_nms(boxes, scores, threshold)
    else:
        keep = []
        for c in np.unique(classes):
            idx = np.flatnonzero(classes == c)
            keep += [int(idx[i]) for i in greedy_nms(boxes[idx], scores[idx], threshold)]
    return sorted(keep, key=lambda i: -scores[i])


def to_source(xyxy: np.ndarray, scale: float, pad: tuple[float, float], size: tuple[int, int]):
    """Letterbox removed: ``(tensor - pad) / scale``, clipped to the source image."""
    out = (xyxy - np.array([pad[0], pad[1], pad[0], pad[1]])) / scale
    w, h = size
    return np.clip(out, 0, [w, h, w, h])


def xywh_xyxy(b: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            b[:, 0] - b[:, 2] / 2,
            b[:, 1] - b[:, 3] / 2,
            b[:, 0] + b[:, 2] / 2,
            b[:, 1] + b[:, 3] / 2,
        ],
        axis=1,
    )


def ref_yolo(
    rows: np.ndarray,
    objectness: bool,
    threshold: float,
    iou_threshold: float,
    letterbox: tuple[float, tuple[float, float], tuple[int, int]],
    agnostic: bool = False,
    max_results: int = 300,
) -> Ref:
    """v5 (``objectness``) or v8 rows ``[A, 4 (+1) + C]``: Ultralytics' non_max_suppression
    with one class per box (the best), then the letterbox removed."""
    head = 5 if objectness else 4
    cls = rows[:, head:] * (rows[:, 4:5] if objectness else 1.0)
    best = cls.argmax(1)
    score = cls[np.arange(len(cls)), best]
    keep = score >= threshold
    boxes, score, best = xywh_xyxy(rows[keep, :4]), score[keep], best[keep]
    kept = nms_per_class(boxes, score, best, iou_threshold, agnostic)[:max_results]
    return to_source(boxes[kept], *letterbox), score[kept], [int(c) for c in best[kept]]


def ref_end2end(
    rows: np.ndarray,
    threshold: float,
    letterbox: tuple[float, tuple[float, float], tuple[int, int]],
) -> Ref:
    """``[K, 6]`` x1, y1, x2, y2, score, class: threshold, best first, no NMS."""
    keep = np.flatnonzero(rows[:, 4] >= threshold)
    keep = keep[np.argsort(-rows[keep, 4], kind="stable")]
    return to_source(rows[keep, :4], *letterbox), rows[keep, 4], [int(c) for c in rows[keep, 5]]


def ref_detr(
    logits: np.ndarray,
    boxes: np.ndarray,
    threshold: float,
    tensor: tuple[int, int],
    letterbox: tuple[float, tuple[float, float], tuple[int, int]],
) -> Ref:
    """Hugging Face's DETR ``post_process_object_detection``: softmax, drop the last
    ("no object") class, best class per query, threshold; boxes cxcywh of the input."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = (e / e.sum(1, keepdims=True))[:, :-1]
    best = prob.argmax(1)
    score = prob[np.arange(len(prob)), best]
    keep = np.flatnonzero(score >= threshold)
    keep = keep[np.argsort(-score[keep], kind="stable")]
    xyxy = xywh_xyxy(boxes[keep]) * np.array([tensor[0], tensor[1]] * 2)
    return to_source(xyxy, *letterbox), score[keep], [int(c) for c in best[keep]]


def ref_nudenet(output: np.ndarray, width: int, height: int, size: int = 320) -> list[dict]:
    """NudeNet 3.4.2's ``_postprocess`` (nudenet/nudenet.py) step by step, with a plain greedy
    NMS for its ``cv2.dnn.NMSBoxes(boxes, scores, 0.25, 0.45)`` (over all classes; boxes in
    x, y, w, h after clipping; scores above 0.25). Pad right/bottom to a square of
    ``max(width, height)``, scale ``max / size``."""
    rows = np.transpose(np.squeeze(output))
    side = max(width, height)
    x_pad, y_pad = side - width, side - height
    boxes, scores, classes = [], [], []
    for row in rows:
        cls = row[4:]
        if cls.max() < 0.2:
            continue
        x, y, w, h = row[:4]
        x, y = x - w / 2, y - h / 2
        x, y = x * (width + x_pad) / size, y * (height + y_pad) / size
        w, h = w * (width + x_pad) / size, h * (height + y_pad) / size
        x, y = max(0, min(x, width)), max(0, min(y, height))
        w, h = min(w, width - x), min(h, height - y)
        boxes.append([x, y, w, h])
        scores.append(float(cls.max()))
        classes.append(int(cls.argmax()))
    b, s = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores)
    keep = s > 0.25
    xyxy = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    idx = np.flatnonzero(keep)
    kept = [int(idx[i]) for i in greedy_nms(xyxy[idx], s[idx], 0.45)]
    return [{"class": classes[i], "score": scores[i], "box": xyxy[i]} for i in kept]


# -- tiny ONNX models that emit fixed outputs ---------------------------------------------------


def constant_outputs(
    path: Path, outputs: dict[str, np.ndarray], names: str | None = None, size: int = 64
) -> Path:
    """``images`` FP32 ``[N, 3, H, W]`` -> each of ``outputs`` (given without the batch dim),
    repeated for every image of the batch; ``names``: the ``names`` metadata property."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=1),  # [N, 1, 1, 1]
        helper.make_node("Mul", ["mean", "zero"], ["zeros"]),
        helper.make_node("Flatten", ["zeros"], ["column"], axis=1),  # [N, 1]
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    infos = []
    for i, (name, value) in enumerate(outputs.items()):
        value = np.asarray(value)
        inits.append(numpy_helper.from_array(value[None].astype(np.float32), f"c{i}"))
        shape = np.array([-1] + [1] * value.ndim, dtype=np.int64)
        inits.append(numpy_helper.from_array(shape, f"s{i}"))
        nodes.append(helper.make_node("Reshape", ["column", f"s{i}"], [f"z{i}"]))
        nodes.append(helper.make_node("Add", [f"z{i}", f"c{i}"], [name]))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *value.shape]))
    graph = helper.make_graph(
        nodes,
        "constant_outputs",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        infos,
        initializer=inits,
    )
    save_model(graph, path)
    if names is not None:
        model = onnx.load(str(path))
        onnx.helper.set_model_props(model, {"names": names})
        onnx.save(model, str(path))
    return path
