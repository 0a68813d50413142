"""MediaPipe's own Python solutions loop: the video benchmark's second baseline.

    benchmarks/video/.venv-mediapipe/bin/python benchmarks/video/baseline_mediapipe.py \
        CLIP faces|person-mask OUT.jsonl

Runs in its own pinned environment (``mediapipe_env.py``), never with frameserve: the loop a user
writes from MediaPipe's documentation, ``cv2.VideoCapture`` -> ``cv2.cvtColor(BGR2RGB)`` ->
``process()`` -> one JSON line per frame, with the solutions' default options apart from the
model: ``FaceDetection(model_selection=1)`` (full range, the zoo's ``faces`` model) and
``SelfieSegmentation(model_selection=0)`` (general, the zoo's ``person-mask``). Boxes and
keypoints are written in source pixels; masks as frameserve writes them (foreground > 0.5, a
0/255 PNG in base64), so every contender does the same output work. The PNG uses OpenCV's
default settings, as a user writes it: with this environment's OpenCV 4.11 they took 2.1 ms for
a 720p mask, where frameserve's settings (no row filter, which 4.11 cannot set) took 7.3 ms
there and 1.5 ms with frameserve's OpenCV 5.0.

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
import mediapipe as mp
import numpy as np


def faces(result: Any, w: int, h: int) -> dict[str, Any]:
    out = []
    for d in result.detections or []:
        box = d.location_data.relative_bounding_box
        x0, y0 = box.xmin * w, box.ymin * h
        points = d.location_data.relative_keypoints
        out.append({
            "box": [round(v, 2) for v in (x0, y0, x0 + box.width * w, y0 + box.height * h)],
            "score": round(d.score[0], 4),
            "label": "face",
            "keypoints": [[round(p.x * w, 2), round(p.y * h, 2)] for p in points],
        })  # fmt: skip
    return {"detections": out}


def mask(result: Any, w: int, h: int) -> dict[str, Any]:
    binary = (result.segmentation_mask > 0.5).astype(np.uint8) * np.uint8(255)
    _, png = cv2.imencode(".png", binary)
    return {"mask": {"png": base64.b64encode(png.tobytes()).decode(), "width": w, "height": h}}


def solution(pipeline: str) -> tuple[Any, Any]:
    if pipeline == "faces":
        return mp.solutions.face_detection.FaceDetection(model_selection=1), faces
    if pipeline == "person-mask":
        return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0), mask
    raise ValueError(f"pipeline: expected faces or person-mask, got {pipeline!r}")


def run(video: Path, pipeline: str, out: Path) -> tuple[int, float | None]:
    """(frames, monotonic time of the first written line)."""
    model, to_json = solution(pipeline)
    capture = cv2.VideoCapture(str(video))
    frames, first = 0, None
    with model, out.open("w") as lines:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            result = model.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            h, w = bgr.shape[:2]
            lines.write(json.dumps({"frame": frames, **to_json(result, w, h)}) + "\n")
            frames += 1
            first = first or time.monotonic()
    capture.release()
    return frames, first


def main() -> int:
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        return 2
    frames, first = run(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
    sys.stdout.write(json.dumps({"frames": frames, "first_result_monotonic": first}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
