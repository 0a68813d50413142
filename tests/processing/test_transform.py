"""Declared pre-processing: resize modes and their geometry, normalisation, layout and dtype.

PP-OCR's sizes are checked against rapidocr's own ``DetPreProcess``; the face models' tensors
against the independent MediaPipe reference (``tests/reference/mediapipe_faces.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from rapidocr.ch_ppocr_det.utils import DetPreProcess
from reference.mediapipe_faces import reference_face_input

from frameserve.errors import InvalidInput, PayloadTooLarge
from frameserve.processing.spec import PreprocessSpec
from frameserve.processing.transform import Geometry, Preprocessor, check_image
from frameserve.serving.config import load_model_config

# (x * scale - mean) / std maps 0..255 to -1..1 (PP-OCR and MediaPipe's face detectors).
MINUS_ONE_TO_ONE: dict[str, Any] = {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}


def preprocessor(resize: dict[str, Any], fused: bool = False, **options: Any) -> Preprocessor:
    return Preprocessor(PreprocessSpec(resize=resize, **options), fused)


def image(width: int, height: int, value: int = 255) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)


def content_corners(g: Geometry) -> np.ndarray:
    """Where the geometry says the source's corners lie in the tensor (tensor pixels)."""
    x0, y0 = g.pad
    x1 = x0 + g.source_size[0] * g.scale[0]
    y1 = y0 + g.source_size[1] * g.scale[1]
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def source_corners(width: int, height: int) -> np.ndarray:
    return np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)


# --------------------------------------------------------------------------- resize modes


def test_stretch_fills_the_tensor() -> None:
    out, g = preprocessor({"mode": "stretch", "size": [64, 48]}).resize_image(image(100, 30))
    assert out.shape == (48, 64, 3)
    assert g == Geometry((100, 30), (64, 48), (0.64, 1.6), (0.0, 0.0))
    assert np.allclose(g.to_source(content_corners(g)), source_corners(100, 30))


@pytest.mark.parametrize("sampler", ["resize", "warp"])
def test_letterbox_centres_the_content(sampler: str) -> None:
    pre = preprocessor({"mode": "letterbox", "size": [192, 192], "sampler": sampler})
    out, g = pre.resize_image(image(512, 300))
    assert out.shape == (192, 192, 3)
    assert g.source_size == (512, 300) and g.tensor_size == (192, 192)
    # 300 * 192 / 512 = 112.5 rows of content: resize rounds to whole pixels, warp keeps 112.5.
    content_h = 112 if sampler == "resize" else 112.5
    assert g.scale[1] * 300 == pytest.approx(content_h)
    assert g.pad == (0.0, 40.0 if sampler == "resize" else 39.75)
    assert g.content_box == (0, 40, 192, 152)
    assert np.abs(g.to_source(content_corners(g)) - source_corners(512, 300)).max() < 0.5
    assert np.allclose(g.to_source(np.array([0.5, 0.5]), normalized=True), [256, 150], atol=0.5)
    # The pixels agree with the geometry: black borders above and below, the image between.
    column = out[:, 96, 0]
    assert not column[:39].any() and not column[153:].any()
    assert (column[41:151] == 255).all()


def test_letterbox_resize_content_box_is_exactly_the_content() -> None:
    out, g = preprocessor({"mode": "letterbox", "size": [192, 192]}).resize_image(image(300, 512))
    x0, y0, x1, y1 = g.content_box
    assert (x0, y0, x1, y1) == (40, 0, 152, 192)
    assert (out[y0:y1, x0:x1] == 255).all()
    assert not out[:, :x0].any() and not out[:, x1:].any()


@pytest.mark.parametrize("sampler", ["resize", "warp"])
def test_pad_keeps_the_content_top_left(sampler: str) -> None:
    pre = preprocessor({"mode": "pad", "size": [128, 128], "sampler": sampler})
    out, g = pre.resize_image(image(256, 128))
    assert out.shape == (128, 128, 3)
    assert g == Geometry((256, 128), (128, 128), (0.5, 0.5), (0.0, 0.0))
    assert (out[:63] == 255).all() and not out[65:].any()
    assert np.abs(g.to_source(content_corners(g)) - source_corners(256, 128)).max() < 0.5


def test_pad_value_fills_the_border() -> None:
    pre = preprocessor({"mode": "pad", "size": [64, 64], "pad_value": 114})
    out, _ = pre.resize_image(image(64, 32, value=0))
    assert (out[32:] == 114).all() and not out[:32].any()


def test_face_models_letterbox_like_mediapipe(zoo_repository: Path) -> None:
    """The zoo's face specs give MediaPipe's ImageToTensorCalculator tensor (warp sampler)."""
    astronaut = skimage.data.astronaut()
    for name, size in (("faces", 192), ("faces-near", 128)):
        spec = load_model_config(zoo_repository / name / "model.yaml").preprocess
        assert spec is not None
        for im in (astronaut, astronaut[:300], astronaut[:, :300]):
            tensor, _ = Preprocessor(spec)([im])
            np.testing.assert_allclose(tensor, reference_face_input(im, size, "warp"), atol=1e-6)


# (height, width) of sources: landscape, portrait, small, large, odd sizes.
SOURCES = [(300, 512), (512, 300), (100, 100), (1000, 1500), (33, 47), (700, 90)]


@pytest.mark.parametrize(("limit_type", "limit"), [("min", 736), ("min", 64), ("max", 960)])
@pytest.mark.parametrize(("height", "width"), SOURCES)
def test_limit_side_matches_rapidocr(limit_type: str, limit: int, height: int, width: int) -> None:
    pre = preprocessor(
        {"mode": "limit_side", "limit": limit, "limit_type": limit_type, "multiple": 32}
    )
    src = np.zeros((height, width, 3), dtype=np.uint8)
    out, g = pre.resize_image(src)
    expected = DetPreProcess(limit, limit_type).resize(src)
    assert expected is not None
    assert out.shape == expected.shape
    assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0
    assert g.tensor_size == (out.shape[1], out.shape[0]) and g.pad == (0.0, 0.0)
    assert np.allclose(g.to_source(content_corners(g)), source_corners(width, height))


def test_limit_side_min_only_enlarges_and_max_only_shrinks() -> None:
    def size(limit_type: str, width: int, height: int) -> tuple[int, int]:
        pre = preprocessor(
            {"mode": "limit_side", "limit": 640, "limit_type": limit_type, "multiple": 32}
        )
        return pre.resize_image(image(width, height))[1].tensor_size

    assert size("min", 320, 200) == (1024, 640)  # short side 200 grows to 640
    assert size("min", 1280, 960) == (1280, 960)  # already above: only rounded
    assert size("max", 1280, 960) == (640, 480)  # long side 1280 shrinks to 640
    assert size("max", 300, 200) == (288, 192)  # already below: only rounded (300 -> 288)


def test_fixed_height_keeps_the_ratio_and_pads_right() -> None:
    pre = preprocessor({"mode": "fixed_height", "height": 48, "width": 192})
    out, g = pre.resize_image(image(100, 40))
    assert out.shape == (48, 192, 3)
    assert g.scale == (120 / 100, 48 / 40) and g.pad == (0.0, 0.0)
    assert (out[:, :120] == 255).all() and not out[:, 120:].any()
    # A crop wider than the target is squeezed to the target width.
    _, g = pre.resize_image(image(1000, 40))
    assert g.scale[0] * 1000 == 192 and g.tensor_size == (192, 48)


def test_fixed_height_variable_width_uses_the_widest_ratio_of_the_batch() -> None:
    pre = preprocessor({"mode": "fixed_height", "height": 48, "width": 320, "variable_width": True})
    crops = [image(100, 48), image(300, 30), image(50, 50)]
    tensor, geometries = pre(crops)
    assert tensor.shape == (3, 48, 480, 3)  # 300 / 30 = 10 -> 48 * 10 wide, rapidocr's rule
    assert {g.tensor_size for g in geometries} == {(480, 48)}
    assert [round(g.scale[0] * g.source_size[0]) for g in geometries] == [100, 480, 48]
    # No crop wider than the target's own ratio: the target width (320) stays.
    assert pre([image(60, 48)])[0].shape == (1, 48, 320, 3)


# --------------------------------------------------------------------------- normalisation


def test_pad_in_tensor_pads_after_normalisation() -> None:
    resize = {"mode": "fixed_height", "height": 48, "width": 192}
    crop = image(96, 48, value=255)
    in_tensor, _ = preprocessor({**resize, "pad_in": "tensor"}, **MINUS_ONE_TO_ONE)([crop])
    in_image, _ = preprocessor(resize, **MINUS_ONE_TO_ONE)([crop])
    assert in_tensor.dtype == np.float32 and in_tensor.shape == (1, 48, 192, 3)
    np.testing.assert_allclose(in_tensor[0, :, :96], 1.0, atol=1e-6)
    np.testing.assert_allclose(in_image[0, :, :96], 1.0, atol=1e-6)
    assert (in_tensor[0, :, 150] == 0.0).all()  # pad_value itself
    np.testing.assert_allclose(in_image[0, :, 150], (0 / 255 - 0.5) / 0.5)  # a black pixel


def test_pad_in_tensor_pads_with_pad_value_in_nchw() -> None:
    pre = preprocessor(
        {"mode": "fixed_height", "height": 8, "width": 16, "pad_in": "tensor", "pad_value": 7.5},
        layout="NCHW",
    )
    tensor, _ = pre([image(4, 8, value=2)])
    assert tensor.shape == (1, 3, 8, 16)
    assert (tensor[..., :4] == 2.0).all() and (tensor[..., 4:] == 7.5).all()


def test_scale_mean_std_per_channel() -> None:
    src = np.empty((4, 4, 3), dtype=np.uint8)
    src[...] = (10, 100, 200)
    pre = preprocessor(
        {"mode": "stretch", "size": [4, 4]},
        scale=0.5,
        mean=[1.0, 2.0, 3.0],
        std=[1.0, 2.0, 4.0],
    )
    tensor, _ = pre([src])
    np.testing.assert_allclose(tensor[0, 0, 0], [(5 - 1) / 1, (50 - 2) / 2, (100 - 3) / 4])


def test_bgr_flips_the_channels() -> None:
    src = np.empty((4, 4, 3), dtype=np.uint8)
    src[...] = (10, 20, 30)
    rgb, _ = preprocessor({"mode": "stretch", "size": [4, 4]})([src])
    bgr, _ = preprocessor({"mode": "stretch", "size": [4, 4]}, color="bgr")([src])
    assert rgb[0, 0, 0].tolist() == [10, 20, 30]
    assert bgr[0, 0, 0].tolist() == [30, 20, 10]


def test_bgr_applies_mean_in_the_model_channel_order() -> None:
    src = np.empty((2, 2, 3), dtype=np.uint8)
    src[...] = (10, 20, 30)
    pre = preprocessor({"mode": "stretch", "size": [2, 2]}, color="bgr", mean=[1.0, 2.0, 3.0])
    assert pre([src])[0][0, 0, 0].tolist() == [29, 18, 7]


def test_nchw_layout() -> None:
    src = skimage.data.astronaut()[:64, :80]
    nhwc, _ = preprocessor({"mode": "stretch", "size": [80, 64]})([src])
    nchw, _ = preprocessor({"mode": "stretch", "size": [80, 64]}, layout="NCHW")([src])
    assert nhwc.shape == (1, 64, 80, 3) and nchw.shape == (1, 3, 64, 80)
    assert nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(nchw[0, 1], src[..., 1])


@pytest.mark.parametrize(("dtype", "numpy_dtype"), [("FP16", np.float16), ("UINT8", np.uint8)])
def test_dtypes(dtype: str, numpy_dtype: type) -> None:
    src = skimage.data.astronaut()[:32, :32]
    tensor, _ = preprocessor({"mode": "stretch", "size": [32, 32]}, dtype=dtype)([src])
    assert tensor.dtype == numpy_dtype
    np.testing.assert_array_equal(tensor[0].astype(np.float32), src.astype(np.float32))


def test_fp16_normalised() -> None:
    src = skimage.data.astronaut()[:32, :32]
    pre = preprocessor({"mode": "stretch", "size": [32, 32]}, dtype="FP16", **MINUS_ONE_TO_ONE)
    tensor, _ = pre([src])
    assert tensor.dtype == np.float16
    np.testing.assert_allclose(tensor[0], src / 127.5 - 1.0, atol=1e-3)


def test_fused_returns_the_resized_uint8_image_unchanged() -> None:
    src = skimage.data.astronaut()
    resize = {"mode": "letterbox", "size": [192, 192]}
    options: dict[str, Any] = {"color": "bgr", "layout": "NCHW", **MINUS_ONE_TO_ONE}
    pre = preprocessor(resize, fused=True, **options)
    tensor, geometries = pre([src, src[:300]])
    assert tensor.dtype == np.uint8 and tensor.shape == (2, 192, 192, 3)
    for i, im in enumerate((src, src[:300])):
        resized, g = pre.resize_image(im)
        np.testing.assert_array_equal(tensor[i], resized)
        assert geometries[i] == g


# --------------------------------------------------------------------------- refusals


def test_images_resizing_to_different_sizes_are_refused() -> None:
    pre = preprocessor({"mode": "limit_side", "limit": 64, "limit_type": "max", "multiple": 32})
    with pytest.raises(InvalidInput, match=r"different tensor sizes \[\(32, 64\), \(64, 32\)\]"):
        pre([image(100, 200), image(200, 100)])
    assert pre([image(100, 200), image(50, 100)])[0].shape == (2, 64, 32, 3)


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), "float32 [8, 8, 3]"),
        (np.zeros((8, 8), dtype=np.uint8), "uint8 [8, 8]"),
        (np.zeros((8, 8, 4), dtype=np.uint8), "uint8 [8, 8, 4]"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "non-empty image, got [0, 8, 3]"),
        (np.zeros((8, 0, 3), dtype=np.uint8), "non-empty image, got [8, 0, 3]"),
    ],
)
def test_check_image_refuses(bad: np.ndarray, shown: str) -> None:
    with pytest.raises(InvalidInput, match=r"^frame 3: expected .*" + shown.replace("[", r"\[")):
        check_image(bad, "frame 3")
    with pytest.raises(InvalidInput, match="expected"):
        preprocessor({"mode": "stretch", "size": [4, 4]})([bad])


def test_check_image_accepts_rgb_uint8() -> None:
    check_image(skimage.data.astronaut())


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize(
    ("resize", "images", "layout"),
    [
        ({"mode": "limit_side", "limit": 64, "limit_type": "min", "multiple": 32}, [(90, 20)],
         "NCHW"),
        ({"mode": "letterbox", "size": [40, 30]}, [(90, 20), (10, 10)], "NHWC"),
        ({"mode": "fixed_height", "height": 16, "width": 32, "variable_width": True},
         [(90, 20), (10, 10)], "NCHW"),
        ({"mode": "stretch", "size": [24, 24], "sampler": "warp"}, [(5, 7)], "NHWC"),
    ],
)  # fmt: skip
def test_planned_shape_is_the_shape_made(
    resize: dict[str, Any], images: list[tuple[int, int]], layout: str
) -> None:
    pre = preprocessor(resize, layout=layout)
    batch = [image(w, h) for w, h in images]
    assert pre.planned_shape(batch) == pre(batch)[0].shape


def test_a_thin_image_is_refused_before_its_tensor_is_made() -> None:
    # PP-OCR detection: a 2000x1 image with its short side grown to 736 would be a
    # [1, 3, 736, 1472000] float32 tensor (13 GB); the limit stops it from the planned shape.
    pre = preprocessor(
        {"mode": "limit_side", "limit": 736, "limit_type": "min", "multiple": 32}, layout="NCHW"
    )
    with pytest.raises(
        PayloadTooLarge,
        match=r"image\(s\) 2000x1 would become shape \[1, 3, 736, 1472000\] \(3250176000 "
        r"elements\), over the limit of 1000000 elements \(max_elements, --max-elements\)",
    ):
        pre([image(2000, 1)], max_elements=1_000_000)
    assert pre([image(20, 10)], max_elements=4_000_000)[0].shape == (1, 3, 736, 1472)
