"""Job limits with a real state folder: retention, the state-folder quota, and videos whose
header is over the frame-size, frame-count or duration limits (docs/security-limits.md).

Real clips (PyAV), the real zoo ``faces`` model on an in-process server, the real SQLite
store. Waits poll and give up after a generous limit only so that a hang fails the test.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from frameserve.errors import InsufficientStorage, NotFound, PayloadTooLarge
from frameserve.serving.local import LocalServer
from frameserve.video.frames import Frame
from frameserve.video.jobs import JobQueue, JobRecord, JobSettings, JobSpec
from frameserve.video.jobs.runner import JobRunner
from frameserve.video.limits import VideoLimits, folder_bytes
from video.media import Clip, make_clip

pytestmark = pytest.mark.timeout(120)

WAIT_S = 60.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """24 frames of 160x120 at 24 fps (1 s)."""
    media = tmp_path_factory.mktemp("media")
    return make_clip(media / "small.mp4", frames=24, size=(160, 120), gop=12, audio=False)


@pytest.fixture
def make_queue(
    video_server: LocalServer, clip: Clip, tmp_path: Path
) -> Iterator[Callable[..., JobQueue]]:
    queues: list[JobQueue] = []

    def make(**limits: Any) -> JobQueue:
        settings = JobSettings(
            state_dir=tmp_path / "state",
            media_root=clip.path.parent,
            limits=VideoLimits(**limits),
        )
        jobs = JobQueue(video_server, settings)
        jobs.start()
        queues.append(jobs)
        return jobs

    yield make
    for jobs in queues:
        jobs.close(10.0)
    left = [t.name for t in threading.enumerate() if t.name.startswith(("job-", "job-retention"))]
    assert not left, f"threads left behind: {left}"


def wait_until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)
    return value


def finished(jobs: JobQueue, job_id: str) -> JobRecord:
    def done() -> JobRecord | None:
        record = jobs.get(job_id)
        return record if record.state in ("succeeded", "failed", "cancelled") else None

    return wait_until(done, f"job {job_id} to finish")


def gone(jobs: JobQueue, job_id: str) -> bool:
    try:
        jobs.get(job_id)
    except NotFound:
        return True
    return False


def test_finished_jobs_and_their_files_go_after_the_retention(
    make_queue: Callable[..., JobQueue],
) -> None:
    jobs = make_queue(job_retention_s=1.0)
    record = finished(jobs, jobs.submit(JobSpec(pipeline="faces", input="small.mp4")).id)
    assert record.state == "succeeded", record.error
    folder = jobs.settings.state_dir / "jobs" / record.id
    assert (folder / "results.jsonl").is_file()
    wait_until(
        lambda: gone(jobs, record.id) and not folder.exists(),
        "the retention thread to delete the job and its files",
    )
    assert jobs.list() == []


def test_purge_keeps_jobs_younger_than_the_retention(
    make_queue: Callable[..., JobQueue],
) -> None:
    jobs = make_queue(job_retention_s=3600.0)
    record = finished(jobs, jobs.submit(JobSpec(pipeline="faces", input="small.mp4")).id)
    assert jobs.purge_expired() == []
    assert jobs.get(record.id).state == "succeeded"
    assert jobs.purge_expired(now=time.time() + 3601) == [record.id]
    assert gone(jobs, record.id)
    assert not (jobs.settings.state_dir / "jobs" / record.id).exists()


def test_new_jobs_are_refused_while_the_state_folder_is_over_its_quota(
    make_queue: Callable[..., JobQueue],
) -> None:
    jobs = make_queue(state_quota_bytes=1)  # the job database alone is over it
    used = folder_bytes(jobs.settings.state_dir)
    with pytest.raises(
        InsufficientStorage,
        match=rf"state folder: {used} bytes used exceeds the quota of 1 bytes "
        r"\(state_quota_bytes, --state-quota-mb\)",
    ):
        jobs.submit(JobSpec(pipeline="faces", input="small.mp4"))
    with pytest.raises(InsufficientStorage):
        jobs.check_room()  # what the upload route asks before it receives a body
    assert jobs.list() == []


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_frame_pixels": 100 * 100},
         r"input header: frame of 160x120 \(19200 pixels\) exceeds the limit of 10000 pixels "
         r"\(max_frame_pixels, --max-frame-pixels\)"),
        ({"max_frames": 10},
         r"input header: 24 frames exceed the limit of 10 frames \(max_frames, "
         r"--max-video-frames\)"),
        ({"max_duration_s": 0.5},
         r"input header: 1\.0 s of video exceeds the limit of 0\.5 s \(max_duration_s, "
         r"--max-video-duration\)"),
    ],
)  # fmt: skip
def test_a_video_over_the_limits_fails_before_any_frame_is_processed(
    make_queue: Callable[..., JobQueue], limits: dict[str, Any], message: str
) -> None:
    jobs = make_queue(**limits)
    record = finished(jobs, jobs.submit(JobSpec(pipeline="faces", input="small.mp4")).id)
    assert record.state == "failed"
    assert record.error is not None
    assert record.progress.frames_done == 0
    assert re.fullmatch(message, record.error), record.error


def test_limits_check_frames_and_length() -> None:
    limits = VideoLimits(max_frame_pixels=100, max_frames=5, max_duration_s=2.0)
    limits.check_frame(10, 10, "x")
    limits.check_length(5, 2.0, "x")
    limits.check_length(None, None, "x")  # unknown: nothing to refuse
    with pytest.raises(PayloadTooLarge, match=r"x: frame of 11x10 \(110 pixels\)"):
        limits.check_frame(11, 10, "x")
    with pytest.raises(PayloadTooLarge, match=r"x: 6 frames exceed the limit of 5"):
        limits.check_length(6, None, "x")
    with pytest.raises(PayloadTooLarge, match=r"x: 2\.5 s of video exceeds the limit of 2 s"):
        limits.check_length(None, 2.5, "x")
    VideoLimits(None, None, None).check_length(10**9, 1e9, "off")


def test_frames_over_the_limits_while_decoding_stop_the_run(tmp_path: Path) -> None:
    """The runner's frame hook (called by the sink thread before each frame is written): a
    frame past the limits sets the job's stop event, and the run ends with the limit's error.
    A header that lies cannot be made with PyAV's writers, so a stand-in job record and run
    take the place of the real ones here; the header path is tested above with real jobs."""
    settings = JobSettings(
        state_dir=tmp_path, media_root=tmp_path, limits=VideoLimits(max_frames=3)
    )
    job = SimpleNamespace(id="j1", checkpoint=None, frames_done=0, frames_total=0)
    stop = threading.Event()
    runner = JobRunner(None, settings, job, lambda cp: None, stop)  # type: ignore[arg-type]
    image = np.zeros((4, 4, 3), np.uint8)
    for index in range(3):
        runner._check_limits(Frame(0, index, index, Fraction(1, 24), image))
    assert not stop.is_set()
    runner._check_limits(Frame(0, 3, 3, Fraction(1, 24), image))
    assert stop.is_set()
    with pytest.raises(PayloadTooLarge, match=r"frame 3: 4 frames exceed the limit of 3"):
        runner.execute(SimpleNamespace(run=lambda: None))  # type: ignore[arg-type]
