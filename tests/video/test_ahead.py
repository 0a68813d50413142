"""Decoding ahead of the model load (``video.ahead``): ``video run`` plans each input's worker
spec from the files, the warm worker decodes before the run exists, the run takes it over when
its own plan is the same and decodes afresh when it is not; the results are those of decoding
in process, and no ring outlives its run."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import replace
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import pytest

from frameserve.serving.local import LocalServer
from frameserve.video import warm
from frameserve.video.ahead import decode_ahead, plan_ahead
from frameserve.video.config import load_video_pipeline
from frameserve.video.decode import probe
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import RunSummary
from frameserve.video.worker import (
    READ_AHEAD_BYTES,
    READ_AHEAD_FRAMES,
    SLOTS,
    WorkerSpec,
    ring_slots,
)
from video.media import Clip

pytestmark = pytest.mark.timeout(120)

FRAMESERVE = Path(sys.executable).parent / "frameserve"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def plan(
    repository: Path, pipeline: str, inputs: list[Path], **options: Any
) -> list[WorkerSpec] | None:
    name, config = load_video_pipeline(pipeline, repository)
    infos = [probe(p) for p in inputs]
    run_options = RunOptions(**{"decode_threads": 1, **options})
    return plan_ahead(name, config, inputs, infos, run_options, repository)


def video_run(
    local: LocalServer, repository: Path, pipeline: str, inputs: list[Path], out: Path,
    workers: list[warm.WarmWorker], **options: Any,
) -> tuple[VideoRun, RunSummary]:  # fmt: skip
    name, config = load_video_pipeline(pipeline, repository)
    infos = [probe(p) for p in inputs]
    run_options = RunOptions(out=out, **{"decode_threads": 1, **options})
    video = VideoRun(local, name, config, inputs, run_options, infos=infos, warm=workers)
    return video, video.run()


def freed(name: str) -> bool:
    try:
        SharedMemory(name).close()
    except FileNotFoundError:
        return True
    return False


@pytest.mark.parametrize("pipeline", ["faces", "person-mask"])
@pytest.mark.parametrize("count", [1, 2])
def test_the_plan_from_the_files_is_the_plan_of_the_loaded_models(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, zoom_clip: Clip,
    tmp_path: Path, pipeline: str, count: int,
) -> None:  # fmt: skip
    inputs = [pan_clip.path, zoom_clip.path][:count]
    specs = plan(zoo_repository, pipeline, inputs)
    assert specs is not None and len(specs) == count
    name, config = load_video_pipeline(pipeline, zoo_repository)
    workers = warm.start(count)
    try:
        options = RunOptions(out=tmp_path, decode_threads=1)
        video = VideoRun(video_server, name, config, inputs, options, warm=workers)
        assert [video._worker_spec(st) for st in video.streams] == specs
    finally:
        for w in workers:
            w.close()
    share = READ_AHEAD_FRAMES // count
    assert specs[0].slots == ring_slots(specs[0].slot_bytes, specs[0].group, share) > SLOTS


@pytest.mark.parametrize("pipeline", ["faces", "person-mask"])
def test_inputs_decoded_ahead_give_the_results_of_decoding_in_process(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, zoom_clip: Clip,
    tmp_path: Path, pipeline: str, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    inputs = [pan_clip.path, zoom_clip.path]
    workers = warm.start(len(inputs))
    assert decode_ahead(workers, plan(zoo_repository, pipeline, inputs)) == 2
    rings = [w.ring.name for w in workers if w.ring is not None]
    assert len(rings) == 2
    # the first group comes before there is any run to ask for it
    assert all(w.conn.poll(60) for w in workers)
    with caplog.at_level(logging.INFO, logger="frameserve.video.worker"):
        video, ahead = video_run(
            video_server, zoo_repository, pipeline, inputs, tmp_path / "a", workers
        )
    assert "decoding afresh" not in caplog.text  # both taken over, with what they decoded
    assert video._warm == {} and all(w.ring is None for w in workers)
    _, here = video_run(video_server, zoo_repository, pipeline, inputs, tmp_path / "p", [])
    assert ahead.frames == here.frames == pan_clip.frames + zoom_clip.frames
    for clip in (pan_clip, zoom_clip):
        name = f"{clip.path.stem}.jsonl"
        assert lines(tmp_path / "a" / name) == lines(tmp_path / "p" / name)
    assert all(freed(r) for r in rings)
    assert not any(w.process.is_alive() for w in workers)


def test_a_plan_the_loaded_model_disagrees_with_is_decoded_afresh(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """A model whose batch the runtime decides, or a file changed during the load: the worker
    decoding for the other plan is ended, and a fresh one decodes for the run's plan."""
    specs = plan(zoo_repository, "faces", [pan_clip.path])
    assert specs is not None
    [worker] = warm.start(1)
    decode_ahead([worker], [replace(specs[0], group=2)])
    assert worker.ring is not None
    ring = worker.ring.name
    assert worker.conn.poll(60)  # it is decoding in groups of 2
    with caplog.at_level(logging.INFO, logger="frameserve.video.worker"):
        _, summary = video_run(
            video_server, zoo_repository, "faces", [pan_clip.path], tmp_path / "a", [worker]
        )
    assert "decoded ahead for another plan than the loaded model's; decoding afresh" in caplog.text
    assert not worker.process.is_alive() and freed(ring)
    _, here = video_run(video_server, zoo_repository, "faces", [pan_clip.path], tmp_path / "p", [])
    assert summary.frames == here.frames == pan_clip.frames
    name = f"{pan_clip.path.stem}.jsonl"
    assert lines(tmp_path / "a" / name) == lines(tmp_path / "p" / name)


def test_a_worker_decoding_ahead_that_no_run_takes_is_ended_with_its_ring(
    zoo_repository: Path, pan_clip: Clip
) -> None:
    """The models failed to load, or the run needs whole frames: closing ends the child
    mid-decode and frees the ring."""
    [worker] = warm.start(1)
    decode_ahead([worker], plan(zoo_repository, "faces", [pan_clip.path]))
    assert worker.ring is not None
    ring = worker.ring.name
    worker.close()
    assert not worker.process.is_alive() and worker.ring is None and freed(ring)
    worker.close()  # twice is harmless (the CLI closes every worker it started)


def test_no_plan_where_the_files_do_not_say_it(
    zoo_repository: Path, pan_clip: Clip, zoom_clip: Clip, tmp_path: Path
) -> None:
    two = [pan_clip.path, zoom_clip.path]
    assert plan(zoo_repository, "faces", two, video_out=True) is None  # whole frames: in process
    assert plan(zoo_repository, "faces", two, decode_threads=0) is None  # the budget decides
    assert plan(zoo_repository, "ocr", two) is None  # a chain of models
    # a model whose instances the runtime sizes: with two inputs their share of frames in
    # flight, and so the group, is the runtime's; with one input the group is the batch
    repo = tmp_path / "models"
    (repo / "faces").mkdir(parents=True)
    config = (zoo_repository / "faces" / "model.yaml").read_text()
    (repo / "faces" / "model.yaml").write_text(config.replace("instances: 2\n", ""))
    assert plan(repo, "faces", two) is None
    [one] = plan(repo, "faces", [pan_clip.path]) or [None]
    assert one is not None and one.group == 8
    assert plan(repo, "faces", two, inflight=8) is not None  # asked for: the group is 4
    (repo / "faces" / "model.yaml").write_text("backend: [")  # the load reports it, not the plan
    assert plan(repo, "faces", [pan_clip.path]) is None
    assert decode_ahead([], None) == 0


def test_rings_have_room_to_read_ahead_within_their_share_of_memory() -> None:
    faces, person = 8 * 192 * 192 * 3, 8 * 256 * 256 * 3  # a group of 8 at model size
    assert ring_slots(faces, 8, 0) == SLOTS  # jobs: a server runs many
    assert ring_slots(faces, 8, READ_AHEAD_FRAMES) == READ_AHEAD_FRAMES // 8
    # 4 inputs share it: 64 frames and 8 MB each, 5 groups of 1.5 MB
    assert ring_slots(person, 8, READ_AHEAD_FRAMES // 4) == (READ_AHEAD_BYTES // 4) // person
    large = 6 << 20  # bounded by bytes
    assert SLOTS < ring_slots(large, 8, READ_AHEAD_FRAMES) == READ_AHEAD_BYTES // large < 16
    assert ring_slots(person, 8, READ_AHEAD_FRAMES) * person <= READ_AHEAD_BYTES
    whole = 8 * 1280 * 720 * 3  # groups holding whole frames: never below SLOTS
    assert READ_AHEAD_BYTES // whole <= SLOTS == ring_slots(whole, 8, READ_AHEAD_FRAMES)


def test_video_run_decodes_ahead_of_the_model_load(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """The command as a user runs it: the input is sent before the models load, and the run
    takes the worker over."""
    args = [
        str(FRAMESERVE), "video", "run", str(pan_clip.path), "--pipeline", "faces",
        "--repository", str(zoo_repository), "--out", str(tmp_path), "--log-level", "debug",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    sent = done.stderr.index("decoding 1 input(s) ahead of the model load")
    assert sent < done.stderr.index("ready: 1 model version(s) loaded")
    assert "decoding afresh" not in done.stderr
    assert len((tmp_path / "pan.jsonl").read_text().splitlines()) == pan_clip.frames


def test_video_run_forks_its_worker_with_the_results_of_a_spawned_one(
    zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """``video run`` forks its worker once the input is planned (the command runs one thread
    then, and the child has its libraries); a command that runs another thread from its start
    spawns it, as before. The lines are the same."""
    common = [
        "video", "run", str(pan_clip.path), "--pipeline", "faces",
        "--repository", str(zoo_repository), "--log-level", "debug", "--out",
    ]  # fmt: skip
    forked = subprocess.run(
        [str(FRAMESERVE), *common, str(tmp_path / "f")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert forked.returncode == 0, forked.stderr
    threaded = (
        "import threading; threading.Thread(target=threading.Event().wait, daemon=True).start(); "
        "from frameserve.cli.main import console; console()"
    )
    spawned = subprocess.run(
        [sys.executable, "-c", threaded, *common, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    # the input's worker, and a second decoder's where the input has one (video.split)
    assert re.search(r"[12] decode worker\(s\) forked", forked.stderr)
    assert "forked" not in spawned.stderr  # spawned at its start, before logging is set up
    for done in (forked, spawned):
        assert "decoding 1 input(s) ahead of the model load" in done.stderr
    name = f"{pan_clip.path.stem}.jsonl"
    assert lines(tmp_path / "f" / name) == lines(tmp_path / "s" / name)
    assert len(lines(tmp_path / "f" / name)) == pan_clip.frames
