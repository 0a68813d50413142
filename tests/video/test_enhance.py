"""FFmpeg filter steps (``filters:``) and the built-in ``enhance`` pipeline, run for real.

The noisy clip is the astronaut with fresh Gaussian noise on every frame (AAC audio beside
it), so the clean picture is known exactly and "less noisy" is a PSNR against it. Filters run
in PyAV's own FFmpeg, the output is decoded back with PyAV.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from frameserve.errors import ConfigError, InvalidInput, VideoError
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.tools.tune_video import resolve_pipeline
from frameserve.video.config import load_video_pipeline, parse_video_pipeline
from frameserve.video.decode import VideoSource
from frameserve.video.filters import FilterChain, FilterStep, FrameFilter, parse_filters
from frameserve.video.frames import Sampling
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import RunSummary
from video.media import Clip
from video.noisy import FRAMES, SIZE, TIME_BASE, NoisyClip, audio, decoded, psnr, write_noisy_clip

pytestmark = pytest.mark.timeout(120)


def run_pipeline(local: LocalServer, pipeline: str | Path, inputs: list[Path], out: Path,
                 repository: Path, **options: Any) -> RunSummary:  # fmt: skip
    name, config = load_video_pipeline(str(pipeline), repository)
    return VideoRun(local, name, config, inputs, RunOptions(out=out, **options)).run()


def write_pipeline(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def noisy_clip(tmp_path_factory: pytest.TempPathFactory) -> NoisyClip:
    return write_noisy_clip(tmp_path_factory.mktemp("enhance") / "noisy.mp4")


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server with an empty repository: filter-only pipelines need no model."""
    repository = tmp_path_factory.mktemp("empty-repository")
    settings = ServerSettings(repository=repository, model_control_mode="explicit")
    with LocalServer(settings) as local:
        yield local


# -- enhance -----------------------------------------------------------------------------------
def test_enhance_denoises_with_every_frame_timestamp_and_the_audio_kept(
    bare_server: LocalServer, noisy_clip: NoisyClip, tmp_path: Path
) -> None:
    repository = bare_server.server.repository.root
    summary = run_pipeline(bare_server, "enhance", [noisy_clip.path], tmp_path, repository)
    assert summary.frames == FRAMES
    output = tmp_path / "noisy.mp4"

    times_in, noisy = decoded(noisy_clip.path)
    times_out, enhanced = decoded(output)
    assert times_in == [p * TIME_BASE for p in noisy_clip.pts]
    assert times_out == times_in  # every frame, at its exact instant
    assert enhanced[0].shape == (SIZE[1], SIZE[0], 3)
    # measurably less noisy: closer to the clean picture than the input was
    assert psnr(enhanced, noisy_clip.clean) > psnr(noisy, noisy_clip.clean) + 0.5

    packets_in, seconds_in = audio(noisy_clip.path)
    packets_out, seconds_out = audio(output)
    assert packets_out == packets_in  # copied, not re-encoded
    assert seconds_out == pytest.approx(seconds_in)

    lines = [json.loads(line) for line in (tmp_path / "noisy.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["pts_ticks"] for line in lines] == noisy_clip.pts
    assert all("generated" not in line for line in lines)


def test_a_temporal_filter_and_a_resize_keep_every_frame(
    bare_server: LocalServer, noisy_clip: NoisyClip, tmp_path: Path
) -> None:
    """atadenoise holds frames back until it has seen the ones after them; the frames still
    come out in order at their own instants, at the size the chain makes."""
    pipeline = write_pipeline(tmp_path, "half", 'filters: "atadenoise,scale=iw/2:ih/2"\n')
    repository = bare_server.server.repository.root
    run_pipeline(bare_server, pipeline, [noisy_clip.path], tmp_path / "out", repository)
    times, pictures = decoded(tmp_path / "out" / "noisy.mp4")
    assert times == [p * TIME_BASE for p in noisy_clip.pts]
    assert {im.shape for im in pictures} == {(SIZE[1] // 2, SIZE[0] // 2, 3)}


def test_frames_leave_a_temporal_filter_late_and_keep_their_identity(
    noisy_clip: NoisyClip,
) -> None:
    chain = parse_filters("atadenoise")
    source = VideoSource(noisy_clip.path, 0, Sampling(), 1)
    runner = FrameFilter(chain, 1, "noisy.mp4")
    frames = list(source.frames(threading.Event()))
    first = runner.push(frames[0])
    assert first == []  # held: the filter averages with the frames after it
    out = first + [f for frame in frames[1:] for f in runner.push(frame)] + runner.flush()
    assert [(f.index, f.pts) for f in out] == [(i, p) for i, p in enumerate(noisy_clip.pts)]
    assert all(f.picture is not None and f.image is None for f in out)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("fps", "50", "moved frame 1 from 0.0416667 s to 0.02 s"),
        ("setpts", "2*PTS", "moved frame 1 from 0.0416667 s to 0.0833333 s"),
    ],
)
def test_a_chain_that_changes_the_timing_fails_the_run_with_its_name(
    noisy_clip: NoisyClip, name: str, args: str, message: str
) -> None:
    """The load-time check refuses such chains; a chain that slips past it (made here without
    the check) is still stopped at the first frame out of place."""
    chain = FilterChain((FilterStep(name, args),))
    source = VideoSource(noisy_clip.path, 0, Sampling(), 1, filters=chain)
    with pytest.raises(VideoError, match=re.escape(f"filters '{name}={args}' {message}")):
        list(source.frames(threading.Event()))


# -- the pipeline file's syntax and its errors --------------------------------------------------
def test_the_list_form_and_the_chain_form_are_the_same_chain() -> None:
    text = parse_filters("fftdnoiz=sigma=12,unsharp=3:3:0.3")
    listed = parse_filters(
        [
            {"filter": "fftdnoiz", "options": {"sigma": 12}},
            {"filter": "unsharp", "options": "3:3:0.3"},
        ]
    )
    assert [s.name for s in listed.steps] == [s.name for s in text.steps]
    assert listed.steps[0].args == "sigma=12" and text.steps[1].args == "3:3:0.3"
    quoted = parse_filters(r"unsharp='5:5:0.8',scale=w=iw/2:h=-2")  # quotes protect ':' and ','
    assert [(s.name, s.args) for s in quoted.steps] == [
        ("unsharp", "5:5:0.8"),
        ("scale", "w=iw/2:h=-2"),
    ]
    config = parse_video_pipeline({"filters": "fftdnoiz=sigma=12"}, "test")
    assert config.transforms and config.models == [] and not config.interpolates
    assert config.model_dump()["filters"] == [{"filter": "fftdnoiz", "options": "sigma=12"}]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ("hqdn3d=2:1:2:3", r"filter 'hqdn3d': not in PyAV's FFmpeg"),
        ("zscale=t=linear,tonemap=hable", r"filter 'zscale': not in PyAV's FFmpeg"),
        ("unsharp=5:5:abc", r"filter 'unsharp=5:5:abc'.*Unable to parse \"luma_amount\""),
        ("nlmeans=s=3:patch=4", r"filter 'nlmeans=.*No such option: patch"),
        ("unsharp=4:4", r"filters 'unsharp=4:4'.*Invalid even size for luma matrix"),
        ("fps=50", r"filters 'fps=50': expected the frames' count and timestamps kept"),
        ("setpts=2*PTS", r"expected the frames' count and timestamps kept.*0.08"),
        ("[in]unsharp", r"expected a linear chain"),
        ("unsharp,color", r"filter 'color': takes 0 input\(s\) and gives 1 output"),
        ("nullsink", r"filter 'nullsink': takes 1 input\(s\) and gives 0 output"),
        ("unsharp,,cas", r"expected a filter name"),
        ("unsharp='5:5", r"unfinished"),
        ([{"name": "unsharp"}], r"item 0: expected a mapping with 'filter'"),
        ([{"filter": "unsharp", "options": [5, 5]}], r"options of unsharp: expected a string"),
        (7, r"expected an FFmpeg filter chain"),
    ],
)
def test_a_bad_filter_is_refused_at_load_naming_it(filters: object, message: str) -> None:
    with pytest.raises(ConfigError, match=r"bad\.yaml: filters: ") as raised:
        parse_video_pipeline({"filters": filters}, "bad.yaml")
    assert raised.match(message)


def test_filters_need_every_frame_when_they_are_the_whole_pipeline() -> None:
    with pytest.raises(ConfigError, match="filters without steps needs every frame"):
        parse_video_pipeline({"filters": "unsharp", "sample": "every:2"}, "bad.yaml")
    with pytest.raises(ConfigError, match="has steps \\(analysis\\), interpolate or filters"):
        parse_video_pipeline({"sample": "all"}, "bad.yaml")


# -- filters chained with models ---------------------------------------------------------------
def test_filters_before_a_detector_and_before_interpolation(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """Denoise, then detect (with the overlay video); denoise, then interpolate."""
    detect = write_pipeline(
        tmp_path, "clean-faces",
        "filters: nlmeans=s=2:p=3:r=7\nsteps:\n  - model: faces\ntrack: {}\n",
    )  # fmt: skip
    run_pipeline(video_server, detect, [pan_clip.path], tmp_path / "faces", zoo_repository,
                 video_out=True)  # fmt: skip
    lines = [json.loads(s) for s in (tmp_path / "faces" / "pan.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(pan_clip.frames))
    assert [line["pts_ticks"] for line in lines] == list(pan_clip.pts)
    assert sum(1 for line in lines if line["detections"]) >= pan_clip.frames - 2
    times, _ = decoded(tmp_path / "faces" / "pan.mp4")
    assert times == list(pan_clip.times)

    fruc = write_pipeline(tmp_path, "clean-fruc", "filters: atadenoise\ninterpolate: {}\n")
    summary = run_pipeline(video_server, fruc, [pan_clip.path], tmp_path / "fruc", zoo_repository)
    assert summary.frames == 2 * pan_clip.frames - 1
    times, _ = decoded(tmp_path / "fruc" / "pan.mp4")
    t = pan_clip.times
    assert times[::2] == list(t)
    assert times[1::2] == [(a + b) / 2 for a, b in zip(t, t[1:], strict=False)]


def test_sampling_is_refused_for_a_filter_only_pipeline(
    bare_server: LocalServer, noisy_clip: NoisyClip, tmp_path: Path
) -> None:
    name, config = load_video_pipeline("enhance", tmp_path)
    options = RunOptions(out=tmp_path, sample=Sampling.parse("every:2"))
    with pytest.raises(InvalidInput, match="--sample: pipeline enhance filters every frame"):
        VideoRun(bare_server, name, config, [noisy_clip.path], options)


def test_tuning_a_filter_only_pipeline_is_refused(noisy_clip: NoisyClip, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--pipeline enhance: expected a pipeline with models"):
        resolve_pipeline("enhance", tmp_path, [noisy_clip.path], 25.0)
