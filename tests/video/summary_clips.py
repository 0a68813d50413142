"""A clip with known content for the summary tests: grey, then the astronaut (her face in view),
then grey again, cut hard, so the face is visible for a known interval."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import skimage.data

FPS = 24
SIZE = 384  # the astronaut scaled to 384x384: her face is about 78 px wide


def write_face_interval_clip(path: Path, before: int = 12, face: int = 24, after: int = 12) -> Path:
    """``before`` grey frames, ``face`` frames of the astronaut, ``after`` grey frames, at
    24 fps: the face is on screen from ``before / 24`` s to ``(before + face) / 24`` s."""
    person = cv2.resize(skimage.data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    grey = np.full_like(person, 128)
    pictures = [grey] * before + [person] * face + [grey] * after
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, 90000)
        video.codec_context.thread_count = 1
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i * 90000 // FPS, video.time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def check_face_summary(summary: dict[str, Any], frames: int = 48) -> None:
    """The face clip's summary: one face track from frame 12 (0.5 s) to frame 35 (ends 1.5 s)."""
    assert summary["pipeline"] == "faces" and summary["frames"] == frames
    assert summary["step_s"] == pytest.approx(1 / 24, abs=1e-3)
    det = summary["detections"]
    assert det["tracked"] is True and det["max_per_frame"] == 1
    assert det["frames_with_detections"] == 24
    face = det["labels"]["face"]
    assert face["first_seen"] == {"t": 0.5, "frame": 12}
    assert face["last_seen"]["frame"] == 35
    assert face["ranges"] == [
        {"start": 0.5, "end": 1.5, "start_frame": 12, "end_frame": 35, "frames": 24}
    ]
    assert face["track_count"] == 1 and face["tracks"][0]["frames"] == 24
