"""The OpenCV + OpenVINO loop a user writes by hand: the video benchmark's first baseline.

    .venv/bin/python benchmarks/video/baseline_openvino.py CLIP MODEL_FOLDER OUT.jsonl

``cv2.VideoCapture`` -> ``cv2.resize`` to the model input, BGR -> RGB and the normalisation the
model needs -> one synchronous OpenVINO inference per frame, compiled with OpenVINO's *default*
properties (``core.compile_model(model, "CPU")``: no precision, no performance hint) -> the
outputs decoded into boxes or a mask by frameserve's own task decoder -> one JSON line per frame
(a mask written as PNG by ``cv2.imencode``, as a user's own code and the MediaPipe baseline do).
No tracking (frameserve's ``faces`` pipeline tracks; this loop does not).

Reading the model is the only part taken from frameserve's backend: ``core_for`` adds the
frontend extension the ``person-mask`` graph needs (MediaPipe's custom transposed convolution),
and ``find_model_file`` finds the .tflite. The loop itself is the ~15 lines of ``run``.

Prints ``{"frames": N, "first_result_monotonic": T}`` on stdout: ``T`` is ``time.monotonic()``
right after the first line was written (the harness's start-up time).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from frameserve.backends.openvino import core_for, find_model_file
from frameserve.processing.results import Detections, Mask
from frameserve.processing.tasks import ModelProcessing
from frameserve.processing.transform import Geometry
from frameserve.serving.config import load_model_config


def to_json(result: Detections | Mask) -> dict[str, Any]:
    """The line's result as frameserve writes it; a mask as the user's own code writes a PNG
    (``cv2.imencode``, as the MediaPipe baseline does), not through frameserve's encoder."""
    if not isinstance(result, Mask):
        return result.to_json()
    h, w = result.mask.shape[:2]
    _, png = cv2.imencode(".png", result.mask)
    return {"mask": {"png": base64.b64encode(png.tobytes()).decode(), "width": w, "height": h}}


def run(video: Path, folder: Path, out: Path) -> tuple[int, float | None]:
    """(frames, monotonic time of the first written line)."""
    config = load_model_config(folder / "model.yaml")
    spec = config.preprocess
    assert spec is not None, f"{folder}: the model declares no preprocess block"
    core = core_for(config)
    compiled = core.compile_model(core.read_model(str(find_model_file(folder / "1"))), "CPU")
    request = compiled.create_infer_request()
    decoder = ModelProcessing(spec, config.postprocess, folder)
    size = spec.resize.size
    assert size is not None, f"{folder}: the model declares no input size"
    mean, std = np.float32(spec.mean), np.float32(spec.std)
    capture = cv2.VideoCapture(str(video))
    frames, first = 0, None
    with out.open("w") as lines:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(cv2.resize(bgr, size), cv2.COLOR_BGR2RGB)
            x = (rgb.astype(np.float32) * np.float32(spec.scale) - mean) / std
            outputs = {p.get_any_name(): v[0] for p, v in request.infer({0: x[None]}).items()}
            h, w = bgr.shape[:2]
            geometry = Geometry((w, h), size, (size[0] / w, size[1] / h), (0.0, 0.0))
            result = decoder.decode(outputs, geometry)
            lines.write(json.dumps({"frame": frames, **to_json(result)}) + "\n")
            frames += 1
            first = first or time.monotonic()
    capture.release()
    return frames, first


def main() -> int:
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    frames, first = run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    sys.stdout.write(json.dumps({"frames": frames, "first_result_monotonic": first}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
