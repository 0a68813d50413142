"""``frameserve quantize`` on the zoo's real models, with calibration frames from real images.

The faces model is quantized on a pan over ``skimage.data.astronaut()`` and its INT8 version
served; person-mask, calibrated on a folder of astronaut framings, meets a gate of 0 and must
leave the repository as it was. Subsets are small (30 frames) to keep the file short.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video.media import ASTRONAUT_FACE, astronaut, make_clip, write_not_a_video

from frameserve.backends.openvino_quantize import quantized_ops
from frameserve.cli.main import main
from frameserve.processing.results import Detections
from frameserve.processing.tasks import DecodeOptions
from frameserve.serving.local import LocalServer
from frameserve.serving.predict import Timings
from frameserve.serving.server import ServerSettings
from frameserve.tools.accuracy import box_iou
from frameserve.tools.calibration import split_frames


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """50 frames panning over the astronaut: 30 calibrate, 20 are held out."""
    path = tmp_path_factory.mktemp("quantize-clip") / "pan.mp4"
    make_clip(path, frames=50, motion="pan", audio=False)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """25 framings of the astronaut (crops, zooms, mirror images) and a file to skip."""
    folder = tmp_path_factory.mktemp("quantize-images")
    a = astronaut()
    for i in range(25):
        x, y, size = 8 * i, 4 * i, 512 - 10 * i
        crop = a[y : y + size, x : x + size]
        image = Image.fromarray(crop[:, ::-1] if i % 2 else crop).resize((320 + 8 * i, 320))
        image.save(folder / f"frame{i:02d}.{'png' if i % 3 else 'jpg'}")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def model_repository(zoo: Path, dest: Path, *names: str) -> Path:
    """A private copy of some zoo models (the session's zoo stays read-only)."""
    repo = dest / "models"
    for name in names:
        shutil.copytree(zoo / name, repo / name)
    return repo


def quantize_cli(repo: Path, model: str, calibration: Path, *extra: str) -> int:
    argv = ["quantize", "--repository", str(repo), "--model", model]
    return main([*argv, "--calibration", str(calibration), *extra])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".quantize-"))


# --------------------------------------------------------------------------- the gate


def test_faces_int8_version_passes_the_gate_and_serves(
    zoo_repository: Path, pan_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = model_repository(zoo_repository, tmp_path, "faces")
    argv = ["--subset", "30", "--max-drop", "0.15", "--float-head", "--json"]
    assert quantize_cli(repo, "faces", pan_clip, *argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["written"] and report["served"]
    assert (report["source_version"], report["out_version"]) == (1, 2)
    assert (report["calibration_frames"], report["held_out_frames"]) == (30, 20)
    assert report["source_frames"] == 50
    assert report["metric"] == "box IoU agreement" and report["source_score"] == 1.0
    assert 0.0 < report["drop"] <= 0.15
    assert report["drop"] == pytest.approx(1.0 - report["int8_score"])

    version = repo / "faces" / "2"
    assert sorted(p.name for p in version.iterdir()) == ["model.bin", "model.xml"]
    assert leftovers(repo / "faces") == []
    ops = quantized_ops(version / "model.xml")
    assert ops["FakeQuantize"] > 0 and ops["int8 constants"] > 0
    assert report["quantized_ops"] == ops

    # The unchanged model.yaml (latest: 1) now serves the INT8 version, and it finds the face.
    settings = ServerSettings(
        repository=repo, model_control_mode="explicit", load_models=("faces",)
    )
    with LocalServer(settings) as local:
        assert local.server.repository.versions_of("faces") == [2]
        result = local.call(
            local.server.predictor.predict("faces", astronaut(), DecodeOptions(), Timings())
        )
    assert isinstance(result, Detections) and len(result) == 1
    assert box_iou(result.boxes, np.array([ASTRONAUT_FACE]))[0, 0] > 0.7

    # The newest version is now the INT8 one: quantizing it again is refused.
    assert quantize_cli(repo, "faces", pan_clip, "--subset", "30") == 1
    err = capsys.readouterr().err
    assert "faces/2/model.xml: expected a float model, got one already quantized" in err
    assert "choose its float source version with --version" in err


def test_a_gate_tighter_than_the_drop_fails_and_writes_nothing(
    zoo_repository: Path, image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = model_repository(zoo_repository, tmp_path, "person-mask")
    before = sorted(p.name for p in (repo / "person-mask").iterdir())
    assert quantize_cli(repo, "person-mask", image_folder, "--max-drop", "0") == 1
    out, err = capsys.readouterr()
    # 25 images, shorter than 300 + 75: 20 % (5) held out, 20 calibrate.
    assert "calibration: 20 frames, held out: 5 frames, of 25 in " in out
    assert "metric: mask IoU" in out and "FAIL, nothing written" in out
    assert "would serve version" in out  # nothing was written, so nothing serves it yet
    drop = float(out.split("drop: ")[1].split(",")[0])
    assert drop > 0.0  # the premise: INT8 masks differ somewhere
    assert f"mask IoU: drop {drop:.4f} exceeds --max-drop 0.0; nothing written" in err
    assert sorted(p.name for p in (repo / "person-mask").iterdir()) == before


# ------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory, zoo_repository: Path) -> Path:
    """faces' model.yaml and version 1, plus a model on ONNX Runtime (nothing is quantized)."""
    repo = tmp_path_factory.mktemp("quantize-bad") / "models"
    shutil.copytree(zoo_repository / "faces", repo / "faces")
    (repo / "on-ort" / "1").mkdir(parents=True)
    (repo / "on-ort" / "model.yaml").write_text("backend: onnxruntime\nmax_batch_size: 4\n")
    return repo


@pytest.fixture(scope="module")
def bad_calibration(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantize-bad-calibration")
    empty = root / "no-images"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here\n")
    (empty / "clip.mp4").write_bytes(b"")
    return {
        "no-images": empty,
        "text": write_not_a_video(root / "notes.mp4", "text"),
        "still": write_not_a_video(root / "still.mp4", "png"),
        "missing": root / "nowhere",
    }


@pytest.mark.parametrize(
    ("model", "calibration", "extra", "message"),
    [
        ("nope", "text", [], "--model: expected one of ['faces', 'on-ort'] in "),
        ("on-ort", "text", [], "backend: quantize needs backend openvino, got onnxruntime; "
                               "convert it first with frameserve convert"),
        ("faces", "missing", [], "nowhere: no such file or folder"),
        ("faces", "no-images", [], "expected a folder of images (JPEG, PNG, WebP, BMP, TIFF) "
                                   "or a video, found clip.mp4, readme.txt"),
        ("faces", "text", [], "not a video FFmpeg can read"),
        ("faces", "still", [], "is a still image"),
        ("faces", "text", ["--subset", "0"], "--subset: expected at least 1 calibration frame"),
        ("faces", "text", ["--max-drop", "1.5"], "expected a number within 0..1, got 1.5"),
        ("faces", "text", ["--max-drop", "-0.1"], "--max-drop: expected a number within 0..1"),
        ("faces", "text", ["--version", "3"], "--version: expected one of [1] of faces, got 3"),
        ("faces", "text", ["--out-version", "1"], "exists; expected a free number"),
    ],
)  # fmt: skip
def test_bad_inputs_exit_1_saying_what_and_where(
    small_repo: Path,
    bad_calibration: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    model: str,
    calibration: str,
    extra: list[str],
    message: str,
) -> None:
    assert quantize_cli(small_repo, model, bad_calibration[calibration], *extra) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("frameserve quantize: ") and message in err, err
    assert sorted(p.name for p in (small_repo / "faces").iterdir()) == [
        "1", "LICENSE", "SOURCE.txt", "model.yaml"
    ]  # fmt: skip


# ------------------------------------------------------------------------- the split


@pytest.mark.parametrize(
    ("available", "subset", "calibration", "held_out"),
    [(1000, 300, 300, 75), (50, 30, 30, 20), (25, 300, 20, 5), (2, 300, 1, 1), (500, 10, 10, 20)],
)
def test_split_spreads_disjoint_frames_over_the_source(
    available: int, subset: int, calibration: int, held_out: int
) -> None:
    split = split_frames(available, subset)
    assert (len(split.calibration), len(split.held_out)) == (calibration, held_out)
    assert not set(split.calibration) & set(split.held_out)
    chosen = sorted(split.calibration + split.held_out)
    assert chosen[0] == 0 and chosen[-1] == available - 1  # from the start to the end
    assert all(0 <= i < available for i in chosen)


def test_split_needs_two_frames() -> None:
    from frameserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match="at least 2 frames"):
        split_frames(1, 300)


def test_the_help_states_the_split_rule_of_the_code() -> None:
    from frameserve.cli import quantize as cli
    from frameserve.tools.calibration import HELD_OUT_SHARE, MIN_HELD_OUT

    assert f"max({MIN_HELD_OUT}, N/4)" in cli._SPLIT
    assert f"{HELD_OUT_SHARE:.0%}%" in cli._SPLIT  # argparse's "%%"
