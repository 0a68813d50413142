"""Encoded images in and out: JPEG, PNG, WebP, BMP and TIFF bytes to RGB arrays, masks to PNG.

Every image request decodes through :func:`decode_image`, so every caller sees the same picture
as an H x W x 3 ``uint8`` RGB array:

- the format is read from the bytes, not from the declared content type (clients mislabel
  often); rejecting a content type that is not an image at all is the caller's job;
- the size is checked from the header, before any pixel is decoded (decompression bombs);
- EXIF orientation is applied, because phones store the sensor's orientation and browsers
  show the picture rotated: the model sees what the user saw;
- alpha is ignored and the colour channels used as stored, as OpenCV's
  ``imread(IMREAD_COLOR)`` and OpenVINO Model Server do, so results match those servers;
  compositing onto a background would invent colours the model was not trained on;
- 16-bit grayscale is rounded to 8 bits (``round(v * 255 / 65535)``); 16-bit colour PNG and
  TIFF keep the high byte of each sample, which is what Pillow decodes them to;
- of an animation or a multi-page TIFF only the first frame is used;
- ICC colour profiles are not applied (neither OpenCV nor OVMS do).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from frameserve.errors import InvalidInput, PayloadTooLarge
from frameserve.processing.png import gray_png

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FORMATS: Mapping[str, str] = MappingProxyType(
    {
        "image/jpeg": "JPEG",
        "image/jpg": "JPEG",  # not registered, but common in the wild
        "image/png": "PNG",
        "image/webp": "WEBP",
        "image/bmp": "BMP",
        "image/x-ms-bmp": "BMP",
        "image/tiff": "TIFF",
    }
)
"""Content types of the accepted formats, to Pillow's format name."""

_ACCEPTED = "JPEG, PNG, WebP, BMP or TIFF"

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)

# Formats people send by mistake, named in the error so that they know what to convert.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
)

# What Pillow's decoders raise on bad data. Anything else is a bug of ours and should surface.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)

_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def sniff_format(data: bytes | bytearray | memoryview) -> str | None:
    """Pillow's name of the accepted format that ``data`` starts with, or None."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def image_size(data: bytes | bytearray | memoryview, *, source: str = "body") -> tuple[int, int]:
    """``(width, height)`` as stored, read from the header only (before EXIF rotation)."""
    with _open_header(data, None, source) as image:
        return image.size


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = 50_000_000,
    content_type: str | None = None,
    source: str = "body",
) -> np.ndarray:
    """Decode an encoded image to a writable, C-contiguous H x W x 3 ``uint8`` RGB array.

    ``content_type`` only makes error messages clearer: the bytes decide the format.
    ``source`` names the input in messages (``"body"``, ``"inputs[0]"``). Raises
    :class:`InvalidInput` for empty, unsupported, corrupt or zero-size images and
    :class:`PayloadTooLarge` when width x height exceeds ``max_pixels``.
    """
    from PIL import ImageOps  # with the first image (see ``_open_header``)

    with _open_header(data, content_type, source) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"{source}: image is {width} x {height} = {width * height} pixels, "
                f"the limit is {max_pixels}"
            )
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        except _DECODE_ERRORS as exc:
            raise InvalidInput(
                f"{source}: corrupt or truncated {image.format} image ({exc}); "
                f"expected a complete {_ACCEPTED} file"
            ) from exc
        return _to_rgb(image, source)


def encode_png(mask: np.ndarray) -> bytes:
    """A single-channel mask (H x W or H x W x 1; ``uint8``, or bool as 0/255) as PNG bytes."""
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"encode_png: expected an H x W mask with H, W >= 1, got {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * np.uint8(255)
    elif mask.dtype != np.uint8:
        raise ValueError(f"encode_png: expected a uint8 or bool mask, got {mask.dtype}")
    # A mask per video frame makes this count: our own writer with zlib-ng's deflate, 0.23 ms
    # a 720p person mask where OpenCV's libpng took 1.5-1.8 ms for the same size
    # (processing/png.py); Pillow, which always filters rows, took 5.0 ms.
    return gray_png(mask)


def _open_header(
    data: bytes | bytearray | memoryview, content_type: str | None, source: str
) -> Image.Image:
    """Open ``data`` with the one plugin its magic bytes name; reads the header only."""
    if len(data) == 0:
        raise InvalidInput(f"{source}: empty image; expected {_ACCEPTED} bytes")
    fmt = sniff_format(data)
    if fmt is None:
        declared = f" (declared as {content_type})" if content_type else ""
        raise InvalidInput(
            f"{source}: {_describe_unsupported(data)}{declared} is not a supported image; "
            f"expected {_ACCEPTED}"
        )
    # Pillow is imported with the first image (~20 ms): a video run or a tensor server never is.
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the sniffed plugin: Pillow would otherwise try every format it knows,
        # some of which (EPS) run external programs.
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit (twice Image.MAX_IMAGE_PIXELS), checked at open.
        raise PayloadTooLarge(f"{source}: {exc}") from exc
    except (UnidentifiedImageError, *_DECODE_ERRORS) as exc:
        raise InvalidInput(
            f"{source}: cannot read the {fmt} header (corrupt, truncated, or a width or "
            f"height of 0); expected a valid {_ACCEPTED} file"
        ) from exc
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise InvalidInput(f"{source}: {fmt} image is {width} x {height}; expected at least 1 x 1")
    return image


def _describe_unsupported(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[:16])
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF"
    return f"data starting with {head!r}"


def _to_rgb(image: Image.Image, source: str) -> np.ndarray:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _gray16_to_rgb(np.asarray(image))
    if mode == "I":
        return _gray16_to_rgb(_int32_as_16_bit(np.asarray(image), source))
    if mode not in _EIGHT_BIT_MODES:
        raise InvalidInput(
            f"{source}: {image.format} image has pixel mode {mode!r}; expected grayscale, "
            "palette, RGB(A), CMYK or YCbCr with 8 or 16-bit integer samples"
        )
    if mode in ("P", "PA"):
        # Alpha is ignored; left in place, a byte-string transparency makes Pillow's
        # conversion warn and suggest RGBA.
        image.info.pop("transparency", None)
    rgb = image if mode == "RGB" else image.convert("RGB")
    # np.asarray on a Pillow image is read-only; callers may normalise in place.
    return np.array(rgb)


def _int32_as_16_bit(samples: np.ndarray, source: str) -> np.ndarray:
    """Mode ``I`` (32-bit TIFF) is accepted when its values fit 16 bits."""
    low, high = int(samples.min()), int(samples.max())
    if low < 0 or high > 65535:
        raise InvalidInput(
            f"{source}: 32-bit integer image has values {low}..{high}; expected 0..65535"
        )
    return samples


def _gray16_to_rgb(samples: np.ndarray) -> np.ndarray:
    # round(v * 255 / 65535) == (v + 128) // 257 for every integer v in 0..65535: v / 257
    # never ends in exactly .5. Pillow's convert("L") clips instead (300 -> 255).
    gray = ((samples.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
