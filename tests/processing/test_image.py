"""Image decoding with real pictures (scikit-image's astronaut, camera and text) encoded by
Pillow in every accepted format; broken, hostile and unusual files made here byte by byte."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import warnings
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageFile

from frameserve.errors import InvalidInput, PayloadTooLarge
from frameserve.processing.image import (
    IMAGE_FORMATS,
    decode_image,
    encode_png,
    image_size,
    sniff_format,
)

FORMATS = ["JPEG", "PNG", "WEBP", "BMP", "TIFF"]
EXPECTED = "JPEG, PNG, WebP, BMP or TIFF"


@cache
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@cache
def camera() -> np.ndarray:
    return skimage.data.camera()


def encode(image: Image.Image | np.ndarray, fmt: str, **params: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def black_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG, compressed row by row so that making it needs little memory."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def invalid_message(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(InvalidInput) as info:
        decode_image(data, **kwargs)
    return str(info.value)


# --- formats and round trips ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_sniff_format_reads_magic_bytes(fmt: str) -> None:
    assert sniff_format(encode(astronaut(), fmt)) == fmt
    assert fmt in IMAGE_FORMATS.values()


def test_sniff_format_unknown_is_none() -> None:
    assert sniff_format(encode(astronaut(), "GIF")) is None
    assert sniff_format(b"hello") is None
    assert sniff_format(b"") is None


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("TIFF", {"compression": "tiff_lzw"})]
    + [("WEBP", {"lossless": True})],
)
def test_lossless_round_trip_is_exact(fmt: str, params: dict[str, Any]) -> None:
    decoded = decode_image(encode(astronaut(), fmt, **params))
    np.testing.assert_array_equal(decoded, astronaut())


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_lossy_round_trip_is_close(fmt: str) -> None:
    decoded = decode_image(encode(astronaut(), fmt, quality=90))
    assert decoded.shape == astronaut().shape
    assert np.abs(decoded.astype(int) - astronaut()).mean() < 3


def test_output_is_writable_contiguous_rgb_uint8() -> None:
    decoded = decode_image(encode(astronaut(), "JPEG"))
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.flags.c_contiguous and decoded.flags.writeable
    # RGB, not OpenCV's BGR: the astronaut's orange suit is red-heavy.
    suit = decoded[400:500, 150:250].reshape(-1, 3).mean(axis=0)
    assert suit[0] > suit[2] + 50


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("picture", [camera, skimage.data.text])
def test_gray_becomes_three_equal_channels(fmt: str, picture: Any) -> None:
    gray = picture()
    # WebP has no gray mode: lossy WebP stores gray as YUV with chroma noise, lossless exactly.
    decoded = decode_image(encode(gray, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert decoded.shape == (*gray.shape, 3)
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 0] == decoded[..., 2]).all()
    if fmt != "JPEG":
        np.testing.assert_array_equal(decoded[..., 0], gray)


@pytest.mark.parametrize(("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True})])
def test_alpha_is_dropped_colour_channels_kept(fmt: str, params: dict[str, Any]) -> None:
    alpha = np.random.default_rng(0).integers(0, 256, astronaut().shape[:2], dtype=np.uint8)
    rgba = np.dstack([astronaut(), alpha])
    decoded = decode_image(encode(rgba, fmt, **params))
    # WebP lossless may rewrite the colour of fully transparent pixels; compare the rest.
    visible = alpha > 0
    np.testing.assert_array_equal(decoded[visible], astronaut()[visible])


def test_gray_with_alpha_drops_alpha() -> None:
    la = Image.fromarray(np.dstack([camera(), 255 - camera()]), "LA")
    decoded = decode_image(encode(la, "PNG"))
    np.testing.assert_array_equal(decoded, np.repeat(camera()[..., None], 3, axis=2))


def test_palette_png_is_expanded() -> None:
    palette = Image.fromarray(astronaut()).convert("P", palette=Image.Palette.ADAPTIVE)
    decoded = decode_image(encode(palette, "PNG"))
    np.testing.assert_array_equal(decoded, np.asarray(palette.convert("RGB")))
    assert np.abs(decoded.astype(int) - astronaut()).mean() < 10


def test_palette_transparency_is_ignored_without_warning() -> None:
    palette = Image.fromarray(np.array([[0, 1, 2]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    data = encode(palette, "PNG", transparency=b"\x00\x80\xff")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = decode_image(data)
    assert decoded.tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]


def test_bilevel_png_becomes_0_and_255() -> None:
    bits = camera() > 128
    decoded = decode_image(encode(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(decoded[..., 1], np.where(bits, 255, 0))


SIXTEEN_BIT = [0, 1, 128, 129, 255, 256, 300, 32767, 32896, 65279, 65535]
# round(v * 255 / 65535); Pillow's own convert("L") would clip everything above 255 to 255.
EIGHT_BIT = [0, 0, 0, 1, 1, 1, 1, 127, 128, 254, 255]


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B")])
def test_sixteen_bit_gray_is_rounded_to_eight_bits(fmt: str, mode: str) -> None:
    samples = np.array([SIXTEEN_BIT], dtype=np.uint16)
    image = Image.fromarray(samples)
    if mode == "I;16B":
        image = Image.frombytes("I;16B", image.size, samples.astype(">u2").tobytes())
    data = encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    decoded = decode_image(data)
    assert decoded[0, :, 0].tolist() == EIGHT_BIT
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_sixteen_bit_camera_png_matches_eight_bit_picture() -> None:
    data = encode(Image.fromarray(camera().astype(np.uint16) * 257), "PNG")  # 8 -> 16 bits exactly
    np.testing.assert_array_equal(decode_image(data)[..., 1], camera())


def test_thirty_two_bit_integer_tiff_within_16_bits_is_scaled() -> None:
    samples = np.array([SIXTEEN_BIT], dtype=np.int32)
    decoded = decode_image(encode(Image.fromarray(samples), "TIFF"))
    assert decoded[0, :, 0].tolist() == EIGHT_BIT


def test_sixteen_bit_colour_png_keeps_high_byte() -> None:
    # Pillow cannot write 48-bit PNG; OpenCV can (channels in BGR order).
    rgb = np.array([[[65535, 32896, 256], [255, 0, 65279]]], dtype=np.uint16)
    ok, data = cv2.imencode(".png", rgb[..., ::-1].copy())
    assert ok
    decoded = decode_image(data.tobytes())
    assert decoded.tolist() == (rgb >> 8).tolist()


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted_to_rgb(fmt: str) -> None:
    cmyk = Image.fromarray(astronaut()).convert("CMYK")
    decoded = decode_image(encode(cmyk, fmt, quality=95) if fmt == "JPEG" else encode(cmyk, fmt))
    assert np.abs(decoded.astype(int) - astronaut()).mean() < 3


def test_ycbcr_tiff_is_converted_to_rgb() -> None:
    ycbcr = Image.fromarray(astronaut()).convert("YCbCr")
    decoded = decode_image(encode(ycbcr, "TIFF"))
    assert np.abs(decoded.astype(int) - astronaut()).mean() < 2


def test_exif_orientation_is_applied() -> None:
    picture = astronaut()[:300, :200]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left: rotate 90 degrees clockwise to show
    data = encode(picture, "JPEG", quality=95, exif=exif)
    assert image_size(data) == (200, 300)  # the header's size, before rotation
    decoded = decode_image(data)
    assert decoded.shape == (200, 300, 3)
    assert np.abs(decoded.astype(int) - np.rot90(picture, k=-1)).mean() < 3


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_animation_and_pages_give_the_first_frame(fmt: str) -> None:
    red = Image.new("RGB", (16, 8), (255, 0, 0))
    blue = Image.new("RGB", (16, 8), (0, 0, 255))
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(red, fmt, save_all=True, append_images=[blue], **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    decoded = decode_image(data)
    assert decoded.shape == (8, 16, 3)
    assert (decoded[..., 0] >= 250).all() and (decoded[..., 2] <= 5).all()


def test_declared_content_type_is_overruled_by_the_bytes() -> None:
    decoded = decode_image(encode(astronaut(), "PNG"), content_type="image/jpeg")
    np.testing.assert_array_equal(decoded, astronaut())


def test_memoryview_input() -> None:
    data = encode(camera(), "PNG")
    assert decode_image(memoryview(data)).shape == (*camera().shape, 3)


def test_image_size_reads_header() -> None:
    assert image_size(encode(astronaut()[:100, :300], "WEBP")) == (300, 100)
    assert image_size(black_png(8000, 8000)) == (8000, 8000)
    # Beyond Pillow's own hard limit (about 179 M pixels) not even the header is read.
    with pytest.raises(PayloadTooLarge, match="400000000 pixels"):
        image_size(black_png(20_000, 20_000))


# --- refusals ------------------------------------------------------------------------------


def test_empty_data_names_source_and_expected_formats() -> None:
    message = invalid_message(b"", source="inputs[0]")
    assert message.startswith("inputs[0]: empty image")
    assert EXPECTED in message
    with pytest.raises(InvalidInput, match="empty"):
        image_size(b"")


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (encode(skimage.data.astronaut(), "GIF"), "GIF"),
        (b"this is not an image\n", "b'this is not an i'"),
        (np.random.default_rng(0).bytes(1000), "data starting with"),
        (b"%PDF-1.7\n", "PDF"),
    ],
    ids=["gif", "text", "random", "pdf"],
)
def test_unsupported_format_is_named(data: bytes, named: str) -> None:
    message = invalid_message(data, content_type="image/png")
    assert message.startswith("body: ")
    assert named in message
    assert "declared as image/png" in message
    assert EXPECTED in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_image_is_refused(fmt: str) -> None:
    data = encode(astronaut(), fmt)
    message = invalid_message(data[: len(data) // 2], source="image")
    assert message.startswith("image: ")
    assert fmt in message and EXPECTED in message


def test_truncated_jpeg_says_truncated() -> None:
    data = encode(astronaut(), "JPEG")
    assert "truncated" in invalid_message(data[: len(data) // 2])


@pytest.mark.parametrize("compress_level", [0, 6])
def test_corrupt_png_data_is_refused(compress_level: int) -> None:
    data = bytearray(encode(astronaut(), "PNG", compress_level=compress_level))
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(8)
    assert "corrupt or truncated PNG" in invalid_message(bytes(data))


@pytest.mark.parametrize("size", [(0, 0), (1, 0), (0, 1)])
def test_zero_size_png_is_refused(size: tuple[int, int]) -> None:
    header = struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )
    # Pillow refuses such a header itself, so the message can only list the possible causes.
    message = invalid_message(data)
    assert "cannot read the PNG header" in message and "width or height of 0" in message


@pytest.mark.parametrize(
    ("image", "mode"),
    [
        (Image.fromarray(np.full((4, 4), 0.5, np.float32)), "'F'"),
        (Image.fromarray(skimage.data.astronaut()).convert("LAB"), "'LAB'"),
    ],
)
def test_unsupported_pixel_modes_are_refused(image: Image.Image, mode: str) -> None:
    message = invalid_message(encode(image, "TIFF"))
    assert f"pixel mode {mode}" in message and "8 or 16-bit" in message


def test_thirty_two_bit_values_beyond_16_bits_are_refused() -> None:
    data = encode(Image.fromarray(np.array([[0, 70_000]], np.int32)), "TIFF")
    assert "values 0..70000; expected 0..65535" in invalid_message(data)


def test_pixel_limit_refuses_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> Any:
        loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    data = encode(camera()[:100, :100], "PNG")
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(data, max_pixels=1000, source="inputs[1]")
    assert str(info.value) == "inputs[1]: image is 100 x 100 = 10000 pixels, the limit is 1000"
    assert loads == []
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    assert loads  # the spy sees real decoding


def test_real_bombs_are_refused_with_little_memory(tmp_path: Path) -> None:
    # 8000 x 8000 passes Pillow's own limit and meets ours (50 M); 20000 x 20000 (1.2 GB as
    # RGB) meets Pillow's hard limit at open. Peak memory is measured in a fresh process.
    files = {"8k": black_png(8000, 8000), "20k": black_png(20_000, 20_000)}
    for name, data in files.items():
        (tmp_path / f"{name}.png").write_bytes(data)
        assert len(data) < 100_000  # small on disk
    script = f"""
import json, pathlib
from frameserve.errors import PayloadTooLarge
from frameserve.processing.image import decode_image
messages = {{}}
for name in {list(files)!r}:
    try:
        decode_image(pathlib.Path({str(tmp_path)!r}, name + ".png").read_bytes())
    except PayloadTooLarge as exc:
        messages[name] = str(exc)
# VmHWM is this process's own peak; ru_maxrss would carry the parent's over fork and exec.
hwm_kb = next(
    int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")
)
rss_mb = hwm_kb / 1024
print(json.dumps({{"messages": messages, "rss_mb": rss_mb}}))
"""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(done.stdout)
    assert result["messages"]["8k"] == (
        "body: image is 8000 x 8000 = 64000000 pixels, the limit is 50000000"
    )
    assert "400000000 pixels" in result["messages"]["20k"]
    assert result["rss_mb"] < 300, result  # decoded, the 20k image alone is 1200 MB


# --- PNG masks -----------------------------------------------------------------------------


def test_encode_png_round_trip() -> None:
    mask = (camera() // 64).astype(np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(mask)))
    assert decoded.mode == "L"
    np.testing.assert_array_equal(np.asarray(decoded), mask)


def test_encode_png_bool_and_trailing_channel() -> None:
    bits = camera() > 128
    expected = np.where(bits, 255, 0)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(bits)))), expected)
    column = bits[:, :, np.newaxis].astype(np.uint8) * 255
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(column)))), expected)


def test_encode_png_decodes_through_decode_image() -> None:
    mask = (camera()[::2, ::3] > 100).astype(np.uint8) * 255
    np.testing.assert_array_equal(decode_image(encode_png(mask))[..., 0], mask)


@pytest.mark.parametrize(
    ("mask", "problem"),
    [
        (np.zeros((4, 4, 3), np.uint8), r"H x W mask .* got \(4, 4, 3\)"),
        (np.zeros(16, np.uint8), r"got \(16,\)"),
        (np.zeros((0, 4), np.uint8), r"got \(0, 4\)"),
        (np.zeros((4, 4), np.float32), "uint8 or bool mask, got float32"),
        (np.zeros((4, 4), np.uint16), "got uint16"),
    ],
)
def test_encode_png_refuses_bad_masks(mask: np.ndarray, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_png(mask)
