"""The ``quality`` video pipeline end to end: per-frame BRISQUE scores and defect flags.

The clip is made here with PyAV: a camera panning over the astronaut (40 frames at 12 fps,
320x240), with four segments put in at known frames: a Gaussian blur, black frames, frames
that repeat the one before them (a freeze) and JPEG-damaged (blocky) frames. Every line must
carry exactly the flags of its frame, in-process and through a decode worker process (as a
server's jobs decode).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.errors import ConfigError
from frameserve.serving.local import LocalServer
from frameserve.video.config import load_video_pipeline, parse_video_pipeline
from frameserve.video.defects import DefectDetector, DefectsSpec
from frameserve.video.run import RunOptions, VideoRun

pytestmark = pytest.mark.timeout(120)

FPS = 12
FRAMES = 40
SIZE = (320, 240)
BLURRED = range(6, 10)
BLACK = range(12, 18)
FROZEN = range(24, 30)  # each repeats frame 23
BLOCKY = range(30, 34)


@pytest.fixture(scope="module")
def zoo_models() -> tuple[str, ...]:
    return ("quality",)


def _pan(i: int) -> np.ndarray:
    a = skimage.data.astronaut()
    x = 8 + 2 * i
    return cv2.resize(a[40:424, x : x + 384], SIZE, interpolation=cv2.INTER_AREA)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR))


def pictures() -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for i in range(FRAMES):
        if i in BLACK:
            frame = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        elif i in FROZEN:
            frame = frames[FROZEN.start - 1]
        elif i in BLURRED:
            frame = cv2.GaussianBlur(_pan(i), (0, 0), 4.0)
        elif i in BLOCKY:
            frame = _jpeg(_pan(i), 4)
        else:
            frame = _pan(i)
        frames.append(frame)
    return frames


def expected(i: int) -> list[str]:
    for flag, frames in (("black", BLACK), ("frozen", FROZEN), ("blurry", BLURRED),
                         ("blocky", BLOCKY)):  # fmt: skip
        if i in frames:
            return [flag]
    return []


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quality-clip") / "defects.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"crf": "12", "preset": "veryfast"})
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.codec_context.thread_type = "FRAME"  # one slice: the same bytes on any machine
        stream.codec_context.thread_count = 2
        for i, image in enumerate(pictures()):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def run(server: LocalServer, repository: Path, clip: Path, out: Path, **kw: Any) -> list[Any]:
    name, config = load_video_pipeline("quality", repository)
    VideoRun(server, name, config, [clip], RunOptions(out=out), **kw).run()
    return [json.loads(line) for line in (out / "defects.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "decode-worker"])
def test_each_frame_carries_its_own_defects(
    video_server: LocalServer, zoo_repository: Path, clip: Path, tmp_path: Path, isolate: bool
) -> None:
    lines = run(video_server, zoo_repository, clip, tmp_path, isolate=isolate)
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["defects"] for line in lines] == [expected(i) for i in range(FRAMES)]
    black = [line["pts"] for line in lines if line["defects"] == ["black"]]
    assert black == pytest.approx([i / FPS for i in BLACK])  # 1.0 s to 1.42 s


def test_scores_are_lower_where_the_picture_is_damaged(
    video_server: LocalServer, zoo_repository: Path, clip: Path, tmp_path: Path
) -> None:
    lines = run(video_server, zoo_repository, clip, tmp_path)
    score = {line["frame"]: line["quality"]["score"] for line in lines}
    assert all(line["quality"]["method"] == "brisque" for line in lines)
    clean = [score[i] for i in range(FRAMES) if not expected(i)]
    assert min(clean) > 70
    for i in [*BLURRED, *BLOCKY]:
        assert score[i] < min(clean) - 20, i
    assert all(score[i] == 0.0 for i in BLACK)  # nothing to score: 0, raw null
    assert all(lines[i]["quality"]["raw"] is None for i in BLACK)


def test_flags_follow_sampling_and_settings(clip: Path) -> None:
    """The detector alone, on every other decoded frame, with blur and black switched off."""
    detector = DefectDetector(DefectsSpec(black=False, blurry=False))
    flags = {}
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 2 == 0:
                flags[i] = detector.inspect(frame, frame.pts)
    assert flags[6] == []  # blur is off
    # black is off: a black frame that repeats the one before is frozen like any other
    assert [i for i, f in flags.items() if f == ["frozen"]] == [14, 16, 26, 28]
    assert [i for i, f in flags.items() if f == ["blocky"]] == [30, 32]
    assert all(flags[i] == [] for i in flags if i not in (14, 16, 26, 28, 30, 32))


def test_video_out_draws_the_score(
    video_server: LocalServer, zoo_repository: Path, clip: Path, tmp_path: Path
) -> None:
    name, config = load_video_pipeline("quality", zoo_repository)
    VideoRun(video_server, name, config, [clip], RunOptions(out=tmp_path, video_out=True)).run()
    with av.open(str(tmp_path / "defects.mp4")) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    # the caption block (top left) is drawn over the picture
    assert np.abs(first[:30, :150].astype(int) - pictures()[0][:30, :150]).mean() > 20


def test_defects_are_refused_where_they_do_not_apply() -> None:
    with pytest.raises(ConfigError, match="analysis pipelines only"):
        parse_video_pipeline({"interpolate": {"model": "fruc"}, "defects": {}}, "p.yaml")
    with pytest.raises(ConfigError, match="blur_treshold"):
        parse_video_pipeline(
            {"steps": [{"model": "quality"}], "defects": {"blur_treshold": 3}}, "p.yaml"
        )


def test_the_summary_reports_each_defect_at_its_time(
    video_server: LocalServer, zoo_repository: Path, clip: Path, tmp_path: Path
) -> None:
    """End to end: the flags per frame become the summary's time ranges per defect kind."""
    run(video_server, zoo_repository, clip, tmp_path)
    summary = json.loads((tmp_path / "defects.summary.json").read_text())
    defects = summary["quality"]["defects"]
    for kind in ("black", "frozen", "blocky", "blurry"):
        flagged = [i for i in range(FRAMES) if kind in expected(i)]
        runs: list[list[int]] = []
        for i in flagged:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
        got = [(r["start_frame"], r["end_frame"]) for r in defects[kind]["ranges"]]
        assert got == [(r[0], r[-1]) for r in runs], kind
    [black] = defects["black"]["ranges"]
    assert black["start"] == pytest.approx(BLACK[0] / FPS, abs=1e-3)  # 1.0 s
    assert black["end"] == pytest.approx((BLACK[-1] + 1) / FPS, abs=1e-3)  # 1.5 s
    assert summary["quality"]["worst_frame"]["frame"] in [*BLURRED, *BLACK, *BLOCKY]
