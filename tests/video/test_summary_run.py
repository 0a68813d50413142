"""Summaries of a clip with known content through the real ``faces`` pipeline, as a user runs
``frameserve video run``: the face is on screen from 0.5 s to 1.5 s, and the summary says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from video.summary_clips import check_face_summary, write_face_interval_clip

pytestmark = pytest.mark.timeout(180)

FRAMESERVE = Path(sys.executable).parent / "frameserve"


def test_video_run_writes_the_summary_next_to_the_results(
    zoo_repository: Path, tmp_path: Path
) -> None:
    clip = write_face_interval_clip(tmp_path / "face.mp4")
    out = tmp_path / "out"
    done = subprocess.run(
        [str(FRAMESERVE), "video", "run", str(clip), "--pipeline", "faces",
         "--repository", str(zoo_repository), "--out", str(out), "--profile"],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [stream] = json.loads(done.stdout)["streams"]
    assert Path(stream["summary"]) == out / "face.summary.json"
    check_face_summary(json.loads((out / "face.summary.json").read_text()))


def test_a_pipeline_with_summary_false_writes_none(zoo_repository: Path, tmp_path: Path) -> None:
    clip = write_face_interval_clip(tmp_path / "face.mp4", 2, 2, 2)
    pipeline = tmp_path / "quiet.yaml"
    pipeline.write_text("steps: [{model: faces}]\nsummary: false\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [str(FRAMESERVE), "video", "run", str(clip), "--pipeline", str(pipeline),
         "--repository", str(zoo_repository), "--out", str(out)],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "face.jsonl").is_file() and not (out / "face.summary.json").exists()
