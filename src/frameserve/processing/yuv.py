"""Declared pre-processing straight from a decoder's 8-bit 4:2:0 YUV planes.

A video frame arrives as Y, U and V planes. Converting all of a 1280x720 frame to RGB and then
shrinking it converts 14 to 45 times more pixels than a 256x256 or 192x192 model sees.
``YuvResizer`` samples the planes directly at tensor size with the declared ``warp`` or
``resize`` sampler, converts only those pixels to RGB and pads them as ``Preprocessor`` does:
the HxWx3 uint8 image and ``Geometry`` that ``Preprocessor.resize_image`` gives for the frame in
RGB, within ``MAX_MEAN_DIFF`` / ``MAX_P99_DIFF``. What it cannot reproduce it declines (None),
and the caller converts the frame to RGB as before.

It computes what the RGB path computes, in a different order: FFmpeg's rgb24 conversion
replicates each chroma sample over its 2x2 pixels and follows the frame's tags (BT.601, also
when untagged, or BT.709; limited "tv" or full "pc" range); the RGB path then samples that
frame. Here luma is sampled as the RGB path samples pixels, chroma where the same samples fall
on the replicated chroma, and only then converted: the same up to rounding and clipping.

The ``warp`` sampler can also run in two halves (``RowPlan``): ``gather`` copies the rows of the
planes that the warp reads, where the picture was decoded, and ``from_rows`` samples the copy
elsewhere, to the same pixels as ``resize_image``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from frameserve.errors import InvalidInput
from frameserve.processing.transform import INTERPOLATION, Geometry, Preprocessor

Matrix = Literal["bt601", "bt709"]
ColorRange = Literal["limited", "full"]
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # ITU-R BT.601 / BT.709 luma
# How close the result must stay to the RGB path's (``difference``), in grey levels over the
# picture. FFmpeg's rgb24 conversion rounds about one level dark (here R, G, B -1.0, -1.4, -1.0
# in limited range, -0.4, -1.0, -0.4 in full range); this path rounds exactly, so the means
# differ by about that much (0.7 to 1.1 on the zoo's inputs, p99 2 to 3). The wrong matrix,
# range, or chroma one sample off gives a mean of 1.5 to 8.5 and a p99 of 11 to 22.
MAX_MEAN_DIFF = 1.5
MAX_P99_DIFF = 4.0
# Single pixels differ more where a saturated colour meets dark or bright: the RGB path clips
# each pixel before sampling, this path clips after (up to 14 on the zoo's inputs). Not part of
# ``within``; tests bound the float tensor with it.
MAX_ABS_DIFF = 16.0
_WARP_INTERPOLATIONS = ("linear",)  # whose border weights ``_coverage`` reproduces
_RESIZE_INTERPOLATIONS = ("linear", "area")


def yuv_to_rgb_matrix(matrix: Matrix, color_range: ColorRange) -> np.ndarray:
    """The 3x4 affine map [Y, U, V, 1] -> [R, G, B] (0..255) of 8-bit YCbCr."""
    kr, kb = _KR_KB[matrix]
    kg = 1.0 - kr - kb
    y_gain, c_gain, black = (255 / 219, 255 / 224, 16.0) if color_range == "limited" else (1, 1, 0)
    rv = 2 * (1 - kr) * c_gain
    bu = 2 * (1 - kb) * c_gain
    gu, gv = -bu * kb / kg, -rv * kr / kg
    m = np.array([[y_gain, 0.0, rv], [y_gain, gu, gv], [y_gain, bu, 0.0]], dtype=np.float64)
    offset = -(m @ np.array([black, 128.0, 128.0]))
    return np.concatenate([m, offset[:, None]], axis=1)


@dataclass(frozen=True, slots=True)
class YuvPlanes:
    """One decoded 8-bit 4:2:0 picture as the decoder left it (views, rows may be padded).

    ``chroma`` is (U, V), each ``ceil(H/2) x ceil(W/2)`` (yuv420p), or one interleaved UV plane
    ``ceil(H/2) x ceil(W/2) x 2`` (nv12).
    """

    y: np.ndarray
    chroma: tuple[np.ndarray, ...]
    matrix: Matrix = "bt601"
    range: ColorRange = "limited"

    def __post_init__(self) -> None:
        y = self.y
        if y.dtype != np.uint8 or y.ndim != 2 or not y.size:
            raise InvalidInput(
                f"YuvPlanes.y: expected a non-empty HxW uint8 plane, got {y.dtype} {list(y.shape)}"
            )
        h, w = y.shape
        half = ((h + 1) // 2, (w + 1) // 2)
        chroma = self.chroma
        # a tuple compare per plane: decode workers build one of these per frame
        if len(chroma) == 1:
            fits = chroma[0].shape == (*half, 2) and chroma[0].dtype == np.uint8
        else:
            fits = len(chroma) == 2 and chroma[0].shape == chroma[1].shape == half
            fits = fits and chroma[0].dtype == chroma[1].dtype == np.uint8
        if not fits:
            expected = [[*half, 2]] if len(chroma) == 1 else [list(half), list(half)]
            got = [list(c.shape) for c in chroma]
            raise InvalidInput(
                f"YuvPlanes.chroma: expected uint8 planes of shapes {expected} for a {w}x{h} "
                f"picture, got {got} {[str(c.dtype) for c in self.chroma]}"
            )
        if self.matrix not in _KR_KB or self.range not in ("limited", "full"):
            raise InvalidInput(
                f"YuvPlanes: expected matrix in {sorted(_KR_KB)} and range limited/full, "
                f"got {self.matrix!r}, {self.range!r}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the picture."""
        return self.y.shape[1], self.y.shape[0]


@dataclass(frozen=True, slots=True)
class RowsShape:
    """What ``YuvResizer.from_rows`` needs to know of the picture whose rows it samples."""

    size: tuple[int, int]  # (width, height) of the picture
    planes: int  # chroma planes: 2 (yuv420p) or 1 (nv12, U and V interleaved)
    matrix: Matrix
    range: ColorRange

    @classmethod
    def of(cls, planes: YuvPlanes) -> RowsShape:
        return cls(planes.size, len(planes.chroma), planes.matrix, planes.range)


@dataclass(frozen=True, slots=True)
class Difference:
    """How far an image is from a reference, in grey levels over the picture's part."""

    mean: float  # of |difference|
    p99: float
    max: float
    bias: tuple[float, float, float]  # signed mean per channel (image - reference)

    @property
    def within(self) -> bool:
        """Within ``MAX_MEAN_DIFF`` and ``MAX_P99_DIFF``."""
        return self.mean <= MAX_MEAN_DIFF and self.p99 <= MAX_P99_DIFF

    def describe(self) -> str:
        bias = ", ".join(f"{b:+.2f}" for b in self.bias)
        return (
            f"mean {self.mean:.2f} (at most {MAX_MEAN_DIFF}), p99 {self.p99:.1f} (at most "
            f"{MAX_P99_DIFF}), max {self.max:.0f} grey levels; mean R, G, B bias {bias}"
        )


def difference(image: np.ndarray, reference: np.ndarray, geometry: Geometry) -> Difference:
    """Compare two tensor-size uint8 images where the picture lies (``content_box``)."""
    x0, y0, x1, y1 = geometry.content_box
    d = image[y0:y1, x0:x1].astype(np.float32) - reference[y0:y1, x0:x1]
    a = np.abs(d)
    b0, b1, b2 = (float(v) for v in d.reshape(-1, 3).mean(axis=0))
    return Difference(float(a.mean()), float(np.percentile(a, 99)), float(a.max()), (b0, b1, b2))


def unsupported(preprocessor: Preprocessor) -> str | None:
    """Why ``YuvResizer`` cannot run this pre-processing (None: it can)."""
    r = preprocessor.spec.resize
    modes = ("stretch", "letterbox", "pad") + (() if r.sampler == "warp" else ("limit_side",))
    if r.mode not in modes:
        return f"resize mode {r.mode} with sampler {r.sampler}"
    if r.pad_in != "image":
        return "padding in the tensor"
    allowed = _WARP_INTERPOLATIONS if r.sampler == "warp" else _RESIZE_INTERPOLATIONS
    if r.interpolation not in allowed:
        return f"{r.interpolation} interpolation with sampler {r.sampler}"
    return None


def _coverage(position: np.ndarray, n: int) -> np.ndarray:
    """Weight a bilinear sample at ``position`` puts on pixels 0..n-1 (the rest: the border)."""
    left = np.floor(position)
    frac = position - left
    return (1 - frac) * ((left >= 0) & (left <= n - 1)) + frac * ((left >= -1) & (left <= n - 2))


def _chroma_position(position: np.ndarray, n: int) -> np.ndarray:
    """The chroma-plane position that a bilinear sample at luma ``position`` reads when chroma
    is replicated 2x first (FFmpeg's rgb24 conversion does that): the two luma taps share one
    chroma sample unless the left tap is odd. Clamped: edge chroma is replicated outwards."""
    left = np.floor(position)
    c = np.floor(left / 2) + np.where(left % 2 == 1, position - left, 0.0)
    return np.clip(c, 0, n - 1)


def _chroma_map(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap's x and y maps (float32) of the chroma planes, from luma sample positions."""
    cx = _chroma_position(xs, (w + 1) // 2).astype(np.float32)
    cy = _chroma_position(ys, (h + 1) // 2).astype(np.float32)
    shape = (len(ys), len(xs))
    return np.ascontiguousarray(np.broadcast_to(cx, shape)), np.repeat(cy[:, None], len(xs), 1)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How pictures of one size are sampled; built once per input size."""

    source: tuple[int, int]
    size: tuple[int, int]  # (width, height) sampled: content (resize), tensor box (warp)
    chroma: tuple[np.ndarray, np.ndarray] | None  # remap maps; None: cv2.resize chroma
    warp: _WarpBox | None = None


@dataclass(frozen=True, slots=True)
class RowPlan:
    """The rows of a picture's planes that the warp reads, copied in the order it reads them
    (``gather``: two per sampled row, luma then each chroma plane), and the maps that sample
    those copies (``from_rows``): the same pixels as sampling the whole planes.

    Where a whole picture is 1.4 MB (720p) and the model sees 192x108 of it, the rows are 0.55
    MB and copying them costs a tenth of sampling them: a decode worker that is the run's
    bottleneck ships rows and the server samples (``video.balance``).
    """

    geometry: Geometry  # of the picture on the tensor, as ``resize_image`` gives it
    luma: np.ndarray  # row of Y for each copied row (clamped)
    outside: np.ndarray  # copied luma rows outside the picture: zeros, as the warp reads there
    chroma: np.ndarray  # row of each chroma plane for each copied row (clamped)
    luma_map: tuple[np.ndarray, np.ndarray]  # remap maps on the copied luma rows
    chroma_map: tuple[np.ndarray, np.ndarray]  # on the copied rows of each chroma plane

    def nbytes(self, width: int) -> int:
        """Bytes of the rows of a picture ``width`` pixels wide (yuv420p or nv12 alike)."""
        return len(self.luma) * (width + 2 * ((width + 1) // 2))


def _row_maps(
    maps: tuple[np.ndarray, np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]] | None:
    """Rows to copy from a plane of ``n`` rows for remap ``maps`` whose y depends on the row
    only, which of them lie outside, and the maps on the copies; None where they would not
    sample alike. Row i of the maps reads rows floor(y) and floor(y) + 1, copied to 2i and
    2i + 1; its y becomes 2i + frac(y). frac(y) is exact in float32; 2i + frac is too unless
    the fraction has more bits than a float32 near 2i keeps (a y much smaller than 2i, which
    a plan that reads at most half the rows does not make): checked. With the same fraction
    on the same rows, remap gives the same pixels, whether it weighs the positions as they are
    or rounds them to 1/32 of a pixel first (half to even: the same fraction plus an even
    number of 32nds rounds alike)."""
    mx, my = maps
    y = my[:, 0]
    top = np.floor(y)
    frac = (y - top).astype(np.float32)
    base = 2 * np.arange(len(y), dtype=np.float32)
    cy = base + frac
    if not np.array_equal(cy - base, frac):  # float32 arithmetic: bits of frac lost
        return None
    rows = np.repeat(top.astype(np.intp), 2)
    rows[1::2] += 1
    outside = np.flatnonzero((rows < 0) | (rows > n - 1))
    return np.clip(rows, 0, n - 1), outside, (mx, np.repeat(cy[:, None], mx.shape[1], 1))


@dataclass(frozen=True, slots=True)
class _WarpBox:
    """The tensor box a warped picture covers; outside it, only padding."""

    geometry: Geometry
    origin: tuple[int, int]  # (left, top) in the tensor
    luma: tuple[np.ndarray, np.ndarray]  # remap maps (float32) of the luma plane
    cover: tuple[np.ndarray, np.ndarray]  # weight on the picture along the box's x and y
    rows: RowPlan | None  # None: the rows would be more than half the picture


def _warp_plan(preprocessor: Preprocessor, w: int, h: int) -> _Plan:
    """Sample only the tensor box the picture covers; the rest is padding."""
    g = preprocessor.warp_geometry(w, h)
    (tw, th), (sx, sy), (px, py) = g.tensor_size, g.scale, g.pad
    xs, ys = (np.arange(tw) - px) / sx, (np.arange(th) - py) / sy  # tensor -> picture
    cover_x, cover_y = _coverage(xs, w), _coverage(ys, h)
    cols, rows = np.flatnonzero(cover_x > 0), np.flatnonzero(cover_y > 0)
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    bx, by = xs[x0:x1].astype(np.float32), ys[y0:y1].astype(np.float32)
    # remap, not warpAffine with the affine map: the same positions up to remap's rounding,
    # and maps that ``_row_maps`` can move onto copied rows without changing a pixel
    luma = (
        np.ascontiguousarray(np.broadcast_to(bx, (len(by), len(bx)))),
        np.repeat(by[:, None], len(bx), 1),
    )
    chroma = _chroma_map(xs[x0:x1], ys[y0:y1], w, h)
    row_plan = None
    if 4 * len(by) <= h:  # two rows read a sampled row: at most half the picture's rows
        luma_rows = _row_maps(luma, h)
        chroma_rows = _row_maps(chroma, (h + 1) // 2)
        if luma_rows is not None and chroma_rows is not None:
            (lr, outside, luma_map), (cr, _, chroma_map) = luma_rows, chroma_rows
            row_plan = RowPlan(g, lr, outside, cr, luma_map, chroma_map)
    return _Plan(
        source=(w, h),
        size=(x1 - x0, y1 - y0),
        chroma=chroma,
        warp=_WarpBox(g, (x0, y0), luma, (cover_x[x0:x1], cover_y[y0:y1]), row_plan),
    )


def _resize_plan(preprocessor: Preprocessor, w: int, h: int) -> _Plan | None:
    """cv2.resize of each plane to the content size; None where chroma would differ."""
    cw, ch = preprocessor.content_size((w, h))
    if preprocessor.interpolation == "area":
        # Area averaging of the chroma plane equals that of the chroma-replicated frame only
        # when every chroma sample covers 2x2 pixels and chroma shrinks too.
        if w % 2 or h % 2 or 2 * cw > w or 2 * ch > h:
            return None
        return _Plan((w, h), (cw, ch), None)
    # cv2.resize: half-pixel centres, positions clamped to the picture.
    xs = np.clip((np.arange(cw) + 0.5) * w / cw - 0.5, 0, w - 1)
    ys = np.clip((np.arange(ch) + 0.5) * h / ch - 0.5, 0, h - 1)
    return _Plan((w, h), (cw, ch), _chroma_map(xs, ys, w, h))


_CONVERSIONS = {
    (m, r): yuv_to_rgb_matrix(m, r) for m in ("bt601", "bt709") for r in ("limited", "full")
}


class YuvResizer:
    """``Preprocessor.resize_image`` for ``YuvPlanes``: one per preprocessor and input.

    Keeps the plans of the last ``PLANS_KEPT`` picture sizes (building one costs about as much
    as resizing a picture). Safe to share between threads and inputs: plans are immutable and
    the dict holding them is only read, assigned and popped.
    """

    PLANS_KEPT = 8

    def __init__(self, preprocessor: Preprocessor) -> None:
        self.preprocessor = preprocessor
        self.reason = unsupported(preprocessor)  # None: planes can be used
        r = preprocessor.spec.resize
        self._warp = r.sampler == "warp"
        self._flag = INTERPOLATION[r.interpolation]
        self._pad = float(np.clip(round(r.pad_value), 0, 255))
        self._plans: dict[tuple[int, int], _Plan | None] = {}  # picture size -> plan

    def resize_image(self, planes: YuvPlanes) -> tuple[np.ndarray, Geometry] | None:
        """The tensor-size HxWx3 uint8 RGB image and its geometry; None where the declared
        resize cannot be reproduced from planes (the caller then converts to RGB)."""
        if self.reason is not None:
            return None
        plan = self._plan(planes.size)
        if plan is None:
            return None
        if plan.warp is None:
            yuv = cv2.merge(self._sample(plan, planes))
            rgb = cv2.transform(yuv, _CONVERSIONS[planes.matrix, planes.range])
            return self.preprocessor.place(rgb, planes.size)
        luma = cv2.remap(planes.y, *plan.warp.luma, self._flag, borderMode=cv2.BORDER_CONSTANT)
        return self._finish(plan.warp, luma, self._remap_chroma(planes.chroma, plan.chroma),
                            planes.matrix, planes.range)  # fmt: skip

    def row_plan(self, size: tuple[int, int]) -> RowPlan | None:
        """How the rows of a ``size`` picture are copied (None: they are not; it is sampled
        where it was decoded)."""
        plan = self._plan(size) if self.reason is None else None
        return plan.warp.rows if plan is not None and plan.warp is not None else None

    def gather(self, planes: YuvPlanes, out: np.ndarray) -> None:
        """Copy the rows the warp reads (``row_plan``) into ``out``, flat uint8 of
        ``RowPlan.nbytes`` of the picture's width; ``from_rows`` samples them."""
        rows = self.row_plan(planes.size)
        if rows is None:
            raise InvalidInput(f"YuvResizer.gather: no row plan for a {planes.size} picture")
        n, w = len(rows.luma), planes.size[0]
        y = out[: n * w].reshape(n, w)
        # mode="clip" (the rows are in range): "raise" writes through a temporary copy
        np.take(planes.y, rows.luma, axis=0, out=y, mode="clip")
        if rows.outside.size:
            y[rows.outside] = 0
        offset = n * w
        for c in planes.chroma:  # (a decode worker's hot path: no numpy calls on shapes)
            shape = (n, *c.shape[1:])
            size = math.prod(shape)
            dest = out[offset : offset + size].reshape(shape)
            np.take(c, rows.chroma, axis=0, out=dest, mode="clip")
            offset += size

    def from_rows(self, rows: np.ndarray, shape: RowsShape) -> tuple[np.ndarray, Geometry]:
        """``resize_image`` of the picture whose rows ``gather`` copied into ``rows``: the
        same pixels."""
        plan = self._plan(shape.size)
        row_plan = plan.warp.rows if plan is not None and plan.warp is not None else None
        if plan is None or plan.warp is None or row_plan is None:
            raise InvalidInput(f"YuvResizer.from_rows: no row plan for a {shape.size} picture")
        n, w = len(row_plan.luma), shape.size[0]
        cw = (w + 1) // 2
        if rows.size != row_plan.nbytes(w):
            raise InvalidInput(
                f"YuvResizer.from_rows: expected {row_plan.nbytes(w)} bytes of rows for a "
                f"{shape.size} picture, got {rows.size}"
            )
        y = rows[: n * w].reshape(n, w)
        chroma: list[np.ndarray] = [rows[n * w :].reshape(n, cw, 2)]  # nv12
        if shape.planes == 2:
            chroma = [rows[n * (w + k * cw) : n * (w + k * cw + cw)].reshape(n, cw) for k in (0, 1)]
        luma = cv2.remap(y, *row_plan.luma_map, self._flag, borderMode=cv2.BORDER_CONSTANT)
        sampled = self._remap_chroma(tuple(chroma), row_plan.chroma_map)
        return self._finish(plan.warp, luma, sampled, shape.matrix, shape.range)

    def _remap_chroma(
        self, chroma: tuple[np.ndarray, ...], maps: tuple[np.ndarray, np.ndarray] | None
    ) -> list[np.ndarray]:
        assert maps is not None
        out = [cv2.remap(c, *maps, self._flag, borderMode=cv2.BORDER_REPLICATE) for c in chroma]
        return list(cv2.split(out[0])) if len(out) == 1 else out  # nv12: one plane of U and V

    def _finish(
        self,
        box: _WarpBox,
        luma: np.ndarray,
        chroma: list[np.ndarray],
        matrix: Matrix,
        color_range: ColorRange,
    ) -> tuple[np.ndarray, Geometry]:
        """Sampled planes -> RGB, edges blended with the padding, on the tensor canvas."""
        convert = _CONVERSIONS[matrix, color_range]
        yuv = cv2.merge([luma, *chroma])
        rgb = cv2.transform(yuv, convert)
        self._blend_edges(rgb, yuv, box, convert)
        return self._paste(rgb, box), box.geometry

    def _plan(self, size: tuple[int, int]) -> _Plan | None:
        try:
            return self._plans[size]
        except KeyError:
            pass
        plan = (_warp_plan if self._warp else _resize_plan)(self.preprocessor, *size)
        if len(self._plans) >= self.PLANS_KEPT:
            self._plans.pop(next(iter(self._plans), size), None)  # the oldest
        self._plans[size] = plan
        return plan

    def _sample(self, plan: _Plan, planes: YuvPlanes) -> list[np.ndarray]:
        """The ``resize`` sampler: luma and chroma planes at the content size (uint8)."""
        luma = cv2.resize(planes.y, plan.size, interpolation=self._flag)
        if plan.chroma is None:
            chroma = [cv2.resize(c, plan.size, interpolation=self._flag) for c in planes.chroma]
        else:
            chroma = [
                cv2.remap(c, *plan.chroma, self._flag, borderMode=cv2.BORDER_REPLICATE)
                for c in planes.chroma
            ]
        return [luma, *chroma]

    def _blend_edges(
        self, rgb: np.ndarray, yuv: np.ndarray, box: _WarpBox, convert: np.ndarray
    ) -> None:
        """Pixels whose samples reach past the picture, as the RGB path's warp blends them:
        ``cover * rgb(edge) + (1 - cover) * pad``. Luma was sampled with zeros outside (so it
        is already ``cover * luma``), chroma with its edge replicated (so it is scaled here)."""
        cover_x, cover_y = box.cover
        for index, cover in (
            (np.s_[:, cover_x < 1], np.outer(cover_y, cover_x[cover_x < 1])),
            (np.s_[cover_y < 1], np.outer(cover_y[cover_y < 1], cover_x)),
        ):
            if cover.size == 0:
                continue
            v = yuv[index].astype(np.float32)
            v[..., 1:] *= cover[..., None]
            # cv2.transform, not ``v @ m.T``: numpy's matmul wakes its BLAS thread pool, which
            # then spins beside the decoder (a few rows of pixels need no BLAS)
            out = cv2.transform(v, convert[:, :3]) + cover[..., None] * convert[:, 3]
            out += (1 - cover[..., None]) * self._pad
            rgb[index] = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def _paste(self, rgb: np.ndarray, box: _WarpBox) -> np.ndarray:
        """The sampled box on a tensor-size canvas of the pad value."""
        tw, th = box.geometry.tensor_size
        if rgb.shape[:2] == (th, tw):
            return rgb
        x0, y0 = box.origin
        out = np.full((th, tw, 3), self._pad, dtype=np.uint8)
        out[y0 : y0 + rgb.shape[0], x0 : x0 + rgb.shape[1]] = rgb
        return out
