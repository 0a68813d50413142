"""The baseline: a sequential loop as a user would write it, doing the same work as ours.

cv2.VideoCapture decodes (FFmpeg, OpenCV's default threads), cv2.cvtColor turns BGR into RGB,
the model's declared pre-processing makes the tensor, one synchronous OpenVINO inference runs
per frame (default properties except the f32 precision our zoo configs use, so both run the
same arithmetic), then the same task decoder, tracker and JSON lines as ``frameserve video run``.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import openvino as ov
import orjson

from frameserve.backends.openvino_graph import FRONTEND_EXTENSIONS
from frameserve.processing.results import Detections
from frameserve.processing.tasks import ModelProcessing
from frameserve.serving.config import ModelConfig, load_model_config
from frameserve.video.track import Tracker


def model_file(folder: Path) -> Path:
    return next(p for p in sorted((folder / "1").iterdir()) if p.suffix in (".tflite", ".onnx"))


def compile_default(folder: Path, config: ModelConfig) -> ov.CompiledModel:
    core = ov.Core()
    for name in config.openvino.frontend_extensions:
        for extension in FRONTEND_EXTENSIONS[name]():
            core.add_extension(extension)
    model = core.read_model(str(model_file(folder)))
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def naive_run(video: Path, folder: Path, out: Path, track: bool) -> tuple[int, float, float]:
    """(frames, wall seconds, process CPU seconds) of the sequential loop."""
    config = load_model_config(folder / "model.yaml")
    assert config.preprocess is not None
    processing = ModelProcessing(config.preprocess, config.postprocess, folder)
    request = compile_default(folder, config).create_infer_request()
    tracker = Tracker() if track else None
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = 0
    wall, cpu = time.perf_counter(), time.process_time()
    with out.open("wb") as lines:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            tensor, geometries = processing.preprocess([rgb])
            outputs = request.infer({0: tensor})
            named = {o.get_any_name(): v[0] for o, v in outputs.items()}
            result = processing.decode(named, geometries[0])
            if tracker is not None and isinstance(result, Detections):
                result = tracker.update(result, frames / fps)
            line = {"frame": frames, "pts": frames / fps, **result.to_json()}
            lines.write(orjson.dumps(line) + b"\n")
            frames += 1
    capture.release()
    return frames, time.perf_counter() - wall, time.process_time() - cpu
