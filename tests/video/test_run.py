"""``VideoRun`` end to end, in process: real clips (PyAV), real zoo models, real sinks.

Every clip films the astronaut with a known camera motion (``video.media``), so each test
knows where the face is, which frames exist and at which timestamps; the outputs (JSON lines,
mask polygons, re-encoded MP4) are read back with PyAV and compared against that truth.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from frameserve.errors import FrameserveError, InvalidInput, VideoError
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.frames import Sampling
from frameserve.video.masks import fill_polygons
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.sinks import frame_fields
from frameserve.video.streams import RunSummary
from video.media import Clip, corrupt_clip, make_clip, write_bad_input

pytestmark = pytest.mark.timeout(120)  # a hang fails the test instead of the whole session


# -- helpers ------------------------------------------------------------------------------------
def run_video(
    local: LocalServer,
    repository: Path,
    pipeline: str,
    inputs: list[Path],
    out: Path,
    sample: str | None = None,
    **options: Any,
) -> RunSummary:
    name, config = load_video_pipeline(pipeline, repository)
    sampling = Sampling.parse(sample) if sample is not None else None
    run = VideoRun(local, name, config, inputs, RunOptions(out=out, sample=sampling, **options))
    return run.run()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def box_iou(a: Any, b: Any) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    h = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = w * h
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def decoded_video(path: Path) -> tuple[Fraction, tuple[int, int], list[int]]:
    """Time base, size and the pts of every decoded frame of the first video stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        pts = [frame.pts for frame in container.decode(stream)]
        return Fraction(stream.time_base), (stream.width, stream.height), pts


def audio_packets(path: Path) -> tuple[Fraction, list[tuple[int, int, bytes]]]:
    """Time base and (pts, dts, payload) of every audio packet, in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.time_base is not None
        packets = [(p.pts, p.dts, bytes(p)) for p in container.demux(stream) if p.size]
        return Fraction(stream.time_base), packets


def assert_audio_copied(clip: Clip, output: Path) -> None:
    """The output holds the clip's audio packets unchanged: count, bytes, pts and dts."""
    assert clip.audio is not None
    source_base, source = audio_packets(clip.path)
    output_base, copied = audio_packets(output)
    assert len(source) == clip.audio.packets
    assert len(copied) == len(source)
    assert output_base == source_base
    assert [p[2] for p in copied] == [p[2] for p in source]  # the same bytes
    assert [p[:2] for p in copied] == [p[:2] for p in source]  # at the same pts and dts


def assert_lines_match_clip(lines: list[dict[str, Any]], clip: Clip, frames: list[int]) -> None:
    """The JSON lines are exactly ``frames`` of ``clip``, with the clip's timestamps."""
    assert [line["frame"] for line in lines] == frames
    assert [line["pts_ticks"] for line in lines] == [clip.pts[i] for i in frames]
    for line in lines:
        assert line["pts"] == pytest.approx(float(line["pts_ticks"] * clip.time_base))


def first_at_or_after_ticks(times: list[Fraction], fps: Fraction) -> list[int]:
    """Indices ``fps:F`` must keep: the first frame at or after each tick t0 + k/F."""
    kept: list[int] = []
    t0, k = times[0], 0
    while t0 + Fraction(k) / fps <= times[-1]:
        tick = t0 + Fraction(k) / fps
        index = next(i for i, t in enumerate(times) if t >= tick)
        if index not in kept:
            kept.append(index)
        k += 1
    return kept


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


# -- faces: boxes and track ids -----------------------------------------------------------------
@pytest.mark.parametrize("clip_name", ["pan_clip", "zoom_clip"])
def test_face_box_and_track_id_follow_the_motion(
    clip_name: str,
    request: pytest.FixtureRequest,
    video_server: LocalServer,
    zoo_repository: Path,
    out: Path,
) -> None:
    clip: Clip = request.getfixturevalue(clip_name)
    summary = run_video(video_server, zoo_repository, "faces", [clip.path], out)

    lines = read_jsonl(out / f"{clip.path.stem}.jsonl")
    assert_lines_match_clip(lines, clip, list(range(clip.frames)))
    truth = clip.face_boxes()
    track_ids = set()
    for line in lines:
        faces = line["detections"]
        assert len(faces) == 1, f"frame {line['frame']}: expected one face, got {faces}"
        iou = box_iou(faces[0]["box"], truth[line["frame"]])
        assert iou > 0.5, f"frame {line['frame']}: IoU {iou:.2f} with {truth[line['frame']]}"
        track_ids.add(faces[0]["track_id"])
    assert len(track_ids) == 1, f"expected one track id for the whole clip, got {track_ids}"
    assert summary.frames == clip.frames
    assert summary.streams[0].written == clip.frames


def test_mask_track_on_a_faces_pipeline_is_refused(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, out: Path
) -> None:
    with pytest.raises(InvalidInput, match=r"--mask-track.*faces.*person-mask"):
        run_video(video_server, zoo_repository, "faces", [pan_clip.path], out, mask_track=True)
    assert not (out / "pan.masks.jsonl").exists()


# -- person-mask: the mask track ----------------------------------------------------------------
def test_mask_track_covers_the_person(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, out: Path
) -> None:
    summary = run_video(
        video_server, zoo_repository, "person-mask", [pan_clip.path], out, mask_track=True
    )
    assert summary.streams[0].masks == out / "pan.masks.jsonl"
    lines = read_jsonl(out / "pan.jsonl")
    tracks = read_jsonl(out / "pan.masks.jsonl")
    assert_lines_match_clip(lines, pan_clip, list(range(pan_clip.frames)))
    assert_lines_match_clip(tracks, pan_clip, list(range(pan_clip.frames)))

    width, height = pan_clip.size
    for line, track, face in zip(lines, tracks, pan_clip.face_boxes(), strict=True):
        png = base64.b64decode(line["mask"]["png"])
        mask = np.asarray(Image.open(io.BytesIO(png)))
        assert mask.shape == (height, width)
        polygons = [np.asarray(p) for p in track["polygons"]]
        assert polygons, f"frame {track['frame']}: no polygon"
        filled = fill_polygons(polygons, height, width)

        x1, y1, x2, y2 = np.rint(face).astype(int)
        covered = float((filled[y1:y2, x1:x2] > 0).mean())
        assert covered > 0.8, f"frame {track['frame']}: polygons cover {covered:.0%} of the face"
        iou = mask_iou(filled, mask)
        assert iou > 0.9, f"frame {track['frame']}: polygons vs JSONL mask IoU {iou:.3f}"


# -- frames, timestamps, video and audio out ----------------------------------------------------
@pytest.fixture(scope="module")
def faces_video_out(
    video_server: LocalServer,
    zoo_repository: Path,
    pan_clip: Clip,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """One faces run with ``video_out`` over the pan clip, read by several tests."""
    out = tmp_path_factory.mktemp("faces-video-out")
    run_video(video_server, zoo_repository, "faces", [pan_clip.path], out, video_out=True)
    return out


def test_frame_count_and_timestamps_match_the_input(faces_video_out: Path, pan_clip: Clip) -> None:
    lines = read_jsonl(faces_video_out / "pan.jsonl")
    assert_lines_match_clip(lines, pan_clip, list(range(pan_clip.frames)))

    time_base, size, pts = decoded_video(faces_video_out / "pan.mp4")
    assert size == pan_clip.size
    assert len(pts) == pan_clip.frames
    assert [p * time_base for p in pts] == list(pan_clip.times)
    with av.open(str(faces_video_out / "pan.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"


def test_a_line_s_seconds_are_the_exact_pts_correctly_rounded() -> None:
    """``pts`` in a line is ``float(pts * time_base)`` (the nearest double), for time bases and
    pts whose product a float multiplication would round twice."""
    rng = np.random.default_rng(5)
    bases = [Fraction(1, 15360), Fraction(1001, 30000), Fraction(1, 90000), Fraction(7, 3)]
    for base in bases:
        for pts in [0, 1, -3, 2**53 + 1, *rng.integers(-(10**12), 10**15, 200).tolist()]:
            fields = frame_fields(5, pts, base)
            assert fields == {"frame": 5, "pts": float(pts * base), "pts_ticks": pts}


def test_audio_is_bit_identical_after_re_encoding(faces_video_out: Path, pan_clip: Clip) -> None:
    assert_audio_copied(pan_clip, faces_video_out / "pan.mp4")


# -- fruc: frame-rate up-conversion -------------------------------------------------------------
def test_fruc_doubles_the_frame_rate(
    video_server: LocalServer,
    zoo_repository: Path,
    pan_clip: Clip,
    out: Path,
) -> None:
    summary = run_video(video_server, zoo_repository, "fruc", [pan_clip.path], out)
    n = pan_clip.frames
    assert summary.frames == 2 * n - 1

    times = pan_clip.times
    # originals at their own instants, each generated frame halfway between its neighbours
    expected = [times[i // 2] if i % 2 == 0 else (times[i // 2] + times[i // 2 + 1]) / 2
                for i in range(2 * n - 1)]  # fmt: skip

    lines = read_jsonl(out / "pan.jsonl")
    assert [line["frame"] for line in lines] == list(range(2 * n - 1))
    assert [line["generated"] for line in lines] == [i % 2 == 1 for i in range(2 * n - 1)]
    assert [line["between"] for line in lines[1::2]] == [[i, i + 1] for i in range(n - 1)]
    ticks = [line["pts_ticks"] for line in lines]
    assert all(b > a for a, b in zip(ticks, ticks[1:], strict=False))
    assert [line["pts"] for line in lines] == pytest.approx([float(t) for t in expected])

    time_base, size, pts = decoded_video(out / "pan.mp4")
    assert size == pan_clip.size
    assert len(pts) == 2 * n - 1
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    assert [p * time_base for p in pts] == expected
    assert_audio_copied(pan_clip, out / "pan.mp4")


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sample", ["all", "every:1", "every:3", "every:5", "fps:6", "fps:5", "fps:7/2", "keyframes"]
)
def test_each_sampling_mode_picks_the_right_frames(
    sample: str, video_server: LocalServer, zoo_repository: Path, gop_clip: Clip, out: Path
) -> None:
    n = gop_clip.frames
    if sample == "all":
        expected = list(range(n))
    elif sample.startswith("every:"):
        expected = list(range(0, n, int(sample.split(":")[1])))
    elif sample == "keyframes":
        expected = list(gop_clip.keyframes)
        assert expected == [0, 12, 24, 36]
    else:
        expected = first_at_or_after_ticks(list(gop_clip.times), Fraction(sample.split(":")[1]))
        if sample == "fps:6":  # 24 fps / 6: every 4th frame
            assert expected == list(range(0, n, 4))
    summary = run_video(video_server, zoo_repository, "faces", [gop_clip.path], out, sample)
    assert_lines_match_clip(read_jsonl(out / "gop12.jsonl"), gop_clip, expected)
    assert summary.streams[0].processed == len(expected)
    assert summary.frames == len(expected)


def test_fps_sampling_by_timestamps_on_a_variable_rate_input(
    video_server: LocalServer, zoo_repository: Path, vfr_clip: Clip, out: Path
) -> None:
    expected = first_at_or_after_ticks(list(vfr_clip.times), Fraction(10))
    assert len(expected) < vfr_clip.frames  # some gaps are shorter than a tick
    run_video(video_server, zoo_repository, "faces", [vfr_clip.path], out, "fps:10")
    assert_lines_match_clip(read_jsonl(out / "vfr.jsonl"), vfr_clip, expected)


def test_a_variable_frame_rate_input_keeps_its_timestamps(
    video_server: LocalServer, zoo_repository: Path, vfr_clip: Clip, out: Path
) -> None:
    gaps = {b - a for a, b in zip(vfr_clip.pts, vfr_clip.pts[1:], strict=False)}
    assert len(gaps) > 3, "the clip must have irregular gaps"
    run_video(video_server, zoo_repository, "faces", [vfr_clip.path], out, video_out=True)

    lines = read_jsonl(out / "vfr.jsonl")
    assert_lines_match_clip(lines, vfr_clip, list(range(vfr_clip.frames)))
    time_base, size, pts = decoded_video(out / "vfr.mp4")
    assert size == vfr_clip.size
    assert [p * time_base for p in pts] == list(vfr_clip.times)
    assert_audio_copied(vfr_clip, out / "vfr.mp4")


# -- damaged and wrong inputs -------------------------------------------------------------------
def test_a_corrupt_packet_is_skipped_counted_and_warned(
    video_server: LocalServer,
    zoo_repository: Path,
    clip_dir: Path,
    tmp_path: Path,
    out: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clip = make_clip(tmp_path / "good.mp4", frames=36, audio=False)
    damaged = 17
    corrupt_clip(clip.path, tmp_path / "damaged.mp4", damaged)
    with caplog.at_level("WARNING", logger="frameserve.video.decode"):
        summary = run_video(video_server, zoo_repository, "faces", [tmp_path / "damaged.mp4"], out)

    stream = summary.streams[0]
    assert stream.corrupt_skipped >= 1
    warnings = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert warnings, "expected a warning about the corrupt packet"
    assert "damaged.mp4" in warnings[0].getMessage()
    others = [i for i in range(clip.frames) if i != damaged]
    assert_lines_match_clip(read_jsonl(out / "damaged.jsonl"), clip, others)
    assert stream.written == clip.frames - 1


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("png", "still image"),
        ("text", "not a video"),
        ("empty", "not a video"),
        ("audio", "expected a video stream, found streams: audio"),
        ("missing", "no such file"),
    ],
)
def test_a_file_that_is_not_a_video_fails_clearly(
    kind: str,
    message: str,
    video_server: LocalServer,
    zoo_repository: Path,
    tmp_path: Path,
    out: Path,
) -> None:
    path = write_bad_input(tmp_path / f"input-{kind}.mp4", kind)
    with pytest.raises(VideoError) as caught:
        run_video(video_server, zoo_repository, "faces", [path], out)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


# -- a failing stage ----------------------------------------------------------------------------
BOOM_MODEL_YAML = """\
backend: python
max_batch_size: 0
inputs:
  - {name: previous, datatype: UINT8, dims: [-1, -1, 3]}
  - {name: next, datatype: UINT8, dims: [-1, -1, 3]}
outputs:
  - {name: middle, datatype: UINT8, dims: [-1, -1, 3]}
warmup: 0
"""

BOOM_MODEL_PY = """\
import numpy as np

FAIL_FROM_CALL = 3
calls = 0


def process(batch):
    global calls
    calls += 1
    if calls >= FAIL_FROM_CALL:
        raise RuntimeError(f"boom on call {calls}")
    middle = (batch["previous"].astype(np.uint16) + batch["next"]) // 2
    return {"middle": middle.astype(np.uint8)}
"""

# Threads the server may start lazily while it serves (pools, loaders), not the run's own.
SERVER_THREADS = ("frameserve-loop", "model-loader", "ThreadPoolExecutor", "py-", "ov-", "ort-")


def test_an_error_in_a_stage_ends_the_run(tmp_path: Path) -> None:
    """A user model that raises on its 3rd call: the run stops, raises, leaves no thread."""
    repository = tmp_path / "models"
    (repository / "boom" / "1").mkdir(parents=True)
    (repository / "boom" / "model.yaml").write_text(BOOM_MODEL_YAML)
    (repository / "boom" / "1" / "model.py").write_text(BOOM_MODEL_PY)
    pipeline = tmp_path / "boom-fruc.yaml"
    pipeline.write_text("interpolate: {model: boom}\n")
    clip = make_clip(tmp_path / "long.mp4", frames=96, audio=False)
    out = tmp_path / "out"

    settings = ServerSettings(
        repository=repository, model_control_mode="explicit", load_models=("boom",)
    )
    with LocalServer(settings) as local:
        before = {t.name for t in threading.enumerate()}
        with pytest.raises(FrameserveError) as caught:
            run_video(local, repository, str(pipeline), [clip.path], out)
        after = {t.name for t in threading.enumerate()}
    assert str(clip.path) in str(caught.value)
    assert "boom on call 3" in str(caught.value)
    left = sorted(n for n in after - before if not n.startswith(SERVER_THREADS))
    assert not left, f"threads left behind by the run: {left}"

    # The lines before the failing frame stay: original 0, generated 0-1, original 1,
    # generated 1-2, original 2; the 3rd generated frame failed and nothing after it is written.
    lines = read_jsonl(out / "long.jsonl")
    assert [line["frame"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line["generated"] for line in lines] == [False, True, False, True, False]


# -- several inputs -----------------------------------------------------------------------------
def test_inputs_with_the_same_stem_get_distinct_outputs(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, zoom_clip: Clip, tmp_path: Path
) -> None:
    first, second = tmp_path / "x" / "a.mp4", tmp_path / "y" / "a.mp4"
    for clip, path in ((pan_clip, first), (zoom_clip, second)):
        path.parent.mkdir()
        shutil.copyfile(clip.path, path)
    out = tmp_path / "out"
    summary = run_video(video_server, zoo_repository, "faces", [first, second], out)

    assert [s.jsonl for s in summary.streams] == [out / "a.jsonl", out / "a-2.jsonl"]
    for clip, name in ((pan_clip, "a.jsonl"), (zoom_clip, "a-2.jsonl")):
        lines = read_jsonl(out / name)
        assert_lines_match_clip(lines, clip, list(range(clip.frames)))
        for line, truth in zip(lines, clip.face_boxes(), strict=True):
            assert box_iou(line["detections"][0]["box"], truth) > 0.5, (name, line["frame"])


def test_two_inputs_in_one_run_share_the_schedulers(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, gop_clip: Clip, out: Path
) -> None:
    stats = video_server.server.repository.get("faces").stats
    count_before = stats.inference_count
    summary = run_video(video_server, zoo_repository, "faces", [pan_clip.path, gop_clip.path], out)

    total = pan_clip.frames + gop_clip.frames
    assert summary.frames == total
    assert stats.inference_count - count_before == total  # one scheduler saw both inputs
    assert "faces" in summary.batches
    for clip in (pan_clip, gop_clip):
        lines = read_jsonl(out / f"{clip.path.stem}.jsonl")
        assert_lines_match_clip(lines, clip, list(range(clip.frames)))
        assert all(len(line["detections"]) == 1 for line in lines)


def test_a_run_follows_its_model_through_a_reload(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, out: Path
) -> None:
    """A reload in the middle of a run retires the version its frames were prepared for: they
    go to the new version, and every frame is written once, with its face."""
    repository = video_server.server.repository
    old = repository.get("faces")
    name, config = load_video_pipeline("faces", zoo_repository)
    reloaded = threading.Event()

    def reload_once(_st: Any, frame: Any) -> None:  # the sink thread, before frame 5 is written
        if frame.index == 5 and not reloaded.is_set():
            # The same settings as an override: a new fingerprint, so a new version object.
            video_server.call(repository.load("faces", override=old.config), timeout=60)
            reloaded.set()

    # Two frames in flight: most frames are prepared after the reload, for the old version.
    options = RunOptions(out=out, inflight=2)
    run = VideoRun(video_server, name, config, [pan_clip.path], options, on_frame=reload_once)
    try:
        summary = run.run()
    finally:
        video_server.call(repository.load("faces"), timeout=60)  # model.yaml again
    assert reloaded.is_set() and repository.get("faces") is not old
    assert run.processor.single is not old
    assert summary.frames == pan_clip.frames
    lines = read_jsonl(out / f"{pan_clip.path.stem}.jsonl")
    assert_lines_match_clip(lines, pan_clip, list(range(pan_clip.frames)))
    assert all(len(line["detections"]) == 1 for line in lines)


def test_an_output_never_overwrites_another_input(
    video_server: LocalServer, zoo_repository: Path, tmp_path: Path
) -> None:
    """``x.mov`` and ``x.mp4`` with ``--out`` their own folder: x.mov's video is x.mp4."""
    make_clip(tmp_path / "x.mov", frames=12, audio=False)
    make_clip(tmp_path / "x.mp4", frames=24, audio=False)
    original = (tmp_path / "x.mp4").read_bytes()
    inputs = [tmp_path / "x.mov", tmp_path / "x.mp4"]
    try:  # refusing up front would do as well as choosing another name
        run_video(video_server, zoo_repository, "faces", inputs, tmp_path, video_out=True)
    except FrameserveError:
        pass
    assert (tmp_path / "x.mp4").read_bytes() == original, "the input x.mp4 was overwritten"


def test_two_inputs_never_write_the_same_output_file(
    video_server: LocalServer, zoo_repository: Path, tmp_path: Path, out: Path
) -> None:
    """``a.mp4``'s mask track and ``a.masks.mp4``'s results are both ``a.masks.jsonl``."""
    make_clip(tmp_path / "a.mp4", frames=12, audio=False)
    make_clip(tmp_path / "a.masks.mp4", frames=20, audio=False)
    inputs = [tmp_path / "a.mp4", tmp_path / "a.masks.mp4"]
    try:
        summary = run_video(
            video_server, zoo_repository, "person-mask", inputs, out, mask_track=True
        )
    except FrameserveError:
        return  # refused before writing: fine
    files = [path for s in summary.streams for path in (s.jsonl, s.masks)]
    assert len(set(files)) == len(files), f"two sinks share a file: {files}"


def test_sampling_is_refused_for_a_pipeline_that_makes_frames(
    video_server: LocalServer,
    zoo_repository: Path,
    pan_clip: Clip,
    out: Path,
) -> None:
    with pytest.raises(InvalidInput, match="--sample: pipeline fruc makes new frames"):
        run_video(video_server, zoo_repository, "fruc", [pan_clip.path], out, "every:2")
