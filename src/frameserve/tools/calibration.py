"""Calibration frames for ``frameserve quantize``: a folder of images or a video, split in two.

Frames are read evenly spread over the source. Of those read, every k-th one (about every
fifth) is held out to compare the source and INT8 versions; the rest calibrate. Nothing is kept
in memory between passes: each pass decodes the frames again (NNCF may make several), so a
long 1080p video costs decoding time, not gigabytes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from frameserve.errors import InvalidInput
from frameserve.processing.image import decode_image, sniff_format
from frameserve.video.decode import VideoSource, open_video
from frameserve.video.frames import Sampling
from frameserve.video.scaler import full_rgb

MIN_HELD_OUT = 20
HELD_OUT_SHARE = 0.2  # of a source shorter than subset + max(MIN_HELD_OUT, subset / 4)


class FrameSource(Protocol):
    """Frames of a calibration source, by index (0 .. ``count`` - 1)."""

    path: Path
    count: int

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """The RGB frames at ``indices`` (ascending), in that order."""
        ...


class ImageFolder:
    """The images of one folder (not its subfolders), sorted by name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        entries = sorted(p for p in path.iterdir() if p.is_file())
        self.files = [p for p in entries if _is_image(p)]
        if not self.files:
            found = [p.name for p in sorted(path.iterdir())]
            shown = ", ".join(found[:10]) + (
                f" and {len(found) - 10} more" if len(found) > 10 else ""
            )
            raise InvalidInput(
                f"--calibration {path}: expected a folder of images (JPEG, PNG, WebP, BMP, TIFF) "
                f"or a video, found {shown or 'nothing'}"
            )
        self.count = len(self.files)

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        for i in indices:
            file = self.files[i]
            yield decode_image(file.read_bytes(), source=str(file))


def _is_image(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return sniff_format(f.read(16)) is not None
    except OSError:
        return False


class VideoFrames:
    """The frames of a video's first video stream; each pass decodes it from the start."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = path
        self.threads = threads
        self.count = _count_frames(path)
        if self.count == 0:
            raise InvalidInput(f"--calibration {path}: expected a video with frames, found none")

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        wanted = set(indices)
        last = max(wanted, default=-1)
        source = VideoSource(self.path, 0, Sampling(), self.threads)
        for frame in source.frames(threading.Event()):
            if frame.index in wanted and (image := full_rgb(frame)) is not None:
                yield image
            if frame.index >= last:
                return


def _count_frames(path: Path) -> int:
    """Frames of the first video stream, counted from its packets (nothing decoded)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0 and p.pts is not None)
    finally:
        container.close()


def open_calibration(path: Path, threads: int = 2) -> FrameSource:
    """A folder of images or a video file; clear errors for anything else."""
    if path.is_dir():
        return ImageFolder(path)
    if not path.exists():
        raise InvalidInput(f"--calibration {path}: no such file or folder")
    return VideoFrames(path, threads)


@dataclass(frozen=True, slots=True)
class Split:
    """Which frame indices of a source calibrate and which are held out (ascending)."""

    calibration: tuple[int, ...]
    held_out: tuple[int, ...]


def split_frames(available: int, subset: int) -> Split:
    """Spread ``subset`` calibration frames and the held-out ones over ``available`` frames."""
    if available < 2:
        raise InvalidInput(
            f"--calibration: expected at least 2 frames (1 to calibrate, 1 to check), "
            f"got {available}"
        )
    held = max(MIN_HELD_OUT, math.ceil(subset / 4))
    total = subset + held
    if total > available:  # a short source: hold out 20 % of it
        total = available
        held = max(1, round(available * HELD_OUT_SHARE))
    picked = np.linspace(0, available - 1, total).round().astype(int).tolist()
    held_at = {math.floor((j + 0.5) * total / held) for j in range(held)}
    return Split(
        calibration=tuple(v for k, v in enumerate(picked) if k not in held_at),
        held_out=tuple(v for k, v in enumerate(picked) if k in held_at),
    )
