"""The test videos keep their promises: exact pts, keyframes, audio, face geometry, damage.

Everything is checked by reading the written files back with PyAV (demuxing and decoding),
and the face geometry with the zoo's face detector run on decoded frames.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
from reference.mediapipe_faces import iou, reference_faces
from reference.mediapipe_models import FACE_FULL_RANGE

from .media import (
    ASTRONAUT_FACE,
    Clip,
    Motion,
    astronaut,
    corrupt_clip,
    decode_report,
    make_audio_only,
    make_clip,
    write_not_a_video,
)


def decoded(clip: Clip) -> list[av.VideoFrame]:
    with av.open(str(clip.path)) as container:
        return list(container.decode(video=0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


# --- time stamps and frames -------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "step"), [(24, 3750), (Fraction(30000, 1001), 3003), (25, 3600)])
def test_constant_rate_pts_round_trip_exactly(tmp_path: Path, fps: Fraction, step: int) -> None:
    clip = make_clip(tmp_path / "cfr.mp4", frames=30, fps=fps, audio=False)
    frames = decoded(clip)
    assert clip.time_base == Fraction(1, 90000)
    assert clip.pts == tuple(i * step for i in range(30))
    assert [f.pts for f in frames] == list(clip.pts)
    assert all(f.time_base == clip.time_base for f in frames)
    assert [(f.width, f.height, f.format.name) for f in frames[:1]] == [(640, 360, "yuv420p")]
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.frames, stream.average_rate) == ("h264", 30, fps)


@pytest.mark.parametrize("bframes", [0, 2])
def test_variable_rate_pts_round_trip_exactly(tmp_path: Path, bframes: int) -> None:
    steps = np.random.default_rng(7).integers(900, 9000, size=39)  # 10 ms to 100 ms
    pts = [0, *np.cumsum(steps).tolist()]
    clip = make_clip(tmp_path / "vfr.mp4", vfr_pts=pts, bframes=bframes)
    assert (clip.frames, clip.time_base, clip.pts) == (40, Fraction(1, 90000), tuple(pts))
    assert [f.pts for f in decoded(clip)] == pts
    with av.open(str(clip.path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    in_decode_order = [p.pts for p in packets] == pts
    assert in_decode_order == (bframes == 0)  # B-frames do reorder, the pts still come back


def test_small_time_base_is_rescaled_by_mp4_to_the_same_instants(tmp_path: Path) -> None:
    pts = [0, 10, 35, 40, 100, 101, 150]
    clip = make_clip(tmp_path / "ms.mp4", vfr_pts=pts, time_base=Fraction(1, 1000), audio=False)
    # The MP4 muxer doubles a time base until its denominator reaches 10000.
    assert clip.time_base == Fraction(1, 16000)
    assert clip.times == tuple(Fraction(p, 1000) for p in pts)
    assert [f.pts for f in decoded(clip)] == list(clip.pts)


@pytest.mark.parametrize(
    ("codec", "time_base"), [("libx265", Fraction(1, 90000)), ("mpeg4", Fraction(1, 24000))]
)
def test_other_codecs_keep_frames_pts_and_keyframes(
    tmp_path: Path, codec: str, time_base: Fraction
) -> None:
    # MPEG-4 part 2 allows time base denominators up to 65535 only.
    clip = make_clip(tmp_path / "c.mp4", frames=20, codec=codec, gop=5, time_base=time_base)
    assert [f.pts for f in decoded(clip)] == list(clip.pts)
    assert clip.keyframes == (0, 5, 10, 15)


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_clip(tmp_path / "x.mp4", size=(641, 360))
    with pytest.raises(ValueError, match="frames"):
        make_clip(tmp_path / "x.mp4", frames=3, vfr_pts=[0, 1])
    with pytest.raises(ValueError, match="vfr_pts"):
        make_clip(tmp_path / "x.mp4", vfr_pts=[0, 5, 5])
    with pytest.raises(ValueError, match="time_base"):
        make_clip(tmp_path / "x.mp4", fps=7)  # 90000 / 7 is no whole number of ticks


# --- keyframes and audio ----------------------------------------------------------------------


@pytest.mark.parametrize(("gop", "keyframes"), [(12, (0, 12, 24, 36)), (None, (0,))])
def test_keyframes_fall_on_the_gop_grid(
    tmp_path: Path, gop: int | None, keyframes: tuple[int, ...]
) -> None:
    clip = make_clip(tmp_path / "gop.mp4", gop=gop, audio=False)
    assert clip.keyframes == keyframes
    frames = decoded(clip)
    assert tuple(i for i, f in enumerate(frames) if f.key_frame) == keyframes


def test_audio_is_an_aac_chirp_as_long_as_the_video(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "av.mp4", frames=48, fps=24)  # 2 s
    assert clip.audio is not None
    assert (clip.audio.codec, clip.audio.sample_rate, clip.audio.channels) == ("aac", 48000, 2)
    # 96000 samples in 1024-sample frames, plus the encoder's priming frame.
    assert clip.audio.packets == 95
    with av.open(str(clip.path)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    assert samples.shape[0] == 2
    assert abs(samples.shape[1] / 48000 - 2.0) < 2 * 1024 / 48000
    rms = np.sqrt(np.mean(samples[:, 2048:-2048] ** 2, axis=1))
    assert np.allclose(rms, 0.3 / np.sqrt(2), rtol=0.05)  # the 0.3 tone came through


def test_audio_only_and_not_a_video(tmp_path: Path) -> None:
    info = make_audio_only(tmp_path / "sound.mp4", seconds=1.0)
    assert (info.codec, info.sample_rate, info.packets) == ("aac", 48000, 48)
    with av.open(str(tmp_path / "sound.mp4")) as container:
        assert (len(container.streams.video), len(container.streams.audio)) == (0, 1)

    png = write_not_a_video(tmp_path / "image.mp4", "png")
    with av.open(str(png)) as container:  # FFmpeg goes by content, not by name
        assert container.format.name == "png_pipe"
        assert len(list(container.decode(video=0))) == 1
    for kind in ("text", "empty"):
        path = write_not_a_video(tmp_path / f"{kind}.mp4", kind)
        with pytest.raises(av.error.InvalidDataError, match="Invalid data found"):
            av.open(str(path))


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("motion", ["pan", "zoom", "static"])
def test_face_stays_in_view_and_moves_steadily(tmp_path: Path, motion: Motion) -> None:
    clip = make_clip(tmp_path / "m.mp4", motion=motion, audio=False)
    boxes = clip.face_boxes()
    width, height = clip.size
    assert boxes[:, :2].min() >= 0 and boxes[:, 2].max() <= width and boxes[:, 3].max() <= height
    moves = np.diff(boxes, axis=0)
    if motion == "pan":
        step = round(moves[0, 0])
        assert np.allclose(moves[:, [0, 2]], step) and step <= -1  # whole pixels to the left
        assert np.allclose(moves[:, [1, 3]], 0)
    elif motion == "zoom":
        sides = boxes[:, 2] - boxes[:, 0]
        assert np.allclose(np.diff(sides), np.diff(sides)[0]) and sides[-1] > 1.3 * sides[0]
    else:
        assert np.allclose(moves, 0)


@pytest.mark.parametrize("motion", ["pan", "zoom"])
def test_face_box_mapping_matches_the_pixels(tmp_path: Path, motion: Motion) -> None:
    clip = make_clip(tmp_path / "m.mp4", motion=motion, audio=False)
    x1, y1, x2, y2 = (int(v) for v in ASTRONAUT_FACE)
    face = cv2.cvtColor(astronaut()[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)
    frames = decoded(clip)
    for i in (0, clip.frames // 2, clip.frames - 1):
        assert psnr(frames[i].to_ndarray(format="rgb24"), clip.render(i)) > 30
        gray = cv2.cvtColor(frames[i].to_ndarray(format="rgb24"), cv2.COLOR_RGB2GRAY)

        def crop(box: np.ndarray, gray: np.ndarray = gray) -> np.ndarray:
            bx1, by1, bx2, by2 = np.round(box).astype(int)
            return cv2.resize(
                gray[by1:by2, bx1:bx2], face.shape[::-1], interpolation=cv2.INTER_AREA
            )

        box = clip.face_boxes()[i]
        assert correlation(crop(box), face) > 0.97
        # The comparison can fail: a tenth of the face off is already far worse.
        shift = 0.1 * (box[2] - box[0])
        assert correlation(crop(box + [shift, 0, shift, 0]), face) < 0.9


def test_face_detector_finds_the_face_where_the_clip_says(
    tmp_path: Path, zoo_repository: Path
) -> None:
    model = str(zoo_repository / FACE_FULL_RANGE)
    assert reference_faces(astronaut(), model, "full")[0]["score"] > 0.9
    motions: tuple[Motion, ...] = ("pan", "zoom")
    for motion in motions:
        clip = make_clip(tmp_path / f"{motion}.mp4", motion=motion, audio=False)
        frames = decoded(clip)
        for i in (0, clip.frames // 2, clip.frames - 1):
            found = reference_faces(frames[i].to_ndarray(format="rgb24"), model, "full")
            assert len(found) == 1, (motion, i, found)
            got, want = np.array(found[0]["box"]), clip.face_boxes()[i]
            # The detector's box grows a little with the face's share of the frame; the centre
            # is where the geometry says, and the size follows the zoom.
            side = want[2] - want[0]
            centre_error = np.abs((got[:2] + got[2:]) / 2 - (want[:2] + want[2:]) / 2).max()
            assert centre_error < 0.06 * side, (motion, i, got, want)
            assert 0.9 < (got[2] - got[0]) / side < 1.2, (motion, i, got, want)
            assert iou(got, want) > 0.75, (motion, i, got, want)


def test_a_caller_image_is_filmed_around_its_middle(tmp_path: Path) -> None:
    cat = skimage.data.chelsea()  # 300x451
    clip = make_clip(tmp_path / "cat.mp4", frames=12, size=(320, 240), source=cat, audio=False)
    assert clip.face is None and len(decoded(clip)) == 12
    assert psnr(decoded(clip)[6].to_ndarray(format="rgb24"), clip.render(6)) > 30
    with pytest.raises(ValueError, match="face"):
        clip.face_boxes()
    with pytest.raises(ValueError, match="size"):  # a 4:1 window cannot fit in the source
        make_clip(tmp_path / "wide.mp4", size=(1200, 300), source=cat)


# --- damaged files ----------------------------------------------------------------------------


@pytest.fixture
def gop12(tmp_path: Path) -> Clip:
    return make_clip(tmp_path / "src.mp4", gop=12)


def test_header_damage_raises_for_that_packet_and_loses_one_frame(
    tmp_path: Path, gop12: Clip
) -> None:
    bad = tmp_path / "bad.mp4"
    assert corrupt_clip(gop12.path, bad, 20) == 20
    changed = np.flatnonzero(
        np.frombuffer(bad.read_bytes(), np.uint8)
        != np.frombuffer(gop12.path.read_bytes(), np.uint8)
    )
    with av.open(str(gop12.path)) as container:
        packet = [p for p in container.demux(video=0) if p.size][20]
    assert packet.pos is not None
    assert packet.pos <= changed.min() and changed.max() < packet.pos + packet.size

    report = decode_report(bad)
    assert report.failed == (gop12.pts[20],)
    assert report.frames == gop12.pts[:20] + gop12.pts[21:]
    assert report.corrupt == ()
    with av.open(str(bad)) as container:
        with pytest.raises(av.error.InvalidDataError) as raised:
            for packet in container.demux(video=0):
                packet.decode()
        assert packet.pts == gop12.pts[20]
    assert raised.value.errno == 1094995529  # AVERROR_INVALIDDATA
    assert "avcodec_send_packet()" in str(raised.value)
    with av.open(str(bad)) as container, pytest.raises(av.error.InvalidDataError):
        list(container.decode(video=0))  # the whole-file iterator ends at the error
    # The audio track is untouched.
    assert gop12.audio is not None
    with av.open(str(bad)) as container:
        assert sum(1 for p in container.demux(audio=0) if p.size) == gop12.audio.packets


def test_header_damage_with_frame_threads_raises_later(tmp_path: Path, gop12: Clip) -> None:
    bad = tmp_path / "bad.mp4"
    corrupt_clip(gop12.path, bad, 20)
    report = decode_report(bad, thread_type="FRAME")
    assert len(report.failed) == 1 and report.failed[0] > gop12.pts[20]
    assert report.frames == gop12.pts[:20] + gop12.pts[21:]


def test_header_damage_on_a_keyframe_loses_frames_after_it(tmp_path: Path, gop12: Clip) -> None:
    bad = tmp_path / "bad.mp4"
    corrupt_clip(gop12.path, bad, 12)
    report = decode_report(bad)
    assert report.failed == (gop12.pts[12],)
    lost = sorted(set(gop12.pts) - set(report.frames))
    assert lost[0] == gop12.pts[12] and len(lost) > 1
    assert set(lost) <= set(gop12.pts[12:24])  # the next keyframe recovers


def test_data_damage_gives_a_corrupt_frame_without_error(tmp_path: Path, gop12: Clip) -> None:
    bad = tmp_path / "bad.mp4"
    assert corrupt_clip(gop12.path, bad, 20, damage="data") == 20
    report = decode_report(bad)
    assert report.failed == ()
    assert report.frames == gop12.pts
    assert report.corrupt == (gop12.pts[20],)
    with av.open(str(bad)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    quality = [psnr(frames[i], gop12.render(i)) for i in (19, 20, 23, 24)]
    assert quality[0] > 35 and quality[1] < 25 and quality[2] < 25 and quality[3] > 35


def test_corrupt_clip_with_b_frames_damages_the_frame_asked_for(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "b.mp4", gop=12, bframes=2, audio=False)
    bad = tmp_path / "bad.mp4"
    index = corrupt_clip(clip.path, bad, 20)
    with av.open(str(clip.path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert index != 20 and packets[index].pts == clip.pts[20]
    report = decode_report(bad)
    assert report.failed == (clip.pts[20],)
    assert set(clip.pts) - set(report.frames) == {clip.pts[20]}
