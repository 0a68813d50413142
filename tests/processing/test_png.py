"""The 8-bit grayscale PNG writer (masks): any decoder reads back the exact pixels."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from frameserve.processing import png


def _shapes() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:720, 0:1280]
    person = np.where(((xx - 640) / 300.0) ** 2 + ((yy - 400) / 330.0) ** 2 < 1, 255, 0)
    return [
        np.zeros((1, 1), np.uint8),
        np.full((1, 9), 255, np.uint8),
        np.arange(7, dtype=np.uint8).reshape(7, 1),
        person.astype(np.uint8),  # long runs, as masks are
        rng.integers(0, 256, (97, 131), dtype=np.uint8),  # noise: deflate cannot shrink it
    ]


@pytest.mark.parametrize("pixels", _shapes(), ids=lambda a: "x".join(map(str, a.shape)))
def test_decoders_read_back_the_pixels(pixels: np.ndarray) -> None:
    data = png.gray_png(pixels)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # the chunk CRCs
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, pixels)


def test_a_view_with_strides_is_written_as_its_pixels() -> None:
    big = np.arange(40 * 60, dtype=np.uint32).reshape(40, 60).astype(np.uint8)
    view = big[3:30:2, 5:50:3]
    with Image.open(io.BytesIO(png.gray_png(view))) as image:
        np.testing.assert_array_equal(np.asarray(image), view)


def test_stdlib_zlib_fallback_writes_the_same_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = _shapes()[3]
    fast = png.gray_png(pixels)
    monkeypatch.setattr(png, "_deflate", zlib)
    slow = png.gray_png(pixels)
    for data in (fast, slow):
        with Image.open(io.BytesIO(data)) as image:
            np.testing.assert_array_equal(np.asarray(image), pixels)


def test_masks_stay_small() -> None:
    # The run-length strategy, as libpng's was set for masks: a 720p person mask in 3 KB
    # (without it, zlib-ng's level 1 makes 13 KB of the same mask).
    assert len(png.gray_png(_shapes()[3])) < 4_000
