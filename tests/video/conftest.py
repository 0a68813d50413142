"""Fixtures of the video pipeline tests: test clips (written once per session) and a server.

Clips are small (640x360, 24 to 48 frames) so that the whole tier runs in well under two
minutes on two cores; their ground truth (timestamps, keyframes, face boxes) comes from
``video.media``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from video.media import Clip, make_clip

# Irregular gaps in 1/90000 s ticks (from 1/60 s to 1/10 s): a variable-frame-rate input.
VFR_GAPS = (3000, 1500, 9000, 3750, 1500, 4500, 6000, 1500, 3000, 7500, 1500, 3750, 2250, 9000)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def pan_clip(clip_dir: Path) -> Clip:
    """24 frames at 24 fps, the camera panning over the astronaut, with AAC audio."""
    return make_clip(clip_dir / "pan.mp4", frames=24, motion="pan")


@pytest.fixture(scope="session")
def zoom_clip(clip_dir: Path) -> Clip:
    return make_clip(clip_dir / "zoom.mp4", frames=24, motion="zoom")


@pytest.fixture(scope="session")
def gop_clip(clip_dir: Path) -> Clip:
    """48 frames at 24 fps with a keyframe on every 12th frame: for the sampling modes."""
    return make_clip(clip_dir / "gop12.mp4", frames=48, gop=12, audio=False)


@pytest.fixture(scope="session")
def vfr_clip(clip_dir: Path) -> Clip:
    pts = [0]
    for gap in VFR_GAPS:
        pts.append(pts[-1] + gap)
    return make_clip(clip_dir / "vfr.mp4", vfr_pts=pts, motion="pan")


@pytest.fixture(scope="session")
def zoo_models(zoo_repository: Path) -> tuple[str, ...]:
    """The zoo models the video tests load."""
    return ("faces", "person-mask", "fruc")


@pytest.fixture(scope="module")
def video_server(zoo_repository: Path, zoo_models: tuple[str, ...]) -> Iterator[LocalServer]:
    """One in-process server per test module: model loading costs seconds."""
    settings = ServerSettings(
        repository=zoo_repository, model_control_mode="explicit", load_models=zoo_models
    )
    with LocalServer(settings) as local:
        yield local
