"""``run_isolated``: one call in a spawned child, its result, its errors, its death, its limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from frameserve.errors import VideoError
from frameserve.video.decode import probe
from frameserve.video.worker import WorkerDied, run_isolated
from video.media import make_clip, write_not_a_video


def test_the_result_comes_back(tmp_path: Path) -> None:
    make_clip(tmp_path / "clip.mp4", frames=4, size=(160, 120), audio=False)
    info = run_isolated(probe, tmp_path / "clip.mp4", name="t-probe", doing="probing")
    assert (info.width, info.height) == (160, 120)
    assert info == probe(tmp_path / "clip.mp4")


def test_an_error_of_ours_comes_back_as_it_was(tmp_path: Path) -> None:
    write_not_a_video(tmp_path / "still.mp4", "png")
    with pytest.raises(VideoError) as err:
        run_isolated(probe, tmp_path / "still.mp4", name="t-probe", doing="probing")
    with pytest.raises(VideoError) as here:
        probe(tmp_path / "still.mp4")
    assert str(err.value) == str(here.value)


def test_a_child_that_aborts_is_worker_died() -> None:
    with pytest.raises(WorkerDied, match="killed by SIGABRT while reading the header of x"):
        run_isolated(os.abort, name="t-abort", doing="reading the header of x")


def test_a_child_past_its_limit_is_stopped() -> None:
    started = time.monotonic()
    with pytest.raises(VideoError, match="sleeping: expected to take at most 0.5 s"):
        run_isolated(time.sleep, 30, name="t-sleep", doing="sleeping", timeout_s=0.5)
    assert time.monotonic() - started < 20  # killed, not waited for
