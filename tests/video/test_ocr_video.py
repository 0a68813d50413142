"""The ``ocr`` video pipeline: text detection -> crops -> orientation -> recognition per frame.

A camera holds still over scikit-image's scanned page (enlarged so its lines are video-sized);
``fps:2`` keeps the frames at 0 s and 0.5 s, and each must read the page's words.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from skimage import data

from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.run import RunOptions, VideoRun
from video.media import make_clip

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def ocr_server(zoo_repository: Path) -> Iterator[LocalServer]:
    models = ("text-det", "text-cls", "text-rec")
    settings = ServerSettings(zoo_repository, "explicit", load_models=models)
    with LocalServer(settings) as local:
        yield local


def test_ocr_reads_the_page_at_two_frames_a_second(
    ocr_server: LocalServer, zoo_repository: Path, tmp_path: Path
) -> None:
    page = cv2.cvtColor(data.page(), cv2.COLOR_GRAY2RGB)
    page = cv2.resize(page, (page.shape[1] * 3, page.shape[0] * 3))
    clip = make_clip(
        tmp_path / "page.mp4", frames=24, fps=24, source=page, motion="static", audio=False
    )
    name, config = load_video_pipeline("ocr", zoo_repository)
    summary = VideoRun(ocr_server, name, config, [clip.path], RunOptions(tmp_path / "out")).run()
    lines = [json.loads(x) for x in (tmp_path / "out" / "page.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 12]  # the pipeline's own sample: fps:2
    assert summary.frames == 2
    for line in lines:
        words = " ".join(t["text"] for t in line["texts"])
        assert "markers" in words and "object" in words, words
        assert all(len(t["polygon"]) == 4 for t in line["texts"])
