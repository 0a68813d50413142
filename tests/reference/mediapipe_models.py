"""Where the MediaPipe model files are for tests: in the zoo repository the suite pulls.

``frameserve zoo pull`` copies each file out of the pinned mediapipe wheel after checking its
sha256, so these are MediaPipe's own bytes; the reference only needs their paths.
"""

from __future__ import annotations

from pathlib import Path

FACE_FULL_RANGE = "faces/1/model.tflite"  # face_detection_full_range_sparse.tflite
FACE_SHORT_RANGE = "faces-near/1/model.tflite"  # face_detection_short_range.tflite
SELFIE = "person-mask/1/model.tflite"  # selfie_segmentation.tflite


def mediapipe_model(repository: Path, relative: str) -> Path:
    """The model file's path in a pulled zoo repository."""
    path = repository / relative
    assert path.is_file(), f"{path}: missing from the zoo repository"
    return path
