"""A kept swscale context (``full_rgb`` with the input's ``VideoReformatter``) gives exactly the
pixels a new context per frame gives, also when frame sizes and colour tags change between
frames (FFmpeg sets the kept context up again for them)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from skimage import data

from frameserve.video.frames import Frame
from frameserve.video.scaler import full_rgb


def _pictures() -> list[av.VideoFrame]:
    """yuv420p pictures of the astronaut at two sizes, tagged BT.601 and BT.709."""
    image = data.astronaut()
    out = []
    for i, (w, h) in enumerate([(512, 512), (320, 240), (512, 512), (320, 240)]):
        rgb = av.VideoFrame.from_ndarray(np.roll(image, 7 * i, axis=1), format="rgb24")
        picture = rgb.reformat(width=w, height=h, format="yuv420p")
        picture.colorspace = 1 if i % 2 else 5  # AVCOL_SPC_BT709 / BT470BG (601)
        out.append(picture)
    return out


def test_full_rgb_with_a_kept_context_equals_a_new_context_per_frame() -> None:
    kept = VideoReformatter()
    for picture in _pictures():
        reference = picture.to_ndarray(format="rgb24")
        frame = Frame(0, 0, 0, Fraction(1, 25), None, True, picture=picture)
        got = full_rgb(frame, kept)
        assert got is not None and got.shape == reference.shape
        np.testing.assert_array_equal(got, reference)
        assert full_rgb(frame, kept) is got  # converted once, then kept on the frame


def test_a_kept_context_scales_as_frame_reformat_does() -> None:
    kept = VideoReformatter()
    for picture in _pictures():
        args = {"width": 192, "height": 108, "format": "rgb24", "interpolation": "AREA"}
        np.testing.assert_array_equal(
            kept.reformat(picture, **args).to_ndarray(), picture.reformat(**args).to_ndarray()
        )
