"""``frameserve tune --pipeline``: the real ``faces`` pipeline with the zoo model on a short
clip (``video.media``), in process, with a tiny budget; the written model.yaml is validated
and loaded by the server. Nothing here asserts speed: the targets are either trivially
reachable (1 fps) or out of reach (100000 fps).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from video.media import make_clip, write_bad_input

from frameserve.cli.main import main
from frameserve.cli.tune_video import run_video_tune
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.tools.tune_space import Candidate, Precision
from frameserve.tools.tune_video import (
    PipelinePoint,
    VideoSpace,
    VideoTrial,
    coordinate_search,
    decode_thread_counts,
    video_batch_sizes,
)

pytestmark = pytest.mark.timeout(120)

TINY = ["--budget-minutes", "0.05", "--window", "0.2", "--final-window", "0.2"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 frames of the astronaut at 640x360: a trial runs the whole clip in well under 1 s."""
    return make_clip(tmp_path_factory.mktemp("tune") / "pan.mp4", frames=48, audio=False).path


@pytest.fixture
def repository(zoo_repository: Path, tmp_path: Path) -> Path:
    """The zoo's faces model, copied: the tuner writes into it."""
    repo = tmp_path / "models"
    shutil.copytree(zoo_repository / "faces", repo / "faces")
    return repo


def tune(repository: Path, inputs: list[Path], *extra: str, pipeline: str = "faces") -> int:
    args = ["tune", "--pipeline", pipeline, "--repository", str(repository)]
    for path in inputs:
        args += ["--input", str(path)]
    return main([*args, *TINY, *extra])


def backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("model.yaml.*.bak"))


# -- end to end ---------------------------------------------------------------------------------
def test_tune_writes_settings_the_server_loads(
    repository: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = (repository / "faces" / "model.yaml").read_text()
    report = tmp_path / "report"
    rc = tune(repository, [clip, clip], "--target-fps", "1", "--report", str(report))
    out = capsys.readouterr()
    assert rc == 0, out.err

    config = load_model_config(repository / "faces" / "model.yaml")
    assert [b.read_text() for b in backups(repository / "faces")] == [original]
    trials = json.loads((report / "trials.json").read_text())
    finals = [t for t in trials if t["rung"] == "final" and t["feasible"]]
    chosen = min(finals, key=lambda t: t["cpu_ms_per_frame"])["models"]["faces"]
    assert config.instances == chosen["instances"] and config.threads == chosen["threads"]
    assert config.max_batch_size == chosen["max_batch_size"]
    text = (report / "report.md").read_text()
    assert "chosen:" in text and "written:" in text and "| screen |" in text
    assert "frames in flight" in out.out and "wrote" in out.out

    settings = ServerSettings(
        repository=repository, model_control_mode="explicit", load_models=("faces",)
    )
    with LocalServer(settings) as local:
        mv = local.server.model_version("faces")
        assert (mv.max_batch_size, mv.instances) == (chosen["max_batch_size"], config.instances)


def test_unreachable_target_exits_1_and_leaves_model_yaml(
    repository: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (repository / "faces" / "model.yaml").read_bytes()
    report = tmp_path / "report"
    rc = tune(repository, [clip], "--target-fps", "100000", "--report", str(report))
    err = capsys.readouterr().err
    assert rc == 1
    assert "no configuration of faces reached --target-fps 100000" in err
    assert (repository / "faces" / "model.yaml").read_bytes() == before
    assert backups(repository / "faces") == []
    assert "nothing was written" in (report / "report.md").read_text()
    trials = json.loads((report / "trials.json").read_text())
    assert trials and not any(t["feasible"] for t in trials)


def test_dry_run_reports_and_writes_nothing(repository: Path, clip: Path, tmp_path: Path) -> None:
    before = (repository / "faces" / "model.yaml").read_bytes()
    report = tmp_path / "report"
    rc = tune(repository, [clip], "--target-fps", "1", "--budget-minutes", "0.001", "--dry-run",
              "--report", str(report))  # fmt: skip
    assert rc == 0
    assert (repository / "faces" / "model.yaml").read_bytes() == before
    assert backups(repository / "faces") == []
    assert "model.yaml: not written" in (report / "report.md").read_text()


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "no such file"),
        ("png", "is a still image"),
        ("text", "not a video FFmpeg can read"),
        ("audio", "expected a video stream, found streams: audio"),
    ],
)
def test_bad_input_is_refused(
    repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    path = write_bad_input(tmp_path / f"input.{'png' if kind == 'png' else 'mp4'}", kind)
    assert tune(repository, [path], "--target-fps", "30") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"frameserve tune: {path}: ") and message in err


def test_unknown_pipeline_and_missing_model(
    repository: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tune(repository, [clip], "--target-fps", "30", pipeline="no-such-pipeline") == 1
    err = capsys.readouterr().err
    assert "frameserve tune: --pipeline: expected a YAML file, a built-in pipeline" in err
    assert "got 'no-such-pipeline'" in err
    assert tune(repository, [clip], "--target-fps", "30", pipeline="person-mask") == 1
    err = capsys.readouterr().err
    assert "--pipeline person-mask: models ['person-mask'] have no folder" in err


def test_missing_arguments_exit_2(
    repository: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tune(repository, [], "--target-fps", "30") == 2
    assert "--pipeline needs --input VIDEO" in capsys.readouterr().err
    assert tune(repository, [clip]) == 2
    assert "--pipeline needs --target-fps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        tune(repository, [clip], "--target-fps", "0")
    assert exc.value.code == 2
    assert "expected a number > 0, got 0" in capsys.readouterr().err


def test_target_fps_not_positive_is_refused(
    repository: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Callers that skip argparse (a job) get the same check as exit 1."""
    args = argparse.Namespace(
        pipeline="faces", input=[clip], target_fps=-5.0, repository=repository,
        budget_minutes=0.05, window=0.2, final_window=0.2, max_batch_size=16, report=None,
        dry_run=True,
    )  # fmt: skip
    assert run_video_tune(args) == 1
    assert "frameserve tune: --target-fps: expected frames per second > 0, got -5" in (
        capsys.readouterr().err
    )


# -- the search ---------------------------------------------------------------------------------
def test_coordinate_search_finds_the_cheapest_point_with_fewer_trials_than_the_grid() -> None:
    """The search on a synthetic landscape (the inputs of the search, not a component): CPU
    per frame is lowest at decode 2, inflight 8, 1x4 b8; fps falls short at 1 decode thread."""
    layouts = ((1, 4), (2, 2), (4, 1))
    space = VideoSpace((1, 2, 4), (4, 8, 16, 32), layouts, (("faces", (4, 8, 16)),))
    precision = Precision(1, "f32")

    def evaluate(point: PipelinePoint) -> VideoTrial:
        c = point.model("faces")
        cpu = (
            abs(point.decode_threads - 2) + abs(point.inflight - 8) / 4
            + layouts.index((c.instances, c.threads)) + abs(c.batch - 8) / 4 + 5.0
        )  # fmt: skip
        fps = 50.0 if point.decode_threads == 1 else 200.0
        return VideoTrial(point, "screen", fps, cpu, 1.0, 100, fps >= 100, point.inflight)

    start = PipelinePoint(4, 32, (("faces", Candidate(precision, 4, 1, 16, 2.0)),))
    seen = coordinate_search(evaluate, space, evaluate(start), passes=2, deadline=float("inf"))
    best = max(seen.values(), key=lambda t: t.score).point
    assert best == PipelinePoint(2, 8, (("faces", Candidate(precision, 1, 4, 8, 2.0)),))
    assert len(seen) < space.size / 2


def test_search_values() -> None:
    assert decode_thread_counts(1) == (1,)
    assert decode_thread_counts(2) == (1, 2)
    assert decode_thread_counts(6) == (1, 2, 4, 6)
    assert decode_thread_counts(16) == (1, 2, 4, 8, 16)
    assert video_batch_sizes(16) == (4, 8, 16)
    assert video_batch_sizes(2) == (2,)
