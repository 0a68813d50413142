"""A noisy test clip whose clean picture is known: the astronaut with fresh Gaussian noise on
every frame (near-lossless H.264, so the noise survives) and an AAC tone beside it, for the
filter and ``enhance`` tests ("less noisy" is a PSNR against the clean picture)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data

SIZE = (640, 360)
FRAMES = 24
TIME_BASE = Fraction(1, 90000)
TICKS = 3750  # 24 fps
NOISE_SIGMA = 12.0
AUDIO_RATE = 48000


@dataclass(frozen=True)
class NoisyClip:
    path: Path
    clean: np.ndarray  # the picture every frame shows before the noise (RGB)
    pts: list[int]  # in TIME_BASE


def write_noisy_clip(path: Path, size: tuple[int, int] = SIZE, frames: int = FRAMES) -> NoisyClip:
    """H.264 (near-lossless, so the noise survives) plus an AAC stereo tone."""
    clean = cv2.resize(skimage.data.astronaut(), size, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(19)
    pts = [i * TICKS for i in range(frames)]
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=24, options={"crf": "14", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        video.time_base = video.codec_context.time_base = TIME_BASE
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        for p in pts:
            noisy = np.clip(clean + rng.normal(0, NOISE_SIGMA, clean.shape), 0, 255)
            frame = av.VideoFrame.from_ndarray(noisy.astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = p, TIME_BASE
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        total, done = math.ceil(frames * TICKS * TIME_BASE * AUDIO_RATE), 0
        while done < total:
            n = min(1024, total - done)
            t = (done + np.arange(n)) / AUDIO_RATE
            tone = 0.3 * np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
            sound = av.AudioFrame.from_ndarray(tone, format="fltp", layout="stereo")
            sound.sample_rate, sound.pts = AUDIO_RATE, done
            out.mux(audio.encode(sound))
            done += n
        out.mux(audio.encode(None))
    return NoisyClip(path, clean, pts)


def decoded(path: Path) -> tuple[list[Fraction], list[np.ndarray]]:
    """Presentation times and RGB pictures of every video frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [
            (f.pts * f.time_base, f.to_ndarray(format="rgb24")) for f in container.decode(stream)
        ]
    return [t for t, _ in frames], [im for _, im in frames]


def audio(path: Path) -> tuple[list[bytes], float]:
    """Audio packets' payloads and the audio stream's length in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size]
        end = max((p.pts + p.duration) * p.time_base for p in packets)
        return [bytes(p) for p in packets], float(end - packets[0].pts * packets[0].time_base)


def psnr(images: list[np.ndarray], clean: np.ndarray) -> float:
    mse = np.mean([(im.astype(np.float64) - clean) ** 2 for im in images])
    return float(10 * np.log10(255.0**2 / mse))
