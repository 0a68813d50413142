"""``YuvResizer`` against ``Preprocessor.resize_image`` on the same picture in RGB.

The pictures are real photographs (scikit-image) turned into 4:2:0 planes here, written from
the BT.601 / BT.709 definitions (not from ``processing.yuv``). The reference RGB is what FFmpeg's
rgb24 conversion computes from those planes (chroma replicated 2x2), but in exact arithmetic,
so these tests see only this module's own error: uint8 rounding of the sampled planes, and
clipping, which a saturated colour meets after sampling here but before it on the RGB path
(the pictures are kept inside the RGB gamut where the comparison is tight). FFmpeg itself,
and the zoo models, are compared in ``tests/video/test_yuv.py``.
"""

from __future__ import annotations

from typing import Any, get_args

import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.errors import InvalidInput
from frameserve.processing.spec import PreprocessSpec, ResizeSpec
from frameserve.processing.transform import Preprocessor
from frameserve.processing.yuv import (
    ColorRange,
    Matrix,
    RowsShape,
    YuvPlanes,
    YuvResizer,
    _row_maps,
    difference,
    yuv_to_rgb_matrix,
)

KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}
MAX_ROUNDING = 3  # grey levels: sampled Y, U, V are rounded to uint8 before conversion
MAX_MEAN_ROUNDING = 0.5


def planes_from_rgb(
    rgb: np.ndarray, matrix: Matrix = "bt709", color_range: ColorRange = "limited"
) -> YuvPlanes:
    """8-bit 4:2:0 planes of ``rgb``: Y'CbCr from the standard, chroma averaged over 2x2."""
    kr, kb = KR_KB[matrix]
    x = rgb.astype(np.float64) / 255
    y = kr * x[..., 0] + (1 - kr - kb) * x[..., 1] + kb * x[..., 2]
    pb, pr = (x[..., 2] - y) / (2 - 2 * kb), (x[..., 0] - y) / (2 - 2 * kr)
    if color_range == "limited":
        planes = (16 + 219 * y, 128 + 224 * pb, 128 + 224 * pr)
    else:
        planes = (255 * y, 128 + 255 * pb, 128 + 255 * pr)
    h, w = y.shape

    def half(c: np.ndarray) -> np.ndarray:
        c = np.pad(c, ((0, h % 2), (0, w % 2)), mode="edge")
        return c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2).mean(axis=(1, 3))

    def u8(c: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(c), 0, 255).astype(np.uint8)

    chroma = (u8(half(planes[1])), u8(half(planes[2])))
    return YuvPlanes(u8(planes[0]), chroma, matrix, color_range)


def replicated_rgb(planes: YuvPlanes) -> np.ndarray:
    """Full-size RGB as FFmpeg's rgb24 conversion computes it (chroma replicated), exactly."""
    kr, kb = KR_KB[planes.matrix]
    h, w = planes.y.shape
    u, v = (np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w].astype(np.float64) for c in planes.chroma)
    if planes.range == "limited":
        y, pb, pr = (planes.y - 16.0) / 219, (u - 128) / 224, (v - 128) / 224
    else:
        y, pb, pr = planes.y / 255.0, (u - 128) / 255, (v - 128) / 255
    r, b = y + (2 - 2 * kr) * pr, y + (2 - 2 * kb) * pb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255), 0, 255).astype(np.uint8)


def preprocessor(**resize: Any) -> Preprocessor:
    return Preprocessor(PreprocessSpec(resize=ResizeSpec(**resize)))


def picture(width: int, height: int, in_gamut: bool = True) -> np.ndarray:
    rgb = cv2.resize(skimage.data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    if in_gamut:  # away from black, white and full saturation: no clipping anywhere
        rgb = (rgb * 0.6 + 50).astype(np.uint8)
    return rgb


SOURCES = [(1280, 720), (641, 359), (100, 300), (33, 47)]  # odd sizes: chroma rounds up
RESIZES: dict[str, dict[str, Any]] = {
    "letterbox warp": dict(mode="letterbox", size=(192, 192), sampler="warp"),
    "stretch warp": dict(mode="stretch", size=(256, 256), sampler="warp"),
    "pad warp": dict(mode="pad", size=(200, 120), sampler="warp", pad_value=114),
    "letterbox warp, grey pad": dict(
        mode="letterbox", size=(96, 160), sampler="warp", pad_value=114
    ),
    "stretch resize": dict(mode="stretch", size=(256, 256)),
    "letterbox resize": dict(mode="letterbox", size=(192, 192), pad_value=114),
    "pad resize": dict(mode="pad", size=(200, 120)),
    "letterbox area": dict(mode="letterbox", size=(192, 192), interpolation="area"),
    "limit side": dict(mode="limit_side", limit=96, multiple=32),
}


def both_paths(pre: Preprocessor, planes: YuvPlanes) -> tuple[np.ndarray, np.ndarray, Any]:
    result = YuvResizer(pre).resize_image(planes)
    assert result is not None
    ours, geometry = result
    reference, reference_geometry = pre.resize_image(replicated_rgb(planes))
    assert geometry == reference_geometry
    assert ours.shape == reference.shape and ours.dtype == np.uint8
    return ours, reference, geometry


@pytest.mark.parametrize("resize", list(RESIZES))
@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_matches_resize_image(source: tuple[int, int], resize: str) -> None:
    pre = preprocessor(**RESIZES[resize])
    planes = planes_from_rgb(picture(*source))
    w, h = source
    cw, ch = pre.content_size(source)
    if resize == "letterbox area" and (w % 2 or h % 2 or 2 * cw > w or 2 * ch > h):
        assert YuvResizer(pre).resize_image(planes) is None  # chroma would not shrink alike
        return
    ours, reference, _ = both_paths(pre, planes)
    d = np.abs(ours.astype(np.int16) - reference)
    assert d.max() <= MAX_ROUNDING and d.mean() <= MAX_MEAN_ROUNDING, (d.max(), d.mean())


@pytest.mark.parametrize("resize", list(RESIZES))
@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_grey_pictures_come_out_exact(source: tuple[int, int], resize: str) -> None:
    """Without chroma, full range, the conversion is the identity: the planes' sampling and
    padding are the RGB path's own, up to one level where a sample is blended with padding
    (rounded once there, twice here)."""
    w, h = source
    grey = cv2.cvtColor(picture(w, h, in_gamut=False), cv2.COLOR_RGB2GRAY)
    neutral = np.full(((h + 1) // 2, (w + 1) // 2), 128, dtype=np.uint8)
    planes = YuvPlanes(grey, (neutral, neutral), "bt601", "full")
    pre = preprocessor(**RESIZES[resize])
    result = YuvResizer(pre).resize_image(planes)
    if result is None:
        return  # area on odd or small sizes, above
    reference, _ = pre.resize_image(np.repeat(grey[..., None], 3, axis=-1))
    assert np.abs(result[0].astype(np.int16) - reference).max() <= 1


@pytest.mark.parametrize("color_range", ["limited", "full"])
def test_padding_is_the_declared_value(color_range: ColorRange) -> None:
    """114 has no exact limited-range Y (16 + 114 * 219 / 255 = 113.9): it is set in RGB."""
    pre = preprocessor(mode="letterbox", size=(192, 192), sampler="warp", pad_value=114)
    planes = planes_from_rgb(picture(1280, 720, in_gamut=False), "bt709", color_range)
    result = YuvResizer(pre).resize_image(planes)
    assert result is not None
    image, geometry = result
    _, y0, _, y1 = geometry.content_box
    assert (y0, y1) == (42, 150)
    assert (image[: y0 - 1] == 114).all() and (image[y1 + 1 :] == 114).all()


def test_plane_views_with_padded_rows() -> None:
    """Decoders pad rows (``line_size`` > width): strided views give the same image."""
    planes = planes_from_rgb(picture(641, 359))

    def padded(plane: np.ndarray) -> np.ndarray:
        wide = np.zeros((plane.shape[0], plane.shape[1] + 61), dtype=np.uint8)
        wide[:, : plane.shape[1]] = plane
        return wide[:, : plane.shape[1]]

    views = YuvPlanes(padded(planes.y), tuple(padded(c) for c in planes.chroma), "bt709")
    assert not views.y.flags.c_contiguous
    for resize in ("letterbox warp", "stretch resize"):
        pre = preprocessor(**RESIZES[resize])
        a, b = YuvResizer(pre).resize_image(planes), YuvResizer(pre).resize_image(views)
        assert a is not None and b is not None and np.array_equal(a[0], b[0])


def test_interleaved_chroma() -> None:
    """nv12 carries U and V in one plane; OpenCV's two-channel remap rounds a few apart."""
    planes = planes_from_rgb(picture(1280, 720))
    nv12 = YuvPlanes(planes.y, (np.stack(planes.chroma, axis=-1),), "bt709")
    for resize in ("letterbox warp", "stretch warp", "stretch resize"):
        pre = preprocessor(**RESIZES[resize])
        a, b = YuvResizer(pre).resize_image(planes), YuvResizer(pre).resize_image(nv12)
        assert a is not None and b is not None
        assert np.abs(a[0].astype(np.int16) - b[0]).max() <= MAX_ROUNDING


def test_a_resizer_serves_inputs_of_several_sizes() -> None:
    pre = preprocessor(**RESIZES["letterbox warp"])
    resizer = YuvResizer(pre)
    sizes = [(1280, 720), (100, 300)] + [(64 + 2 * i, 48) for i in range(resizer.PLANS_KEPT)]
    for source in sizes + sizes[:2]:
        planes = planes_from_rgb(picture(*source))
        result = resizer.resize_image(planes)
        assert result is not None
        assert result[1] == pre.resize_image(replicated_rgb(planes))[1]


def test_conversion_matrix_inverts_the_standard() -> None:
    """Without subsampling, planes -> RGB returns the picture (within 8-bit rounding)."""
    rgb = picture(64, 48, in_gamut=False)
    for matrix in get_args(Matrix):
        for color_range in get_args(ColorRange):
            planes = planes_from_rgb(np.repeat(np.repeat(rgb, 2, 0), 2, 1), matrix, color_range)
            yuv = np.stack([planes.y[::2, ::2], *planes.chroma], axis=-1).astype(np.float64)
            m = yuv_to_rgb_matrix(matrix, color_range)
            back = np.clip(yuv @ m[:, :3].T + m[:, 3], 0, 255)
            assert np.abs(back - rgb).max() <= 2, (matrix, color_range)
    black_white = np.array([[16, 128, 128, 1], [235, 128, 128, 1]], dtype=np.float64)
    assert np.allclose(black_white @ yuv_to_rgb_matrix("bt709", "limited").T, [[0] * 3, [255] * 3])


@pytest.mark.parametrize(
    "resize, reason",
    [
        (dict(mode="fixed_height", height=48, width=192), "resize mode fixed_height"),
        (dict(mode="letterbox", size=(64, 64), pad_in="tensor"), "padding in the tensor"),
        (dict(mode="stretch", size=(64, 64), interpolation="cubic"), "cubic interpolation"),
        (dict(mode="stretch", size=(64, 64), sampler="warp", interpolation="area"), "area"),
    ],
)
def test_other_resizes_stay_on_the_rgb_path(resize: dict[str, Any], reason: str) -> None:
    resizer = YuvResizer(preprocessor(**resize))
    assert resizer.reason is not None and reason in resizer.reason
    assert resizer.resize_image(planes_from_rgb(picture(64, 48))) is None


@pytest.mark.parametrize(
    "y, chroma, field",
    [
        (np.zeros((4, 6), np.uint8), (np.zeros((2, 3), np.uint8),) * 2, None),
        (np.zeros((4, 6), np.float32), (np.zeros((2, 3), np.uint8),) * 2, "YuvPlanes.y"),
        (np.zeros((4, 6), np.uint8), (np.zeros((4, 6), np.uint8),) * 2, "YuvPlanes.chroma"),
        (np.zeros((5, 7), np.uint8), (np.zeros((2, 3), np.uint8),) * 2, "YuvPlanes.chroma"),
        (np.zeros((4, 6), np.uint8), (np.zeros((2, 3, 2), np.uint8),), None),
        (np.zeros((4, 6), np.uint8), (np.zeros((2, 3), np.int16),) * 2, "YuvPlanes.chroma"),
    ],
)
def test_planes_are_checked(y: np.ndarray, chroma: tuple[np.ndarray, ...], field: str) -> None:
    if field is None:
        assert YuvPlanes(y, chroma).size == (6, 4)
        return
    with pytest.raises(InvalidInput, match=field):
        YuvPlanes(y, chroma)


# --- rows copied where decoded, sampled elsewhere ------------------------------------------
WARPS = [name for name, resize in RESIZES.items() if resize.get("sampler") == "warp"]


def padded_views(planes: YuvPlanes) -> YuvPlanes:
    """The planes as a decoder leaves them: rows padded past the width."""

    def padded(plane: np.ndarray) -> np.ndarray:
        wide = np.zeros((plane.shape[0], plane.shape[1] + 37, *plane.shape[2:]), np.uint8)
        wide[:, : plane.shape[1]] = plane
        return wide[:, : plane.shape[1]]

    return YuvPlanes(
        padded(planes.y), tuple(padded(c) for c in planes.chroma), planes.matrix, planes.range
    )


@pytest.mark.parametrize("layout", ["yuv420p", "nv12"])
@pytest.mark.parametrize("resize", WARPS)
@pytest.mark.parametrize("source", SOURCES + [(1280, 721), (720, 1280), (1920, 1080)], ids=str)
def test_rows_sample_to_the_same_pixels(source: tuple[int, int], resize: str, layout: str) -> None:
    """``from_rows(gather(planes))`` is ``resize_image(planes)`` to the bit, wherever the warp
    reads: inside, past the edges (zero luma rows, replicated chroma), with padded rows."""
    planes = planes_from_rgb(picture(*source, in_gamut=False))
    if layout == "nv12":
        planes = YuvPlanes(planes.y, (np.stack(planes.chroma, axis=-1),), "bt709")
    resizer = YuvResizer(preprocessor(**RESIZES[resize]))
    plan = resizer.row_plan(source)
    sampled_rows = resizer._plan(source).size[1]  # type: ignore[union-attr]
    assert (plan is None) == (4 * sampled_rows > source[1])  # two rows read per sampled row
    if plan is None:  # over half the picture's rows: sampled where decoded
        with pytest.raises(InvalidInput, match="no row plan"):
            resizer.gather(planes, np.empty(1, np.uint8))
        return
    rows = np.full(plan.nbytes(source[0]), 7, dtype=np.uint8)  # stale bytes are overwritten
    resizer.gather(padded_views(planes), rows)
    expected = resizer.resize_image(planes)
    assert expected is not None
    # a second resizer (the server's) samples them
    image, geometry = YuvResizer(preprocessor(**RESIZES[resize])).from_rows(
        rows, RowsShape.of(planes)
    )
    assert geometry == expected[1]
    assert np.array_equal(image, expected[0])


def test_rows_past_the_picture_are_zero() -> None:
    """A letterbox's first and last sampled rows read past the picture's edge: those rows
    are zeros, as the warp reads there; the rest are the picture's own."""
    resizer = YuvResizer(preprocessor(**RESIZES["letterbox warp, grey pad"]))
    planes = planes_from_rgb(picture(1280, 720, in_gamut=False))
    plan = resizer.row_plan(planes.size)
    assert plan is not None and len(plan.outside) > 0
    rows = np.full(plan.nbytes(1280), 255, dtype=np.uint8)
    resizer.gather(planes, rows)
    luma = rows[: len(plan.luma) * 1280].reshape(len(plan.luma), 1280)
    assert (luma[plan.outside] == 0).all()
    inside = np.setdiff1d(np.arange(len(plan.luma)), plan.outside)
    assert np.array_equal(luma[inside], planes.y[plan.luma[inside]])


@pytest.mark.parametrize("border", [cv2.BORDER_CONSTANT, cv2.BORDER_REPLICATE])
def test_copied_rows_sample_alike_at_the_edges_of_remaps_rounding(border: int) -> None:
    """Fractions at 1/32-of-a-pixel rounding ties (k/32 + 1/64, and a float32 step either
    side), just under a whole pixel, at 0; rows below 0 and past the last row: the copied
    rows and their maps give what the whole plane gives. Where a row's fraction would lose
    bits on the copy (y far below 2i), ``_row_maps`` declines."""
    rng = np.random.default_rng(7)
    plane = rng.integers(0, 256, (120, 50), dtype=np.uint8)
    ties = [(k + 0.5) / 32 + d for k in range(0, 32, 3) for d in (-2e-6, 0.0, 2e-6)]
    fractions = [0.0, 0.3, 1 / 64, 63 / 64, 0.999, 0.9999999, *ties]
    ys = [-0.99, -0.5] + [2.6 * i + f for i, f in enumerate(fractions, start=1)]
    ys += [118.5, 119.0, 119.4]  # past the last row (119)
    y = np.asarray(ys, dtype=np.float32)
    x = np.linspace(-0.7, 49.6, 33, dtype=np.float32)

    def maps(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(np.broadcast_to(x, (len(y), len(x)))), np.repeat(
            y[:, None], len(x), 1
        )

    far = np.asarray([0.5, 1.5, 2.5, 0.3], dtype=np.float32)  # 0.3's low bits lost at 6.3
    assert _row_maps(maps(far), plane.shape[0]) is None
    planned = _row_maps(maps(y), plane.shape[0])
    assert planned is not None
    rows, outside, compact_maps = planned
    assert len(outside) > 0
    copied = plane[rows]
    if border == cv2.BORDER_CONSTANT:
        copied[outside] = 0  # as ``gather`` copies luma
    whole = cv2.remap(plane, *maps(y), cv2.INTER_LINEAR, borderMode=border)
    there = cv2.remap(copied, *compact_maps, cv2.INTER_LINEAR, borderMode=border)
    if border == cv2.BORDER_REPLICATE:  # chroma's positions are clamped inside the picture
        inside = (y >= 0) & (y <= plane.shape[0] - 1)
        whole, there = whole[inside], there[inside]
    assert np.array_equal(whole, there)


def test_rows_of_the_wrong_size_are_refused() -> None:
    resizer = YuvResizer(preprocessor(**RESIZES["letterbox warp"]))
    planes = planes_from_rgb(picture(1280, 720))
    plan = resizer.row_plan(planes.size)
    assert plan is not None and plan.nbytes(1280) == 216 * (1280 + 640 + 640)
    with pytest.raises(InvalidInput, match=r"expected 552960 bytes .* got 552959"):
        resizer.from_rows(np.zeros(552959, np.uint8), RowsShape.of(planes))


# --- drift has teeth --------------------------------------------------------------------------


@pytest.mark.parametrize("drift", ["matrix", "range", "chroma column", "chroma row"])
@pytest.mark.parametrize("resize", ["letterbox warp", "stretch warp", "stretch resize"])
def test_a_drifted_conversion_fails(resize: str, drift: str) -> None:
    """The tolerance the video tier holds the YUV path to (``difference``) catches each."""
    pre = preprocessor(**RESIZES[resize])
    planes = planes_from_rgb(picture(1280, 720, in_gamut=False), "bt709")
    ours, reference, geometry = both_paths(pre, planes)
    assert difference(ours, reference, geometry).within
    if drift == "matrix":
        wrong = YuvPlanes(planes.y, planes.chroma, "bt601")
    elif drift == "range":
        wrong = YuvPlanes(planes.y, planes.chroma, "bt709", "full")
    else:
        axis = 1 if drift == "chroma column" else 0
        wrong = YuvPlanes(planes.y, tuple(np.roll(c, 1, axis) for c in planes.chroma), "bt709")
    result = YuvResizer(pre).resize_image(wrong)
    assert result is not None
    diff = difference(result[0], reference, geometry)
    assert not diff.within, diff.describe()
