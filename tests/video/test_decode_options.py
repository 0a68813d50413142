"""A pipeline's ``decode`` block: FFmpeg decoder shortcuts, used only where results hold.

The shipped ``faces`` pipeline decodes B-frames without the deblocking filter. These tests
show that the option reaches FFmpeg (the B-frames' pixels change, the others do not) and that
the faces found agree with a full decode within the rule the quantize gate uses (mean box IoU
at least 0.99, the same faces on every frame).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from av.video.frame import PictureType

from frameserve.errors import ConfigError
from frameserve.serving.local import LocalServer
from frameserve.video.config import load_video_pipeline, parse_video_pipeline
from frameserve.video.decode import VideoSource
from frameserve.video.frames import Sampling
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.scaler import full_rgb
from video.media import Clip, make_clip

pytestmark = pytest.mark.timeout(120)

MIN_MEAN_IOU = 0.99  # as quantize's gate: a task-metric drop of at most 0.01


@pytest.fixture(scope="module")
def bframe_clip(clip_dir: Path) -> Clip:
    """48 frames at 1280x720 with two B-frames between references: what cameras and
    encoders usually make (the other test clips have none)."""
    return make_clip(
        clip_dir / "bframes.mp4", frames=48, size=(1280, 720), motion="zoom", bframes=2
    )


def pictures(path: Path, options: dict[str, str]) -> list[tuple[str, np.ndarray]]:
    source = VideoSource(path, 0, Sampling(), 2, codec_options=options)
    out = []
    for frame in source.frames(threading.Event()):
        kind = PictureType(frame.picture.pict_type).name
        image = full_rgb(frame)
        assert image is not None
        out.append((kind, image))
    return out


def test_skip_loop_filter_changes_only_the_frames_it_names(bframe_clip: Clip) -> None:
    full = pictures(bframe_clip.path, {})
    fast = pictures(bframe_clip.path, {"skip_loop_filter": "bidir"})
    assert [k for k, _ in full] == [k for k, _ in fast]
    kinds = {k for k, _ in full}
    assert "B" in kinds, f"expected B-frames in the clip, got {kinds}"
    for (kind, a), (_, b) in zip(full, fast, strict=True):
        differs = bool(np.any(a != b))
        if kind == "B":
            assert differs, "a B-frame decoded the same without its loop filter: no effect"
        else:
            assert not differs, f"a {kind} frame changed: only B-frames may"


def boxes(out: Path, clip: Clip) -> list[list[list[float]]]:
    lines = (out / f"{clip.path.stem}.jsonl").read_text().splitlines()
    return [[d["box"] for d in json.loads(line)["detections"]] for line in lines]


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_the_faces_pipeline_decode_block_keeps_its_results(
    video_server: LocalServer, zoo_repository: Path, bframe_clip: Clip, tmp_path: Path
) -> None:
    name, shipped = load_video_pipeline("faces", zoo_repository)
    assert shipped.decode.codec_options() == {"skip_loop_filter": "bidir"}
    full = shipped.model_copy(update={"decode": type(shipped.decode)()})
    for config, out in ((shipped, tmp_path / "fast"), (full, tmp_path / "full")):
        VideoRun(video_server, name, config, [bframe_clip.path], RunOptions(out=out)).run()
    fast_boxes, full_boxes = (
        boxes(tmp_path / "fast", bframe_clip),
        boxes(tmp_path / "full", bframe_clip),
    )
    assert [len(f) for f in fast_boxes] == [len(f) for f in full_boxes]
    assert sum(len(f) for f in full_boxes) >= len(full_boxes)  # the face is found
    ious = [
        iou(a, b)
        for fa, fb in zip(fast_boxes, full_boxes, strict=True)
        for a, b in zip(fa, fb, strict=True)
    ]
    assert float(np.mean(ious)) >= MIN_MEAN_IOU, f"mean box IoU {np.mean(ious):.4f}"


def test_a_bad_decode_option_names_the_field() -> None:
    with pytest.raises(ConfigError, match="decode.skip_loop_filter"):
        parse_video_pipeline(
            {"steps": [{"model": "faces"}], "decode": {"skip_loop_filter": "sometimes"}}, "x.yaml"
        )


def test_default_decode_threads_leave_the_models_half_of_the_budget() -> None:
    from frameserve.video.decode import default_decode_threads

    assert default_decode_threads(2, 1) == 1  # the runtime keeps both cores busy already
    assert default_decode_threads(16, 1) == 8
    assert default_decode_threads(16, 4) == 2
    assert default_decode_threads(2, 4) == 1  # never none
    assert default_decode_threads(8, 4, filters=True) == 8  # the filter graph is the work
