"""The benchmark clip: 1280x720 H.264, a camera moving over the astronaut, with sensor noise.

A smooth back-and-forth pan and zoom keeps the face (and the person) in view on every frame;
mild Gaussian noise (sigma 2 grey levels) gives the encoder real detail to code, so decoding
costs what camera footage costs rather than what a clean still image costs.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data


def make_benchmark_clip(
    path: Path, frames: int = 720, size: tuple[int, int] = (1280, 720), fps: int = 30, gop: int = 0
) -> Path:
    """``gop`` > 0: a keyframe every ``gop`` frames (a live encoder's setting); 0: x264's own."""
    w, h = size
    source = cv2.resize(data.astronaut(), (1600, 1600), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        if gop:
            stream.options |= {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        for i in range(frames):
            t = 2 * math.pi * i / 240
            zoom = 1.1 + 0.1 * math.sin(t / 2)  # 1.0 .. 1.2
            cw, ch = int(w / zoom), int(h / zoom)
            x = int(max(0, min(1600 - cw, (1600 - cw) / 2 + 120 * math.sin(t))))
            y = int(max(0, min(1600 - ch, 150 + 60 * math.cos(t))))
            crop = cv2.resize(source[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
            noisy = crop.astype(np.int16) + rng.normal(0, 2, crop.shape).astype(np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(noisy, 0, 255).astype(np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
