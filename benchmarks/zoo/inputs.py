"""Real inputs: scikit-image's astronaut and page, text-line crops, and the encoded files.

Every tensor is made by the model's declared pre-processing (``Preprocessor``), so the runtime
numbers are for exactly the tensors the server would feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import ModelConfig, load_model_config

FACE_MODELS = ("faces", "faces-near", "person-mask")
TEXT_LINE_MODELS = ("text-cls", "text-rec")
SEGMENT_ASPECT = 320 / 48  # a crop this wide per pixel of height fills text-rec's 48x320


@cache
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut())  # 512x512 RGB


@cache
def page() -> np.ndarray:
    """The page as an RGB image (the file is grayscale)."""
    gray = skimage.data.page()
    return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))


def text_bands(gray: np.ndarray, min_height: int = 10, max_height: int = 24) -> list[tuple]:
    """(top, bottom, left, right) of each text line, from a projection of the dark pixels.

    The page is unevenly lit, so a pixel counts as ink when it is much darker than the
    brightest pixel around it (a grey dilation removes the strokes and keeps the paper).
    """
    paper = cv2.dilate(gray, np.ones((15, 15), np.uint8)).astype(np.int16)
    ink = gray.astype(np.int16) < paper - 50
    rows = ink.sum(axis=1) > 8
    bands, top = [], None
    for y, on in enumerate([*rows, False]):
        if on and top is None:
            top = y
        elif not on and top is not None:
            if min_height <= y - top <= max_height:
                cols = np.flatnonzero(ink[top:y].any(axis=0))
                bands.append(
                    (max(0, top - 2), min(gray.shape[0], y + 2), int(cols[0]), int(cols[-1]) + 1)
                )
            top = None
    return bands


@cache
def line_crops() -> tuple[np.ndarray, ...]:
    """Pieces of the page's text lines, each at most 320/48 as wide as high (RGB)."""
    rgb = page()
    crops = []
    for top, bottom, left, right in text_bands(rgb[..., 0]):
        width = int((bottom - top) * SEGMENT_ASPECT)
        for x in range(left, right - width // 2, width):
            crops.append(np.ascontiguousarray(rgb[top:bottom, x : x + width]))
    if not crops:
        raise RuntimeError("found no text lines in skimage.data.page()")
    return tuple(crops)


def source_images(model: str) -> tuple[np.ndarray, ...]:
    """The images a model is measured on (batches cycle through them)."""
    if model in FACE_MODELS:
        return (astronaut(),)
    if model in TEXT_LINE_MODELS:
        return line_crops()
    return (page(),)


def describe_source(model: str) -> str:
    if model in FACE_MODELS:
        return "astronaut 512x512"
    if model in TEXT_LINE_MODELS:
        return f"{len(line_crops())} page line crops"
    return "page 384x191"


@dataclass(frozen=True)
class ModelInputs:
    """A model's folder, parsed config and declared pre-processing."""

    name: str
    folder: Path
    config: ModelConfig

    @classmethod
    def load(cls, repository: Path, name: str) -> ModelInputs:
        folder = repository / name
        return cls(name, folder, load_model_config(folder / "model.yaml"))

    @property
    def preprocessor(self) -> Preprocessor:
        assert self.config.preprocess is not None, f"{self.name}: no preprocess block"
        return Preprocessor(self.config.preprocess)

    def batch(self, size: int) -> np.ndarray:
        """A [size, ...] input tensor from the model's source images, cycled."""
        images = source_images(self.name)
        tensor, _ = self.preprocessor([images[i % len(images)] for i in range(size)])
        return tensor

    def model_file(self) -> Path:
        for candidate in ("1/model.onnx", "1/model.tflite", "1/model.xml"):
            if (self.folder / candidate).is_file():
                return self.folder / candidate
        raise FileNotFoundError(f"{self.folder}/1: no model file")


def encoded_image(model: str) -> tuple[bytes, str]:
    """The request body for an image request: a JPEG of the astronaut or a PNG of the page."""
    if model in FACE_MODELS:
        ok, data = cv2.imencode(".jpg", astronaut()[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        content_type = "image/jpeg"
    else:
        ok, data = cv2.imencode(".png", page()[..., ::-1])
        content_type = "image/png"
    if not ok:
        raise RuntimeError(f"cv2 could not encode the image for {model}")
    return data.tobytes(), content_type
