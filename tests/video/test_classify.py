"""Classification over video: the built-in ``classify`` pipeline with a user-style classifier
(an ONNX file and a label file, made in ``classify_models``), a classifier model run as its own
pipeline (``--pipeline <model>``, the zoo's ``text-cls``) with the default summary of its result
type, and label files that do not fit the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from frameserve.errors import FrameserveError
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.run import RunOptions, VideoRun
from video.classify_models import LABELS, colour_classifier, write_colour_clip
from video.media import make_clip

pytestmark = pytest.mark.timeout(180)


def run(local: LocalServer, repo: Path, pipeline: str, clip: Path, out: Path) -> dict:
    name, config = load_video_pipeline(pipeline, repo)
    VideoRun(local, name, config, [clip], RunOptions(out=out)).run()
    return dict(json.loads((out / f"{clip.stem}.summary.json").read_text()))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, zoo_repository: Path) -> Path:
    repo = tmp_path_factory.mktemp("classify") / "models"
    colour_classifier(repo / "classifier")
    shutil.copytree(zoo_repository / "text-cls", repo / "text-cls")  # small: 0.6 MB
    return repo


@pytest.fixture(scope="module")
def local(repo: Path) -> LocalServer:
    settings = ServerSettings(
        repository=repo, model_control_mode="explicit", load_models=("classifier", "text-cls")
    )
    with LocalServer(settings) as server:
        yield server


def test_the_classify_pipeline_summarises_a_users_classifier(
    local: LocalServer, repo: Path, tmp_path: Path
) -> None:
    # 1 s red, 2 s green, 1 s blue; classify samples twice a second: 2 red, 4 green, 2 blue
    clip = write_colour_clip(tmp_path / "colours.mp4", [("red", 24), ("green", 48), ("blue", 24)])
    summary = run(local, repo, "classify", clip, tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / "colours.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 12, 24, 36, 48, 60, 72, 84]
    assert [line["classes"][0]["label"] for line in lines] == ["red"] * 2 + ["green"] * 4 + [
        "blue"
    ] * 2
    assert all(len(line["classes"]) == 2 for line in lines)  # top_k of the model.yaml
    assert summary["pipeline"] == "classify" and summary["frames"] == 8
    top = summary["classes"]["top"]
    assert top[0]["label"] == "green" and top[0]["share"] == 0.5 and top[0]["top1_frames"] == 4
    assert top[0]["mean_score"] == pytest.approx(0.5, abs=0.01)
    assert {t["label"]: t["share"] for t in top[1:]} == {"red": 0.25, "blue": 0.25}
    assert set(summary) == {"pipeline", "frames", "start", "end", "step_s", "classes"}


def test_a_classifier_model_as_its_own_pipeline_gets_a_classes_summary(
    local: LocalServer, repo: Path, tmp_path: Path
) -> None:
    line = np.full((48, 320, 3), 255, np.uint8)
    cv2.putText(line, "frameserve video", (6, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    upright = make_clip(
        tmp_path / "upright.mp4", frames=6, size=(320, 48), motion="static", source=line,
        audio=False,
    )  # fmt: skip
    summary = run(local, repo, "text-cls", upright.path, tmp_path / "out")
    assert summary["pipeline"] == "text-cls" and summary["frames"] == 6
    [first, *_] = summary["classes"]["top"]
    assert first["label"] == "0" and first["share"] == 1.0
    turned = make_clip(
        tmp_path / "turned.mp4", frames=6, size=(320, 48), motion="static",
        source=np.ascontiguousarray(line[::-1, ::-1]), audio=False,
    )  # fmt: skip
    summary = run(local, repo, "text-cls", turned.path, tmp_path / "out")
    assert summary["classes"]["top"][0]["label"] == "180"


def test_a_label_file_that_does_not_fit_fails_at_load(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    colour_classifier(repo / "short", labels=LABELS[:2])
    settings = ServerSettings(
        repository=repo, model_control_mode="explicit", load_models=("short",)
    )
    with pytest.raises(FrameserveError) as caught, LocalServer(settings):
        pass
    message = str(caught.value)
    assert "postprocess.labels_file (labels.txt): expected 3 names" in message, message
    assert "got 2" in message
    yaml = (repo / "short" / "model.yaml").read_text()
    (repo / "short" / "model.yaml").write_text(
        yaml.replace("labels_file: labels.txt", "labels_file: labels.txt, labels: [a]")
    )
    both = "either labels .a list. or labels_file, not both"
    with pytest.raises(FrameserveError, match=both), LocalServer(settings):
        pass
