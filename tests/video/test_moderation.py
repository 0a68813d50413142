"""The built-in ``moderation`` pipeline: the zoo's ``nsfw`` on a clip made from the astronaut.

Each sampled frame's JSON line has the detections and a verdict (the moderation contract);
her face is found where the clip put it and the verdict is ``safe``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.frames import Sampling
from frameserve.video.run import RunOptions, VideoRun
from video.media import Clip, make_clip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(zoo_repository: Path) -> Iterator[LocalServer]:
    settings = ServerSettings(
        repository=zoo_repository, model_control_mode="explicit", load_models=("nsfw",)
    )
    with LocalServer(settings) as local:
        yield local


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """2 s at 24 fps, zooming in on the astronaut: ``fps:2`` samples 4 frames."""
    folder = tmp_path_factory.mktemp("moderation")
    return make_clip(folder / "zoom.mp4", frames=48, motion="zoom", audio=False)


def box_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_moderation_pipeline_writes_detections_and_a_verdict(
    server: LocalServer, zoo_repository: Path, clip: Clip, tmp_path: Path
) -> None:
    name, config = load_video_pipeline("moderation", zoo_repository)
    assert config.models == ["nsfw"] and config.track is None
    run = VideoRun(server, name, config, [clip.path], RunOptions(out=tmp_path, video_out=True))
    summary = run.run()
    lines = [json.loads(line) for line in (tmp_path / "zoom.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 12, 24, 36]  # fps:2 of 24 fps
    faces = clip.face_boxes()
    for line in lines:
        assert set(line) == {"frame", "pts", "pts_ticks", "detections", "verdict"}
        assert line["verdict"] == {"label": "safe", "labels": [], "score": 0.0}
        found = [d["box"] for d in line["detections"] if d["label"] == "FACE_FEMALE"]
        assert found, line
        best = max(box_iou(b, list(faces[line["frame"]])) for b in found)
        assert best > 0.5, (line["frame"], found, faces[line["frame"]])
    # --video-out draws the boxes and the verdict on the sampled frames
    with av.open(str(tmp_path / "zoom.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == len(lines)
    assert summary.frames == len(lines)


def test_other_sampling_keeps_the_contract(
    server: LocalServer, zoo_repository: Path, clip: Clip, tmp_path: Path
) -> None:
    name, config = load_video_pipeline("moderation", zoo_repository)
    options = RunOptions(out=tmp_path, sample=Sampling.parse("every:24"))
    VideoRun(server, name, config, [clip.path], options).run()
    lines = [json.loads(line) for line in (tmp_path / "zoom.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 24]
    assert all(line["verdict"]["label"] == "safe" for line in lines)


def test_a_tracked_moderation_pipeline_keeps_ids_and_verdicts(
    server: LocalServer, zoo_repository: Path, clip: Clip, tmp_path: Path
) -> None:
    pipeline = tmp_path / "tracked.yaml"
    pipeline.write_text(
        "steps: [{model: nsfw}]\nsample: fps:4\ntrack: {lost_seconds: 1.0, min_iou: 0.1}\n"
    )
    name, config = load_video_pipeline(str(pipeline), zoo_repository)
    VideoRun(server, name, config, [clip.path], RunOptions(out=tmp_path / "out")).run()
    lines = [json.loads(x) for x in (tmp_path / "out" / "zoom.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(line["verdict"]["label"] == "safe" for line in lines)
    ids = {
        d["track_id"] for line in lines for d in line["detections"] if d["label"] == "FACE_FEMALE"
    }
    assert len(ids) == 1, lines  # her face keeps one id through the zoom
