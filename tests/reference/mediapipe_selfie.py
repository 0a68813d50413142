"""Reference MediaPipe selfie segmentation (general 256x256 model), numpy + cv2 only.

Written from ``modules/selfie_segmentation/selfie_segmentation_cpu.pbtxt`` (model_selection 0)
independently of frameserve:

1. ``ImageToTensorCalculator``: the whole RGB image stretched to 256x256 (keep_aspect_ratio
   false), INTER_LINEAR, range [0, 1], NHWC float32. ``sampler="warp"`` (default) is what
   MediaPipe's CPU converter does (``cv2.warpPerspective`` of the image corners onto the tensor
   corners: no half-pixel offset); ``sampler="resize"`` uses ``cv2.resize`` (half-pixel
   centres). Against MediaPipe 0.10.21 the mask IoU is >= 0.999 with "warp" and 0.95-0.99 with
   "resize".
2. The model (``activation_10`` is already a probability; the graph's activation is NONE).
3. ``TensorsToSegmentationCalculator`` (CPU): ``cv2.resize`` of the 256x256 float map to the
   source size, INTER_LINEAR. The person mask is probability > threshold (0.5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from reference.openvino_cpu import infer

Sampler = Literal["resize", "warp"]

SIZE = 256
INPUT_NAME = "input_1"
OUTPUT_NAME = "activation_10"
THRESHOLD = 0.5


def reference_person_input(rgb: np.ndarray, sampler: Sampler = "warp") -> np.ndarray:
    """The ``[1, 256, 256, 3]`` float32 tensor in [0, 1] (RGB) MediaPipe feeds the model."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    if sampler == "resize":
        stretched = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    elif sampler == "warp":
        matrix = np.array([[SIZE / width, 0.0, 0.0], [0.0, SIZE / height, 0.0], [0.0, 0.0, 1.0]])
        stretched = cv2.warpPerspective(
            rgb,
            matrix,
            (SIZE, SIZE),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    else:
        raise ValueError(f"unknown sampler {sampler!r}")
    return (stretched.astype(np.float32) / np.float32(255.0))[np.newaxis]


def probability_from_output(output: np.ndarray, height: int, width: int) -> np.ndarray:
    """The model's ``[1, 256, 256, 1]`` map -> ``height x width`` float32 (bilinear)."""
    small = np.ascontiguousarray(np.asarray(output, dtype=np.float32).reshape(SIZE, SIZE))
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def run_selfie_model(tensor: np.ndarray, model_path: str | Path) -> np.ndarray:
    """Raw ``[1, 256, 256, 1]`` person probability from OpenVINO CPU f32."""
    return infer(model_path, {INPUT_NAME: tensor})[OUTPUT_NAME]


def reference_person_probability(
    rgb: np.ndarray, model_path: str | Path, sampler: Sampler = "warp"
) -> np.ndarray:
    """Per-pixel person probability, ``H x W`` float32, for ``rgb`` (HxWx3 uint8)."""
    output = run_selfie_model(reference_person_input(rgb, sampler), model_path)
    return probability_from_output(output, rgb.shape[0], rgb.shape[1])


def reference_person_mask(
    rgb: np.ndarray,
    model_path: str | Path,
    threshold: float = THRESHOLD,
    sampler: Sampler = "warp",
) -> np.ndarray:
    """Boolean ``H x W`` person mask: probability > ``threshold``."""
    return reference_person_probability(rgb, model_path, sampler) > threshold
