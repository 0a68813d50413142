"""A user-style classifier made here: a tiny ONNX model (onnx.helper) that names a frame's
dominant colour, with a label file, and clips whose colours (so classes) change at known times."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnx
from onnx import TensorProto, helper

LABELS = ("red", "green", "blue")
MODEL_YAML = """backend: onnxruntime
max_batch_size: 8
preprocess:
  resize: {mode: stretch, size: [32, 32]}
  scale: 0.00392156862745098
  layout: NCHW
postprocess: {task: classes, output: probs, labels_file: labels.txt, top_k: 2}
"""


def colour_classifier(folder: Path, labels: tuple[str, ...] = LABELS) -> Path:
    """``folder/1/model.onnx`` (image [N,3,32,32] -> mean colour x 10 -> softmax ``probs``
    [N,3]), ``labels.txt`` and a ``model.yaml`` with ``labels_file``."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 3], (10 * np.eye(3)).ravel().tolist())
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["means"]),
            helper.make_node("MatMul", ["means", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "colours",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "1" / "model.onnx")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "model.yaml").write_text(MODEL_YAML)
    return folder


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def write_colour_clip(path: Path, segments: list[tuple[str, int]], fps: int = 24) -> Path:
    """Solid-colour segments ``(colour, frames)`` one after another, H.264 at ``fps``."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 128, 96, "yuv420p"
        video.time_base = Fraction(1, 90000)
        i = 0
        for colour, count in segments:
            picture = np.empty((96, 128, 3), np.uint8)
            picture[:] = COLOURS[colour]
            for _ in range(count):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts, frame.time_base = i * 90000 // fps, video.time_base
                out.mux(video.encode(frame))
                i += 1
        out.mux(video.encode(None))
    return path
