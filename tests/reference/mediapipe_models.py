"""Where the MediaPipe model files are, for tests: ``FRAMESERVE_TEST_MEDIAPIPE_DIR``.

The folder is MediaPipe's ``mediapipe/modules`` tree (as in the 0.10.21 wheel): files are
looked up by their path relative to it. Tests call ``mediapipe_model(...)`` from a fixture; it
skips the test, saying which file is missing and how to point at it, when the file is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_VAR = "FRAMESERVE_TEST_MEDIAPIPE_DIR"
DEFAULT_DIR = "/tmp/zoo/mp/mediapipe/modules"

FACE_FULL_RANGE = "face_detection/face_detection_full_range_sparse.tflite"
FACE_SHORT_RANGE = "face_detection/face_detection_short_range.tflite"
SELFIE = "selfie_segmentation/selfie_segmentation.tflite"


def mediapipe_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def mediapipe_model(relative: str) -> Path:
    """The model file's path, or skip the calling test with a clear reason."""
    path = mediapipe_dir() / relative
    if not path.is_file():
        pytest.skip(
            f"MediaPipe model {relative} not found under {mediapipe_dir()}; "
            f"set {ENV_VAR} to a folder holding MediaPipe's mediapipe/modules tree"
        )
    return path
