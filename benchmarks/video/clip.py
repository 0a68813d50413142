"""Benchmark clips, made at run time from scikit-image's bundled images (nothing downloaded).

``benchmark_clip(kind, frames, cache)``: the video benchmark's *unseen* clips, cached by content
(a digest of this file, the kind and the frame count is in the name, so an edit here re-encodes).
Both kinds move a camera over the same collage, none of it the astronaut-only picture the
pipelines were tuned on: the cameraman (grey, shown as RGB), the astronaut mirrored and smaller,
coffee, the cat, the rocket and the Hubble deep field. Two people, so ``faces`` and
``person-mask`` have something to find on most frames.

- ``pan``: a smooth pan and zoom over a soft background, mild sensor noise (sigma 2): the easy
  case, like a tripod shot.
- ``detail``: the same people over fine texture (gravel, grass, printed text, star fields), a
  hand-held shake and strong sensor noise (sigma 7, changing every frame): many more bits per
  frame, so H.264 decoding costs more, as it does for grainy low-light footage.

``make_benchmark_clip`` is the live benchmark's clip (the astronaut alone); it stays as it was.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

KINDS = ("pan", "detail")
SIZE = (1280, 720)
FPS = 30
CANVAS = (2560, 1280)  # (width, height) of the collage the camera moves over
NOISE = {"pan": 2.0, "detail": 7.0}
NOISE_BANK = 13  # distinct noise fields, cycled (x264 veryfast references one frame back)


def benchmark_clip(kind: str, frames: int, cache: Path) -> Path:
    """The ``kind`` clip with ``frames`` frames: from ``cache`` when it is there, else encoded."""
    if kind not in KINDS:
        raise ValueError(f"clip kind: expected one of {list(KINDS)}, got {kind!r}")
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:10]
    path = cache / f"{kind}-{frames}f-{digest}.mp4"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".part{os.getpid()}.mp4")
    try:
        encode(partial, camera_frames(kind, frames), frames)
        partial.replace(path)  # a run stopped half way never leaves a short clip behind
    finally:
        partial.unlink(missing_ok=True)
    return path


def encode(path: Path, frames: Iterator[np.ndarray], count: int, fps: int = FPS) -> None:
    """RGB frames -> H.264 (libx264 veryfast, crf 23, yuv420p) in an MP4."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i, rgb in zip(range(count), frames, strict=False):
            frame = av.VideoFrame.from_ndarray(rgb, "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def camera_frames(kind: str, frames: int) -> Iterator[np.ndarray]:
    """1280x720 RGB frames of a camera moving over ``collage(kind)``, with sensor noise."""
    canvas = collage(kind)
    ch, cw = canvas.shape[:2]
    rng = np.random.default_rng(1)
    sigma = NOISE[kind]
    bank = [
        np.clip(rng.normal(0, sigma, (SIZE[1], SIZE[0], 3)), -127, 127).astype(np.int8)
        for _ in range(NOISE_BANK)
    ]
    for i in range(frames):
        x, y, zoom = _camera(kind, i, cw, ch)
        w, h = round(SIZE[0] / zoom), round(SIZE[1] / zoom)
        crop = canvas[y : y + h, x : x + w]
        view = cv2.resize(crop, SIZE, interpolation=cv2.INTER_AREA)
        noisy = view.astype(np.int16) + bank[i % NOISE_BANK]
        yield np.clip(noisy, 0, 255).astype(np.uint8)


def _camera(kind: str, i: int, cw: int, ch: int) -> tuple[int, int, float]:
    """Top-left corner and zoom of frame ``i``: a slow sweep across the collage and back."""
    zoom = 1.15 + 0.15 * math.sin(2 * math.pi * i / 800)  # 1.0 .. 1.3
    w, h = SIZE[0] / zoom, SIZE[1] / zoom
    sweep = 0.5 - 0.5 * math.cos(2 * math.pi * i / 600)  # 0 .. 1 .. 0 every 20 s
    x = (cw - w) * sweep
    y = (ch - h) * (0.55 + 0.35 * math.sin(2 * math.pi * i / 450))
    if kind == "detail":  # a hand-held shake of a few pixels on top of the sweep
        x += 9 * math.sin(i * 1.7) + 5 * math.sin(i * 3.1)
        y += 7 * math.sin(i * 2.3) + 4 * math.cos(i * 4.7)
    x = min(max(0.0, x), cw - w - 1)
    y = min(max(0.0, y), ch - h - 1)
    return int(x), int(y), zoom


def collage(kind: str) -> np.ndarray:
    """The scene: people and objects from scikit-image placed on a ``kind`` background."""
    canvas = _background(kind)
    rgb = np.stack([data.camera()] * 3, axis=-1)
    _place(canvas, rgb, (40, 260), 1000)  # the cameraman, his face near (430, 440)
    _place(canvas, data.coffee(), (1080, 60), 560)
    _place(canvas, np.fliplr(data.astronaut()), (1160, 560), 720)  # mirrored, smaller
    _place(canvas, data.chelsea(), (1900, 120), 600)
    _place(canvas, data.rocket(), (1920, 620), 560)
    return canvas


def _place(canvas: np.ndarray, image: np.ndarray, at: tuple[int, int], width: int) -> None:
    h = round(image.shape[0] * width / image.shape[1])
    x, y = at
    h = min(h, canvas.shape[0] - y)
    resized = cv2.resize(image, (width, round(image.shape[0] * width / image.shape[1])))
    canvas[y : y + h, x : x + width] = resized[:h]


def _background(kind: str) -> np.ndarray:
    w, h = CANVAS
    if kind == "pan":  # a soft two-colour gradient: cheap to code
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        top, bottom = np.array([120, 150, 185], np.float32), np.array([70, 80, 60], np.float32)
        return np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8).copy()
    tiles = [data.gravel(), data.grass(), data.brick()]
    grey = np.concatenate(
        [np.concatenate([tiles[(r + c) % 3] for c in range(w // 512)], axis=1) for r in range(3)]
    )[:h, :w]
    tint = np.array([1.0, 0.9, 0.75], np.float32)
    canvas = (grey[..., None].astype(np.float32) * tint).astype(np.uint8)
    stars = cv2.resize(data.hubble_deep_field(), (1000, 872))
    canvas[h - 872 : h, w - 1000 :] = stars  # behind the cat and the rocket, around them
    page = np.stack([cv2.resize(data.page(), (768, 382))] * 3, axis=-1)
    canvas[0:382, 0:768] = page  # small print above the cameraman
    return canvas


def make_benchmark_clip(
    path: Path, frames: int = 720, size: tuple[int, int] = (1280, 720), fps: int = 30, gop: int = 0
) -> Path:
    """The live benchmark's clip: a camera moving over the astronaut, with sensor noise.

    ``gop`` > 0: a keyframe every ``gop`` frames (a live encoder's setting); 0: x264's own.
    """
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
