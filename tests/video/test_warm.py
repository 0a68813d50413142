"""Warm decode workers (``video.warm``): started before the models load, taken over by a run
of a single-model pipeline, ended by every other run; the same results as decoding in process."""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.video import warm
from frameserve.video.config import load_video_pipeline
from frameserve.video.decode import VideoSource, probe
from frameserve.video.frames import Sampling
from frameserve.video.prepare import FramePreparer, normalized
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import RunSummary
from frameserve.video.worker import WorkerDied, bind_to_cores, slot_bytes
from video.media import Clip

pytestmark = pytest.mark.timeout(120)


def run(
    local: LocalServer,
    repository: Path,
    pipeline: str,
    inputs: list[Path],
    out: Path,
    workers: list[warm.WarmWorker],
    **options: Any,
) -> tuple[VideoRun, RunSummary]:
    name, config = load_video_pipeline(pipeline, repository)
    infos = [probe(p) for p in inputs]
    video = VideoRun(
        local, name, config, inputs, RunOptions(out=out, **options), infos=infos, warm=workers
    )
    return video, video.run()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ended(workers: list[warm.WarmWorker], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(w.process.is_alive() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(w.process.is_alive() for w in workers)


@pytest.mark.parametrize("pipeline", ["faces", "person-mask"])
def test_warm_workers_give_the_results_of_decoding_in_process(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, zoom_clip: Clip,
    tmp_path: Path, pipeline: str,
) -> None:  # fmt: skip
    inputs = [pan_clip.path, zoom_clip.path]
    workers = warm.start(len(inputs))
    assert len(workers) == 2 and all(w.process.is_alive() for w in workers)
    video, summary = run(video_server, zoo_repository, pipeline, inputs, tmp_path / "w", workers)
    assert video._warm == {}  # both taken over
    _, here = run(video_server, zoo_repository, pipeline, inputs, tmp_path / "p", [])
    assert summary.frames == here.frames == pan_clip.frames + zoom_clip.frames
    for clip in (pan_clip, zoom_clip):
        name = f"{clip.path.stem}.jsonl"
        assert lines(tmp_path / "w" / name) == lines(tmp_path / "p" / name)
    assert [s.to_json()["decoded"] for s in summary.streams] == [
        s.to_json()["decoded"] for s in here.streams
    ]
    assert ended(workers)


def test_a_run_that_needs_whole_frames_ends_the_warm_workers(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    workers = warm.start(1)
    video, summary = run(
        video_server, zoo_repository, "faces", [pan_clip.path], tmp_path, workers, video_out=True
    )
    assert video._warm == {}
    assert ended(workers, within_s=0.5)  # ended before the run, not left to the parent's exit
    assert summary.frames == pan_clip.frames
    assert (tmp_path / f"{pan_clip.path.stem}.mp4").is_file()


def test_a_warm_worker_that_died_before_its_input_fails_the_run_clearly(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    [worker] = warm.start(1)
    os.kill(worker.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
    worker.process.join(10)
    with pytest.raises(WorkerDied, match="killed by SIGKILL while decoding"):
        run(video_server, zoo_repository, "faces", [pan_clip.path], tmp_path, [worker])


def test_warm_workers_end_when_told_or_when_this_side_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    importing, waiting, orphan = warm.start(3)
    started = time.monotonic()
    importing.close()  # at once: killed while it imports, not waited for
    assert importing.process.exitcode is not None and time.monotonic() - started < 1.0
    orphan.conn.close()  # as when the parent process is gone
    orphan.process.join(30)
    assert orphan.process.exitcode == 0  # ready, then saw the pipe close: ended on its own
    monkeypatch.setattr(warm, "CLOSE_WAIT_S", 60.0)  # long enough to finish its imports
    waiting.close()  # told: it ends by itself once it reads that
    assert waiting.process.exitcode == 0


def test_only_a_process_of_one_thread_forks_its_workers() -> None:
    """A fork copies the locks other threads hold; ``can_fork`` counts the threads the OS
    runs (OpenCV's and OpenBLAS's pools have no Python ``Thread``)."""
    code = (
        "import threading; from frameserve.video import warm; "
        "before = warm.can_fork(); stop = threading.Event(); "
        "threading.Thread(target=stop.wait).start(); after = warm.can_fork()\n"
        "try:\n    warm.start(1, fork=True)\nexcept RuntimeError as err:\n    refused = str(err)\n"
        "stop.set(); print(before, after, refused)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    refused = "decode workers forked from a process that runs threads\n"
    assert out.stdout.split(" ", 2) == ["True", "False", refused], out.stderr


def test_forked_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """Each forked child closes its copies of the parent's pipe ends (its own and those of the
    children before it): when the parent is killed, every child sees its pipe close and ends,
    none waits forever on a pipe it holds itself."""
    code = (
        "import os, signal, sys; from frameserve.video import warm; "
        "workers = warm.start(3, fork=True); "
        "print(' '.join(str(w.process.pid) for w in workers), flush=True); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    # Not ``subprocess.run``: children that outlive the parent hold its stdout open.
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert parent.wait(60) == -signal.SIGKILL
    parent.stdout.close()
    assert len(pids) == 3

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended

    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    for pid in left:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_no_warm_workers_for_more_inputs_than_the_limit() -> None:
    assert warm.start(warm.MAX_INPUTS + 1) == []
    assert warm.start(0) == []


def test_warm_module_imports_only_the_standard_library() -> None:
    """It runs first in ``video run``: the children start before any heavy import."""
    code = (
        "import sys; import frameserve.video.warm; "
        "print(' '.join(m for m in ('numpy', 'cv2', 'av', 'openvino', 'pydantic') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("model", ["person-mask", "faces"])
def test_a_group_normalised_later_equals_one_normalised_at_once(
    zoo_repository: Path, pan_clip: Clip, model: str
) -> None:
    """What a decode worker ships (pictures at model size) and what the run then makes of it
    (``normalized``) is bit for bit the tensor of preparing in process."""
    spec = load_model_config(zoo_repository / model / "model.yaml").preprocess
    assert spec is not None
    pre = Preprocessor(spec, spec.fuse)  # as the server builds it (faces: normalised in its graph)
    preparer = FramePreparer(pre, "test")
    source = VideoSource(pan_clip.path, 0, Sampling.parse("all"), 1)
    frames = list(itertools.islice(source.frames(threading.Event()), 3))
    at_once = preparer.group([preparer.prepare(copy.copy(f)) for f in frames])
    shipped = preparer.group([preparer.prepare(f) for f in frames], normalize=False)
    assert at_once.normalized and not shipped.normalized
    assert shipped.tensor is not None and shipped.tensor.dtype == np.uint8
    later = normalized(shipped, pre)
    assert later.normalized
    assert at_once.tensor is not None and later.tensor is not None
    assert later.tensor.dtype == at_once.tensor.dtype and later.tensor.shape == at_once.tensor.shape
    assert np.array_equal(later.tensor, at_once.tensor)
    assert all(p.seconds["preprocess"] > 0 for p in later.frames)


def test_slots_hold_what_is_shipped(zoo_repository: Path) -> None:
    """Pictures at model size, uint8: a quarter of a float tensor (``/dev/shm`` is 64 MB in a
    default Docker container)."""
    spec = load_model_config(zoo_repository / "person-mask" / "model.yaml").preprocess
    assert spec is not None and not spec.fuse  # the model takes a float tensor
    assert slot_bytes(spec, False, (1280, 720), 8, full=False) == 8 * 256 * 256 * 3
    assert slot_bytes(spec, False, (1280, 720), 8, full=True) == 8 * (256 * 256 + 1280 * 720) * 3


def test_no_processes_to_spare_means_decoding_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake only for the failure: the real spawn cannot be made to fail on demand."""

    def refuse(self: Any) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.get_context("spawn").Process, "start", refuse)
    assert warm.start(2) == []
    assert "decode workers not started" in caplog.text


def test_a_worker_given_a_core_binds_to_it_with_the_same_results(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """A warm worker given a core (``video run`` picks it: ``cpu.decoder_cores``) binds itself
    to it and decodes and pre-processes on one thread; the results are those of an unbound
    worker, line for line, and the run says which core it had."""
    core = sorted(os.sched_getaffinity(0))[-1]
    inputs = [pan_clip.path]
    _, bound = run(
        video_server, zoo_repository, "faces", inputs, tmp_path / "b", warm.start(1),
        decode_threads=1, decoder_cores=((core,),),
    )  # fmt: skip
    _, free = run(
        video_server, zoo_repository, "faces", inputs, tmp_path / "f", warm.start(1),
        decode_threads=1,
    )  # fmt: skip
    assert bound.streams[0].decoder_cores == (core,)
    assert bound.streams[0].to_json()["decoder_cores"] == [core]
    assert free.streams[0].decoder_cores == ()
    name = f"{pan_clip.path.stem}.jsonl"
    assert lines(tmp_path / "b" / name) == lines(tmp_path / "f" / name)
    assert bound.frames == free.frames == pan_clip.frames


def test_cores_are_for_warm_workers_only(
    video_server: LocalServer, zoo_repository: Path, pan_clip: Clip, tmp_path: Path
) -> None:
    """A run that decodes in its own threads (no warm worker) binds nothing."""
    _, summary = run(
        video_server, zoo_repository, "faces", [pan_clip.path], tmp_path, [],
        decoder_cores=((0,),),
    )  # fmt: skip
    assert summary.streams[0].decoder_cores == ()
    assert summary.frames == pan_clip.frames


def test_a_core_the_os_refuses_leaves_the_worker_unbound(caplog: pytest.LogCaptureFixture) -> None:
    """``sched_setaffinity`` binds the calling thread only: the test binds a thread of its own."""
    got: list[tuple[int, ...]] = []
    mask = sorted(os.sched_getaffinity(0))
    outside = max(mask) + 4096  # no such core

    def bind(cores: tuple[int, ...]) -> None:
        got.append(bind_to_cores(cores))

    for cores in [(outside,), (mask[-1],), ()]:
        t = threading.Thread(target=bind, args=(cores,))
        t.start()
        t.join()
    assert got == [(), (mask[-1],), ()]
    assert f"not bound to cores [{outside}]" in caplog.text
    assert sorted(os.sched_getaffinity(0)) == mask  # this thread's mask did not change
