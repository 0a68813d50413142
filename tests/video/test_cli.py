"""``frameserve video run`` as a user runs it: the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frameserve.video.profile import STAGES
from video.media import Clip, make_clip, write_bad_input

pytestmark = pytest.mark.timeout(180)

FRAMESERVE = Path(sys.executable).parent / "frameserve"


def video_run(*args: str | Path) -> list[str]:
    return [str(FRAMESERVE), "video", "run", *(str(a) for a in args)]


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        video_run(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def test_profile_prints_the_summary_as_json(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli(
        pan_clip.path, "--pipeline", "faces", "--repository", zoo_repository, "--out", out,
        "--video-out", "--profile",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)

    assert summary["pipeline"] == "faces"
    assert summary["frames"] == pan_clip.frames
    assert summary["fps"] > 0
    assert list(summary["stages"]) == list(STAGES)
    assert set(STAGES) >= {"decode", "preprocess", "queue wait", "inference", "postprocess"}
    for name, stage in summary["stages"].items():
        assert set(stage) == {"seconds", "share"}, name
        assert stage["seconds"] >= 0 and 0 <= stage["share"] <= 1, (name, stage)
    assert sum(s["share"] for s in summary["stages"].values()) == pytest.approx(1, abs=0.01)
    for busy in ("decode", "inference", "encode", "sink"):  # every one of them did work
        assert summary["stages"][busy]["seconds"] > 0, busy
    [stream] = summary["streams"]
    assert stream["input"] == str(pan_clip.path)
    assert stream["written"] == pan_clip.frames
    assert stream["corrupt_skipped"] == 0
    assert Path(stream["jsonl"]) == out / "pan.jsonl"
    assert Path(stream["video"]) == out / "pan.mp4"
    assert len((out / "pan.jsonl").read_text().splitlines()) == pan_clip.frames
    assert (out / "pan.mp4").stat().st_size > 0


def test_ctrl_c_stops_the_run_with_exit_code_130(zoo_repository: Path, tmp_path: Path) -> None:
    """SIGINT once results are coming: exit 130, every line written so far is whole JSON."""
    clip = make_clip(tmp_path / "long.mp4", frames=400, audio=False)
    out = tmp_path / "out"
    jsonl = out / "long.jsonl"
    args = video_run(
        clip.path, "--pipeline", "faces", "--repository", zoo_repository, "--out", out,
        "--video-out",
    )  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if jsonl.is_file() and len(jsonl.read_bytes().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before Ctrl-C: {proc.communicate()[1]}"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    raw = jsonl.read_bytes()
    assert raw.endswith(b"\n"), "the last line was cut off"
    lines = [json.loads(line) for line in raw.splitlines()]
    assert 5 <= len(lines) < clip.frames
    assert [line["frame"] for line in lines] == list(range(len(lines)))
    assert [line["pts_ticks"] for line in lines] == list(clip.pts[: len(lines)])


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("png", "still image"),
        ("text", "not a video FFmpeg can read"),
        ("empty", "not a video FFmpeg can read"),
        ("audio", "expected a video stream"),
        ("missing", "no such file"),
    ],
)
def test_a_file_that_is_not_a_video_exits_1_with_the_message(
    kind: str, message: str, zoo_repository: Path, tmp_path: Path
) -> None:
    path = write_bad_input(tmp_path / f"input-{kind}.mp4", kind)
    done = run_cli(
        path, "--pipeline", "faces", "--repository", zoo_repository, "--out", tmp_path / "out"
    )
    assert done.returncode == 1, done.stderr
    assert f"frameserve video run: {path}: " in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_mask_track_on_a_faces_pipeline_exits_1(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    done = run_cli(
        pan_clip.path, "--pipeline", "faces", "--repository", zoo_repository,
        "--out", tmp_path / "out", "--mask-track",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "frameserve video run: --mask-track: pipeline faces" in done.stderr
    assert "person-mask" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_pipeline_exits_1_naming_the_built_ins(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    done = run_cli(
        pan_clip.path, "--pipeline", "nope", "--repository", zoo_repository,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "frameserve video run: --pipeline:" in done.stderr
    assert "'nope'" in done.stderr and "faces" in done.stderr


def test_decode_threads_and_inflight_flags(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = run_cli(
        pan_clip.path, "--pipeline", "faces", "--repository", zoo_repository, "--out", out,
        "--decode-threads", "1", "--inflight", "2", "--profile",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frames"] == pan_clip.frames
    bad = run_cli(pan_clip.path, "--pipeline", "faces", "--inflight", "0")
    assert bad.returncode == 2 and "--inflight: expected an integer >= 1, got 0" in bad.stderr


def test_compiled_models_are_cached_where_asked(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """The compiled-model cache (OpenVINO's CACHE_DIR) fills on the first run, with the edited
    graph beside it (``frameserve-converted``); the flag that turns it off leaves it alone."""
    cache = tmp_path / "compiled"
    common = (pan_clip.path, "--pipeline", "faces", "--repository", zoo_repository)
    first = run_cli(*common, "--out", tmp_path / "a", "--model-cache-dir", cache)
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in cache.iterdir())
    blobs = [name for name in names if name.endswith(".blob")]
    assert blobs and set(names) - set(blobs) == {"frameserve-converted"}, names
    converted = sorted(p.name for p in (cache / "frameserve-converted").iterdir())
    assert len(converted) == 1, converted  # faces, edited once
    again = run_cli(*common, "--out", tmp_path / "b", "--model-cache-dir", cache)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in cache.iterdir()) == names  # loaded, not compiled anew
    assert sorted(p.name for p in (cache / "frameserve-converted").iterdir()) == converted
    off = tmp_path / "unused"
    done = run_cli(*common, "--out", tmp_path / "c", "--model-cache-dir", off, "--no-model-cache")
    assert done.returncode == 0, done.stderr
    assert not off.exists()


def test_one_input_decodes_on_a_core_of_its_own_and_the_models_get_the_rest(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """With a core to spare (2 here), the input's decode worker binds to the mask's last core and
    the models are compiled for the cores left, their inference threads bound to them;
    ``--no-pin-decoders`` keeps the old layout. Both give the same results."""
    mask = sorted(os.sched_getaffinity(0))
    common = (pan_clip.path, "--pipeline", "faces", "--repository", zoo_repository,
              "--profile", "--log-level", "info")  # fmt: skip
    bound = run_cli(*common, "--out", tmp_path / "b")
    free = run_cli(*common, "--out", tmp_path / "f", "--no-pin-decoders")
    assert bound.returncode == 0, bound.stderr
    assert free.returncode == 0, free.stderr
    bound_run, free_run = json.loads(bound.stdout), json.loads(free.stdout)
    [b], [f] = bound_run["streams"], free_run["streams"]
    assert f["decoder_cores"] == []
    assert free_run["inference_cores"] == []
    if len(mask) < 2:
        assert b["decoder_cores"] == []
        assert bound_run["inference_cores"] == []
    else:
        assert b["decoder_cores"] == [mask[-1]]
        assert bound_run["inference_cores"] == mask[:-1]
        assert "less 1 for the decode workers" in bound.stderr
        assert "less 1 for the decode workers" not in free.stderr
    name = f"{pan_clip.path.stem}.jsonl"
    assert (tmp_path / "b" / name).read_text() == (tmp_path / "f" / name).read_text()
