"""Each stage alone: its throughput and the CPU seconds it spends per frame.

The bound for a pipeline on ``cores`` cores is ``cores / sum(CPU seconds per frame of decode,
pre-processing, inference, post-processing)``: what perfect overlap of the stages would give.
CPU time is the process's (every thread, FFmpeg's and OpenVINO's included).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import openvino as ov
import orjson

from frameserve.processing.results import Detections
from frameserve.processing.tasks import ModelProcessing
from frameserve.serving.config import load_model_config
from frameserve.video.decode import VideoSource
from frameserve.video.frames import Sampling
from frameserve.video.track import Tracker


def _timed(fn, frames: int) -> dict:  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"fps": frames / wall, "cpu_ms_per_frame": cpu / frames * 1000}


def decode_only(video: Path, threads: int) -> tuple[dict, list[np.ndarray]]:
    """Decode + RGB of every frame (as the pipeline's decoder thread does)."""
    source = VideoSource(video, 0, Sampling(), threads)
    images: list[np.ndarray] = []

    def run() -> None:
        images.extend(f.image for f in source.frames(threading.Event()) if f.image is not None)

    return _timed(run, source.info.frames or 1), images


def stages_alone(folder: Path, images: list[np.ndarray], cores: int) -> dict:
    """Pre-processing, inference (the served configuration, batched) and post-processing."""
    config = load_model_config(folder / "model.yaml")
    assert config.preprocess is not None
    processing = ModelProcessing(config.preprocess, config.postprocess, folder)
    n = len(images)
    prepared = [processing.preprocess([im]) for im in images[:1]]
    out = {"preprocess": _timed(lambda: [processing.preprocess([im]) for im in images], n)}
    tensor, geometries = prepared[0]
    out["inference"], outputs = _inference(folder, config, tensor, n, cores)
    tracker = Tracker()

    def post() -> None:
        for i in range(n):
            result = processing.decode(outputs, geometries[0])
            if isinstance(result, Detections):
                result = tracker.update(result, i / 30)
            orjson.dumps(result.to_json())

    out["postprocess"] = _timed(post, n)
    return out


def _inference(folder, config, tensor, n, cores):  # type: ignore[no-untyped-def]
    """The model as served (THROUGHPUT streams, batch 8, async), alone: its ceiling."""
    from naive import model_file

    from frameserve.backends.openvino_graph import FRONTEND_EXTENSIONS, rewrite_batch_reshapes

    core = ov.Core()
    for name in config.openvino.frontend_extensions:
        for extension in FRONTEND_EXTENSIONS[name]():
            core.add_extension(extension)
    model = core.read_model(str(model_file(folder)))
    if config.openvino.rewrite_batch_reshapes:
        rewrite_batch_reshapes(model)
    batch = max(1, config.max_batch_size or 1)
    model.reshape({model.inputs[0].any_name: [batch, *tensor.shape[1:]]})
    compiled = core.compile_model(
        model,
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT",
         "INFERENCE_NUM_THREADS": str(cores)},
    )  # fmt: skip
    queue = ov.AsyncInferQueue(compiled)
    x = np.repeat(tensor, batch, axis=0)
    one = compiled.create_infer_request().infer({0: x})
    outputs = {o.get_any_name(): v[0] for o, v in one.items()}

    def run() -> None:
        for _ in range(-(-n // batch)):
            queue.start_async({0: x})
        queue.wait_all()

    return _timed(run, -(-n // batch) * batch), outputs
