"""Declared pre-processing: an RGB uint8 image -> the model's input tensor, and back.

One implementation for image requests, v2 requests with encoded images and video frames.
Each image keeps a ``Geometry`` that maps tensor coordinates back to source pixels, so
decoders report results in the source image's pixels whatever the resize mode was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from frameserve.errors import InvalidInput, PayloadTooLarge
from frameserve.processing.spec import Interpolation, PreprocessSpec, ResizeSpec

INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
_DTYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8}


@dataclass(frozen=True, slots=True)
class Geometry:
    """Where the source image lies in the input tensor: ``tensor = source * scale + pad``."""

    source_size: tuple[int, int]  # (width, height) of the source image
    tensor_size: tuple[int, int]  # (width, height) of the model input
    scale: tuple[float, float]  # (x, y)
    pad: tuple[float, float]  # (left, top) in tensor pixels

    def to_source(self, points: np.ndarray, normalized: bool = False) -> np.ndarray:
        """Map ``[..., 2]`` (x, y) points from tensor pixels (or 0..1 of the tensor) to source."""
        pts = np.asarray(points, dtype=np.float64)
        if normalized:
            pts = pts * np.asarray(self.tensor_size, dtype=np.float64)
        return (pts - np.asarray(self.pad)) / np.asarray(self.scale)

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """The part of the tensor the image covers: (x0, y0, x1, y1) in tensor pixels."""
        w, h = self.source_size
        x0, y0 = self.pad
        x1 = x0 + w * self.scale[0]
        y1 = y0 + h * self.scale[1]
        return round(x0), round(y0), round(x1), round(y1)


def opencv_on_caller_threads() -> None:
    """Run OpenCV's calls on the thread that makes them, without OpenCV's own pool.

    Every CPU-heavy thread frameserve runs (a decoder per input, the processing pool, a decode
    worker process) is already one unit of the core budget, and the pictures it resizes are
    small. OpenCV's pool would put one more thread per core on top, which spins between calls
    (``sched_yield``): measured on ``faces`` over 1280x720, 5% of the process's CPU went to it.
    OpenCV's setting is process-wide; call this where a process starts its work.
    """
    cv2.setNumThreads(1)


def resize(image: np.ndarray, size: tuple[int, int], interpolation: Interpolation) -> np.ndarray:
    """cv2.resize to (width, height); a no-op when the size already matches."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    return cv2.resize(image, size, interpolation=INTERPOLATION[interpolation])


def _target(spec: ResizeSpec, w: int, h: int, batch_ratio: float) -> tuple[int, int, int, int]:
    """(content width, content height, tensor width, tensor height) for one image."""
    if spec.mode == "stretch":
        assert spec.size is not None
        return spec.size[0], spec.size[1], spec.size[0], spec.size[1]
    if spec.mode in ("letterbox", "pad"):
        assert spec.size is not None
        tw, th = spec.size
        s = min(tw / w, th / h)
        return max(1, round(w * s)), max(1, round(h * s)), tw, th
    if spec.mode == "limit_side":
        assert spec.limit is not None
        side = min(h, w) if spec.limit_type == "min" else max(h, w)
        grow = spec.limit_type == "min" and side < spec.limit
        shrink = spec.limit_type == "max" and side > spec.limit
        ratio = spec.limit / side if (grow or shrink) else 1.0
        # PP-OCR's rule: truncate, then round each side to the nearest multiple.
        m = spec.multiple
        rw = max(m, int(round(int(w * ratio) / m) * m))
        rh = max(m, int(round(int(h * ratio) / m) * m))
        return rw, rh, rw, rh
    assert spec.height is not None and spec.width is not None
    th = spec.height
    tw = int(th * batch_ratio) if spec.variable_width else spec.width
    cw = min(tw, int(math.ceil(th * w / h)))
    return max(1, cw), th, tw, th


class Preprocessor:
    """Applies one ``PreprocessSpec``; stateless and safe to share between threads."""

    def __init__(self, spec: PreprocessSpec, fused: bool = False) -> None:
        self.spec = spec
        self.fused = fused  # the runtime graph does colour, normalisation and layout itself
        self.interpolation = spec.resize.interpolation
        self.dtype = _DTYPES[spec.dtype]
        scale = np.float32(spec.scale)
        std = np.asarray(spec.std, dtype=np.float32)
        # (x * scale - mean) / std == x * a + b, folded once.
        self._mul = (scale / std).astype(np.float32)
        self._add = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
        self._identity = spec.scale == 1.0 and not any(spec.mean) and spec.std == (1, 1, 1)

    def batch_ratio(self, images: list[np.ndarray]) -> float:
        """Widest width/height ratio of a batch (and of the target), for variable widths."""
        r = self.spec.resize
        floor = (r.width / r.height) if (r.width and r.height) else 0.0
        return max([floor] + [im.shape[1] / im.shape[0] for im in images])

    def resize_image(
        self, image: np.ndarray, batch_ratio: float = 0.0
    ) -> tuple[np.ndarray, Geometry]:
        """Resize and pad one HxWx3 uint8 image (colour order untouched) to the tensor size."""
        check_image(image)
        h, w = image.shape[:2]
        r = self.spec.resize
        if r.sampler == "warp":
            return self._warp(image)
        ratio = batch_ratio or self.batch_ratio([image])
        cw, ch, _, _ = _target(r, w, h, ratio)
        return self.place(resize(image, (cw, ch), self.interpolation), (w, h), ratio)

    def content_size(self, source_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the source is resized to before padding (``resize`` sampler)."""
        w, h = source_size
        cw, ch, _, _ = _target(self.spec.resize, w, h, 0.0)
        return cw, ch

    def place(
        self, content: np.ndarray, source_size: tuple[int, int], batch_ratio: float = 0.0
    ) -> tuple[np.ndarray, Geometry]:
        """Pad an image already resized to ``content_size`` onto the tensor, with its geometry.

        Video decoding may resize in FFmpeg's scaler (where that matches ``resize_image``).
        """
        w, h = source_size
        r = self.spec.resize
        cw, ch = content.shape[1], content.shape[0]
        floor = (r.width / r.height) if (r.width and r.height) else 0.0
        tw, th = _target(r, w, h, batch_ratio or max(floor, w / h))[2:]
        left = (tw - cw) // 2 if r.mode == "letterbox" else 0
        top = (th - ch) // 2 if r.mode == "letterbox" else 0
        geometry = Geometry((w, h), (tw, th), (cw / w, ch / h), (float(left), float(top)))
        if (cw, ch) == (tw, th) or r.pad_in == "tensor":
            return content, geometry  # tensor padding happens after normalisation
        fill = np.clip(round(r.pad_value), 0, 255)
        out = np.full((th, tw, 3), fill, dtype=np.uint8)
        out[top : top + ch, left : left + cw] = content
        return out, geometry

    def warp_geometry(self, w: int, h: int) -> Geometry:
        """The ``warp`` sampler's geometry for a ``w`` x ``h`` source: the source, padded to
        the tensor's aspect ratio, mapped onto the tensor's corners."""
        r = self.spec.resize
        assert r.size is not None
        tw, th = r.size
        rw, rh = float(w), float(h)
        if r.mode != "stretch":  # grow the region to the target aspect ratio
            rw, rh = max(rw, rh * tw / th), max(rh, rw * th / tw)
        x0 = (w - rw) / 2 if r.mode == "letterbox" else 0.0
        y0 = (h - rh) / 2 if r.mode == "letterbox" else 0.0
        sx, sy = tw / rw, th / rh
        return Geometry((w, h), (tw, th), (sx, sy), (-x0 * sx, -y0 * sy))

    def _warp(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Map the source, padded to the tensor's aspect ratio, onto the tensor's corners."""
        h, w = image.shape[:2]
        g = self.warp_geometry(w, h)
        (sx, sy), (px, py) = g.scale, g.pad
        matrix = np.array([[sx, 0, px], [0, sy, py], [0, 0, 1]], dtype=np.float64)
        fill = float(np.clip(round(self.spec.resize.pad_value), 0, 255))
        out = cv2.warpPerspective(
            image,
            matrix,
            g.tensor_size,
            flags=INTERPOLATION[self.interpolation],
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill, fill, fill),
        )
        return np.asarray(out), g

    def _values(self, images: np.ndarray) -> np.ndarray:
        """Colour order, then scale/mean/std and dtype, on ``[..., H, W, 3]`` uint8."""
        x = images[..., ::-1] if self.spec.color == "bgr" else images
        if self.spec.dtype == "UINT8":
            return np.ascontiguousarray(x)
        if self._identity:
            return x.astype(self.dtype)
        # x * a + b in float32, written into one buffer. Broadcasting a 3-vector over the
        # channels makes numpy loop 3 elements at a time (~25x slower): equal channels use
        # scalars, others a row-long pattern of the 3 values (the same float32 arithmetic).
        out = np.empty(x.shape, dtype=np.float32)
        mul, add = self._mul, self._add
        if (mul == mul[0]).all() and (add == add[0]).all():
            np.multiply(x, mul[0], out=out)
            out += add[0]
        else:
            width = x.shape[-2]
            rows = np.ascontiguousarray(x).reshape(*x.shape[:-2], width * 3)
            flat = out.reshape(rows.shape)
            np.multiply(rows, np.tile(mul, width), out=flat)
            flat += np.tile(add, width)
        return out.astype(self.dtype, copy=False)

    def normalize(self, resized: np.ndarray) -> np.ndarray:
        """Colour order, scale/mean/std, layout and dtype for a [N,H,W,3] uint8 batch."""
        if self.fused:
            return np.ascontiguousarray(resized)
        out = self._values(resized)
        if self.spec.layout == "NCHW":
            out = out.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(out)

    def planned_shape(self, images: list[np.ndarray]) -> tuple[int, ...]:
        """The shape ``__call__`` would give ``images`` (the largest image's tensor size), found
        without resizing anything."""
        r = self.spec.resize
        if r.sampler == "warp":
            assert r.size is not None
            tw, th = r.size
        else:
            ratio = self.batch_ratio(images) if r.variable_width else 0.0
            sizes = [_target(r, im.shape[1], im.shape[0], ratio)[2:] for im in images]
            tw, th = max(sizes, key=lambda s: s[0] * s[1])
        if self.spec.layout == "NCHW" and not self.fused:
            return (len(images), 3, th, tw)
        return (len(images), th, tw, 3)

    def check_size(self, images: list[np.ndarray], max_elements: int) -> None:
        """Refuse images whose tensor would hold more than ``max_elements`` elements, before
        it is allocated: a 2000x1 image resized to a 736-pixel short side is 4 billion."""
        for i, im in enumerate(images):
            check_image(im, f"image {i}")
        shape = self.planned_shape(images)
        count = math.prod(shape)
        if count > max_elements:
            sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
            raise PayloadTooLarge(
                f"pre-processed tensor: image(s) {', '.join(sizes)} would become shape "
                f"{list(shape)} ({count} elements), over the limit of {max_elements} elements "
                "(max_elements, --max-elements)"
            )

    def __call__(
        self, images: list[np.ndarray], max_elements: int | None = None
    ) -> tuple[np.ndarray, list[Geometry]]:
        """A batch tensor for images that resize to one tensor size, with their geometries;
        with ``max_elements``, refused (413) before any work when the tensor would be larger."""
        if max_elements is not None:
            self.check_size(images, max_elements)
        ratio = self.batch_ratio(images) if self.spec.resize.variable_width else 0.0
        resized, geometries = [], []
        for im in images:
            r, g = self.resize_image(im, ratio)
            resized.append(r)
            geometries.append(g)
        sizes = {g.tensor_size for g in geometries}
        if len(sizes) > 1:
            raise InvalidInput(
                f"images resize to different tensor sizes {sorted(sizes)}; send them apart"
            )
        if self.spec.resize.pad_in == "tensor" and not self.fused:
            return self._pad_tensors(resized, geometries), geometries
        return self.normalize(np.stack(resized)), geometries

    def _pad_tensors(self, contents: list[np.ndarray], geometries: list[Geometry]) -> np.ndarray:
        """Normalise each resized image, then place it on a tensor filled with ``pad_value``."""
        tw, th = geometries[0].tensor_size
        batch = np.full((len(contents), th, tw, 3), self.spec.resize.pad_value, dtype=self.dtype)
        for i, (content, g) in enumerate(zip(contents, geometries, strict=True)):
            left, top = int(g.pad[0]), int(g.pad[1])
            ch, cw = content.shape[:2]
            batch[i, top : top + ch, left : left + cw] = self._values(content)
        if self.spec.layout == "NCHW":
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)


def check_image(image: np.ndarray, where: str = "image") -> None:
    """Refuse anything but a non-empty HxWx3 uint8 array."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidInput(
            f"{where}: expected an HxWx3 uint8 RGB image, got {image.dtype} {list(image.shape)}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidInput(f"{where}: expected a non-empty image, got {list(image.shape)}")
