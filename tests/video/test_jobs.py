"""Durable video jobs (``JobQueue``) end to end: real clips (PyAV), the real zoo ``faces`` model
on an in-process server, the real SQLite store, and a real process killed with SIGKILL.

Each job's results are compared line for line with what ``VideoRun`` writes for the same clip
and sampling (frame, timestamps, boxes; track ids aside, since trackers restart on a resume).
Waiting loops poll the queue and give up after a generous limit only so that a hang fails the
test: no test asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from pydantic import ValidationError

from frameserve.errors import ConfigError, InvalidInput, NotFound, QueueFull
from frameserve.serving.local import LocalServer
from frameserve.video.config import load_video_pipeline
from frameserve.video.decode import VideoSource
from frameserve.video.frames import Sampling
from frameserve.video.jobs import JobQueue, JobRecord, JobSettings, JobSpec, JobState
from frameserve.video.run import RunOptions, VideoRun
from video.media import Clip, make_clip, write_not_a_video
from video.test_run import assert_audio_copied, decoded_video, read_jsonl

pytestmark = pytest.mark.timeout(120)

WORKER = Path(__file__).with_name("jobs_worker.py")
WAIT_S = 60.0  # only so that a hang fails the test
GAPS = (3000, 1500, 9000, 3750, 1500, 4500, 6000)  # irregular frame gaps in 1/90000 s


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def short_clip(media: Path) -> Clip:
    """48 frames at 24 fps, a keyframe every 12th, with audio."""
    return make_clip(media / "short.mp4", frames=48, size=(320, 240), gop=12)


@pytest.fixture(scope="module")
def long_clip(media: Path) -> Clip:
    """240 frames, a keyframe every 10th: long enough to stop or kill a job half way."""
    return make_clip(media / "long.mp4", frames=240, size=(320, 240), gop=10)


@pytest.fixture(scope="module")
def reference(
    video_server: LocalServer, zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Clip, str | None], list[dict[str, Any]]]:
    """What ``VideoRun`` writes for a clip and a sampling (memoised per module)."""
    done: dict[tuple[Path, str | None], list[dict[str, Any]]] = {}

    def lines(clip: Clip, sample: str | None) -> list[dict[str, Any]]:
        key = (clip.path, sample)
        if key not in done:
            out = tmp_path_factory.mktemp("reference")
            name, config = load_video_pipeline("faces", zoo_repository)
            sampling = Sampling.parse(sample) if sample else None
            options = RunOptions(out=out, sample=sampling)
            VideoRun(video_server, name, config, [clip.path], options).run()
            done[key] = read_jsonl(out / f"{clip.path.stem}.jsonl")
        return done[key]

    return lines


@pytest.fixture
def make_queue(
    video_server: LocalServer, media: Path, tmp_path: Path
) -> Iterator[Callable[..., JobQueue]]:
    """Started queues over ``tmp_path/state`` (checkpoints at every keyframe), closed after."""
    queues: list[JobQueue] = []

    def make(**overrides: Any) -> JobQueue:
        fields: dict[str, Any] = {
            "state_dir": tmp_path / "state",
            "media_root": media,
            "checkpoint_interval_s": 0,
        }
        jobs = JobQueue(video_server, JobSettings(**{**fields, **overrides}))
        jobs.start()
        queues.append(jobs)
        return jobs

    yield make
    for jobs in queues:
        jobs.close(10.0)
    left = [t.name for t in threading.enumerate() if t.name.startswith("job-")]
    assert not left, f"job threads left behind: {left}"


# -- helpers ------------------------------------------------------------------------------------
def wait_for(jobs: JobQueue, job_id: str, *states: str) -> JobRecord:
    deadline = time.monotonic() + WAIT_S
    while True:
        record = jobs.get(job_id)
        if record.state in states:
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: expected {states}, still {record.state}")
        time.sleep(0.005)


def run_job(jobs: JobQueue, **spec: Any) -> JobRecord:
    """Submit a job and wait for it to succeed."""
    record = wait_for(jobs, jobs.submit(JobSpec(**spec)).id, "succeeded", "failed")
    assert record.state == "succeeded", record.error
    return record


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def stored(state_dir: Path, job_id: str) -> tuple[str, int]:
    """(state, frames_done) as the SQLite file says, read-only (another process may write)."""
    uri = f"file:{state_dir / 'jobs.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as db:
        row = db.execute("SELECT state, frames_done FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert row is not None, f"job {job_id}: no row in {state_dir / 'jobs.db'}"
    return row[0], row[1]


def without_tracks(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**line, "detections": [{k: v for k, v in d.items() if k != "track_id"}
                                for d in line["detections"]]}
        for line in lines
    ]  # fmt: skip


def assert_same_results(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Frame for frame: the same frames and timestamps exactly, the same faces (two-decimal
    JSON numbers may round the other way when frames batch differently)."""
    assert [line["frame"] for line in got] == [line["frame"] for line in want]
    assert [line["pts_ticks"] for line in got] == [line["pts_ticks"] for line in want]
    for a, b in zip(without_tracks(got), without_tracks(want), strict=True):
        assert a.keys() == b.keys(), a["frame"]
        assert len(a["detections"]) == len(b["detections"]), a["frame"]
        for da, db in zip(a["detections"], b["detections"], strict=True):
            assert da["label"] == db["label"]
            assert da["box"] == pytest.approx(db["box"], abs=0.05), a["frame"]
            assert da["score"] == pytest.approx(db["score"], abs=0.001), a["frame"]


# -- a job from submit to success ---------------------------------------------------------------
def test_a_job_writes_what_video_run_writes(
    make_queue: Callable[..., JobQueue], short_clip: Clip, reference: Any
) -> None:
    jobs = make_queue()
    submitted = jobs.submit(JobSpec(pipeline="faces", input="short.mp4"))
    assert submitted.state == "queued"
    record = wait_for(jobs, submitted.id, "succeeded", "failed")
    assert record.error is None

    body = record.to_json()
    assert set(body) == {"id", "state", "pipeline", "input", "sample", "video_out", "created",
                         "started", "finished", "progress", "error", "attempts",
                         "owner", "params", "push"}  # fmt: skip
    assert body["state"] == "succeeded" and body["input"] == "short.mp4"
    assert body["owner"] is None  # submitted without an API key
    assert body["attempts"] == 1
    assert body["progress"]["frames_done"] == body["progress"]["frames_total"] == 48
    assert body["created"] <= body["started"] <= body["finished"]

    lines = read_jsonl(jobs.results_path(record.id))
    assert_same_results(lines, reference(short_clip, None))
    assert {d["track_id"] for line in lines for d in line["detections"]} == {1}
    with pytest.raises(NotFound, match="video_out was false"):
        jobs.output_path(record.id)


def test_video_out_joins_the_segments_with_the_audio(
    make_queue: Callable[..., JobQueue], short_clip: Clip, tmp_path: Path
) -> None:
    jobs = make_queue()
    record = run_job(jobs, pipeline="faces", input="short.mp4", video_out=True)
    output = jobs.output_path(record.id)
    assert output == tmp_path / "state" / "jobs" / record.id / "output.mp4"
    time_base, size, pts = decoded_video(output)
    assert size == short_clip.size
    assert [p * time_base for p in pts] == list(short_clip.times)
    assert_audio_copied(short_clip, output)
    assert not (output.parent / "segments").exists()


# -- resuming -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sample", "stop_after", "video_out"),
    [("every:3", 12, False), ("fps:7/2", 6, False), (None, 40, True)],
)
def test_a_graceful_close_requeues_and_the_next_start_resumes(
    sample: str | None,
    stop_after: int,
    video_out: bool,
    make_queue: Callable[..., JobQueue],
    long_clip: Clip,
    reference: Any,
    tmp_path: Path,
) -> None:
    jobs = make_queue()
    spec = JobSpec(pipeline="faces", input="long.mp4", sample=sample, video_out=video_out)
    record = jobs.submit(spec)
    wait_until(lambda: jobs.get(record.id).progress.frames_done >= stop_after, "progress")
    jobs.close(10.0)

    want = reference(long_clip, sample)
    state, frames_done = stored(tmp_path / "state", record.id)
    assert state == "queued"
    assert 0 < frames_done < len(want), "the job must stop half way, at a checkpoint"

    again = make_queue()
    record = wait_for(again, record.id, "succeeded", "failed")
    assert record.state == "succeeded", record.error
    assert record.progress.frames_done == len(want)
    assert_same_results(read_jsonl(again.results_path(record.id)), want)
    if video_out:
        time_base, _, pts = decoded_video(again.output_path(record.id))
        assert [p * time_base for p in pts] == list(long_clip.times)


def test_a_killed_process_resumes_from_its_checkpoint(
    zoo_repository: Path,
    make_queue: Callable[..., JobQueue],
    media: Path,
    long_clip: Clip,
    reference: Any,
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    args = [sys.executable, str(WORKER), str(zoo_repository), str(state_dir), str(media),
            "long.mp4", "--video-out"]  # fmt: skip
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line.startswith("job "), f"the worker said {line!r}"
        job_id = line.split()[1]
        wait_until(lambda: stored(state_dir, job_id)[1] > 20, "20 frames checkpointed")
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait(10)
    state, frames_done = stored(state_dir, job_id)
    assert state == "running" and frames_done < long_clip.frames, (state, frames_done)

    jobs = make_queue()
    record = wait_for(jobs, job_id, "succeeded", "failed")
    assert record.state == "succeeded", record.error
    lines = read_jsonl(jobs.results_path(job_id))
    assert [line["frame"] for line in lines] == list(range(long_clip.frames))
    assert_same_results(lines, reference(long_clip, None))
    time_base, _, pts = decoded_video(jobs.output_path(job_id))
    assert [p * time_base for p in pts] == list(long_clip.times)


def remux(clip: Clip, path: Path, container: str) -> Path:
    """The clip's packets in another container (``mpegts`` has no index to seek with)."""
    with av.open(str(clip.path)) as src, av.open(str(path), "w", format=container) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    return path


@pytest.fixture(scope="module")
def seek_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("seek")
    pts = [0]
    for gap in GAPS * 8:
        pts.append(pts[-1] + gap)
    bframes = make_clip(folder / "bframes.mp4", frames=60, size=(160, 120), gop=10, bframes=2,
                        audio=False)  # fmt: skip
    return {
        "gop": make_clip(folder / "gop.mp4", frames=60, size=(160, 120), gop=10, audio=False).path,
        "bframes": bframes.path,
        "vfr": make_clip(folder / "vfr.mp4", vfr_pts=pts, size=(160, 120), gop=7, audio=False).path,
        "mpegts": remux(bframes, folder / "bframes.ts", "mpegts"),
    }


@pytest.mark.parametrize("sample", ["all", "every:3", "fps:7/2", "keyframes"])
@pytest.mark.parametrize("kind", ["gop", "bframes", "vfr", "mpegts"])
def test_decoding_from_any_checkpoint_yields_exactly_the_frames_left(
    kind: str, sample: str, seek_inputs: dict[str, Path]
) -> None:
    """What a resume decodes: from each keyframe a run passed (``Frame.seek``), the frames it
    kept from there on, the same indices and timestamps (MPEG-TS seeks land late: decoding
    starts over from the beginning and gives the same frames)."""
    path, sampling, stop = seek_inputs[kind], Sampling.parse(sample), threading.Event()
    full = list(VideoSource(path, 0, sampling, 1).frames(stop))
    kept = [(f.index, f.pts) for f in full]
    starts = [(i, f) for i, f in enumerate(full) if f.seek is not None]
    assert len(starts) >= 5, f"expected a seek point after each keyframe, got {len(starts)}"
    for i, frame in starts:
        assert frame.seek is not None
        source = VideoSource(path, 0, sampling, 1, start=frame.seek, first_index=frame.index)
        resumed = [(f.index, f.pts) for f in source.frames(stop)]
        assert resumed == kept[i:], f"resumed at {frame.seek}"


def test_an_interpolating_job_resumes_between_its_originals(
    make_queue: Callable[..., JobQueue], long_clip: Clip
) -> None:
    jobs = make_queue()
    record = jobs.submit(JobSpec(pipeline="fruc", input="long.mp4"))
    assert record.spec.video_out  # a transformation's product is video
    wait_until(lambda: jobs.get(record.id).progress.frames_done >= 60, "progress")
    jobs.close(10.0)
    again = make_queue()
    record = wait_for(again, record.id, "succeeded", "failed")
    assert record.state == "succeeded", record.error

    n = 2 * long_clip.frames - 1
    lines = read_jsonl(again.results_path(record.id))
    assert [line["frame"] for line in lines] == list(range(n))
    assert [line["generated"] for line in lines] == [i % 2 == 1 for i in range(n)]
    _, _, pts = decoded_video(again.output_path(record.id))
    assert pts == [line["pts_ticks"] for line in lines]


# -- cancel, delete, list -----------------------------------------------------------------------
def test_cancel_a_running_job_then_delete_it(
    make_queue: Callable[..., JobQueue], long_clip: Clip, tmp_path: Path
) -> None:
    jobs = make_queue()
    record = jobs.submit(JobSpec(pipeline="faces", input="long.mp4", video_out=True))
    wait_until(lambda: jobs.get(record.id).progress.frames_done > 0, "a running job")

    cancelled = jobs.delete(record.id)
    assert cancelled.state == "cancelled" and cancelled.finished is not None
    assert [r.id for r in jobs.list("cancelled")] == [record.id]
    assert jobs.list("running") == []
    folder = tmp_path / "state" / "jobs" / record.id
    assert (folder / "results.jsonl").is_file()  # a cancelled job keeps what it wrote

    removed = jobs.delete(record.id)
    assert removed.state == "cancelled"
    assert not folder.exists()
    with pytest.raises(NotFound):
        jobs.get(record.id)


def test_delete_a_finished_job_removes_its_files_and_list_filters(
    make_queue: Callable[..., JobQueue], short_clip: Clip, tmp_path: Path
) -> None:
    jobs = make_queue()
    first = run_job(jobs, pipeline="faces", input="short.mp4", video_out=True)
    second = run_job(jobs, pipeline="faces", input="short.mp4", sample="every:4")

    assert [r.id for r in jobs.list()] == [second.id, first.id]  # newest first
    assert [r.id for r in jobs.list("succeeded")] == [second.id, first.id]
    assert jobs.list("queued") == []
    with pytest.raises(InvalidInput, match="state: expected one of queued.*got 'done'"):
        jobs.list("done")

    folder = tmp_path / "state" / "jobs" / first.id
    assert jobs.output_path(first.id).is_file()
    assert jobs.delete(first.id).state == "succeeded"
    assert not folder.exists()
    for call in (jobs.get, jobs.delete, jobs.results_path, jobs.output_path):
        with pytest.raises(NotFound, match=first.id):
            call(first.id)
    assert [r.id for r in jobs.list()] == [second.id]


def test_jobs_wait_their_turn_and_the_queue_is_bounded(
    make_queue: Callable[..., JobQueue], long_clip: Clip, short_clip: Clip
) -> None:
    jobs = make_queue(max_running=1, max_queued=2)
    running = jobs.submit(JobSpec(pipeline="faces", input="long.mp4"))
    waiting = [jobs.submit(JobSpec(pipeline="faces", input="short.mp4")) for _ in range(2)]
    assert jobs.get(running.id).state == "running"
    assert [jobs.get(r.id).state for r in waiting] == ["queued", "queued"]
    with pytest.raises(QueueFull, match="2 jobs are queued, the limit is max_queued 2"):
        jobs.submit(JobSpec(pipeline="faces", input="short.mp4"))

    jobs.delete(running.id)  # a cancel frees the slot for the next in submit order
    records = [wait_for(jobs, r.id, "succeeded", "failed") for r in waiting]
    assert [r.state for r in records] == ["succeeded", "succeeded"]
    assert records[0].started is not None and records[1].started is not None
    assert records[0].started <= records[1].started


# -- uploads ------------------------------------------------------------------------------------
def test_an_uploaded_file_belongs_to_its_job(
    make_queue: Callable[..., JobQueue], short_clip: Clip, reference: Any, tmp_path: Path
) -> None:
    jobs = make_queue()
    upload = tmp_path / "state" / "uploads" / "u1" / "my clip.mp4"
    upload.parent.mkdir(parents=True)
    shutil.copyfile(short_clip.path, upload)

    record = jobs.submit_file(JobSpec(pipeline="faces", input="my clip.mp4"), upload)
    assert not upload.parent.exists()  # moved into the job's folder
    record = wait_for(jobs, record.id, "succeeded", "failed")
    assert record.state == "succeeded", record.error
    assert_same_results(read_jsonl(jobs.results_path(record.id)), reference(short_clip, None))
    jobs.delete(record.id)
    assert not (tmp_path / "state" / "jobs" / record.id).exists()

    refused = tmp_path / "state" / "uploads" / "u2" / "clip.mp4"
    refused.parent.mkdir()
    shutil.copyfile(short_clip.path, refused)
    with pytest.raises(InvalidInput, match="pipeline"):
        jobs.submit_file(JobSpec(pipeline="no-such-pipeline", input="clip.mp4"), refused)
    assert not refused.exists()  # refused: the job would have owned it, so it is gone

    outside = tmp_path / "elsewhere.mp4"
    shutil.copyfile(short_clip.path, outside)
    with pytest.raises(InvalidInput, match="upload: expected a file under"):
        jobs.submit_file(JobSpec(pipeline="faces", input="x.mp4"), outside)
    assert outside.exists()  # not an upload: never deleted


# -- bad input ----------------------------------------------------------------------------------
def test_inputs_outside_the_media_root_or_missing_are_refused(
    make_queue: Callable[..., JobQueue], media: Path, short_clip: Clip, tmp_path: Path
) -> None:
    jobs = make_queue()
    outside = tmp_path / "secret.mp4"
    shutil.copyfile(short_clip.path, outside)
    link = media / "link.mp4"
    link.unlink(missing_ok=True)
    link.symlink_to(outside)
    cases = {
        "../secret.mp4": "'..' is not allowed",
        str(outside): "absolute path",
        "link.mp4": "leads outside the media root",
        "nope.mp4": "no such file in the media root",
    }
    for name, message in cases.items():
        with pytest.raises(InvalidInput, match=message) as caught:
            jobs.submit(JobSpec(pipeline="faces", input=name))
        assert caught.value.message.startswith("input: ")
    assert jobs.list() == []


def test_pipelines_that_cannot_run_are_refused(make_queue: Callable[..., JobQueue]) -> None:
    jobs = make_queue()
    with pytest.raises(InvalidInput, match="pipeline: expected .*got 'no-such-pipeline'"):
        jobs.submit(JobSpec(pipeline="no-such-pipeline", input="short.mp4"))
    with pytest.raises(ConfigError, match="pipeline ocr: needs model"):  # not loaded here
        jobs.submit(JobSpec(pipeline="ocr", input="short.mp4"))
    with pytest.raises(InvalidInput, match="sample: pipeline fruc makes new frames"):
        jobs.submit(JobSpec(pipeline="fruc", input="short.mp4", sample="every:2"))
    with pytest.raises(ValidationError, match="sample"):
        JobSpec(pipeline="faces", input="short.mp4", sample="sometimes")
    with pytest.raises(ValidationError, match="extra"):
        JobSpec.model_validate({"pipeline": "faces", "input": "short.mp4", "priority": 1})
    assert jobs.list() == []


def test_a_file_that_is_not_a_video_fails_its_job_not_the_queue(
    make_queue: Callable[..., JobQueue], media: Path, short_clip: Clip
) -> None:
    write_not_a_video(media / "notes.mp4", "text")
    data = short_clip.path.read_bytes()
    (media / "broken.mp4").write_bytes(data[: len(data) // 2])  # cut off: no index at the end
    jobs = make_queue()
    bad = [jobs.submit(JobSpec(pipeline="faces", input=n)) for n in ("notes.mp4", "broken.mp4")]
    good = jobs.submit(JobSpec(pipeline="faces", input="short.mp4"))

    for record, name in zip(bad, ("notes.mp4", "broken.mp4"), strict=True):
        record = wait_for(jobs, record.id, "succeeded", "failed")
        assert record.state == "failed"
        assert record.error is not None
        assert record.error.startswith(f"{name}: not a video FFmpeg can read"), record.error
        assert str(media) not in record.error  # the client's name, not the server's path
    assert wait_for(jobs, good.id, "succeeded", "failed").state == "succeeded"


def test_a_job_state_name_round_trips() -> None:
    assert JobState.parse("running") is JobState.RUNNING
    assert JobState.RUNNING == "running"
    assert not JobState.RUNNING.finished and JobState.CANCELLED.finished


def test_a_store_written_before_crash_retries_gains_its_columns(tmp_path: Path) -> None:
    """A jobs.db of the previous schema (no crash or attempt counts) opens, keeps its rows and
    counts from then on."""
    from frameserve.video.jobs.store import JobStore

    path = tmp_path / "jobs.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
        "state TEXT NOT NULL, pipeline TEXT NOT NULL, input TEXT NOT NULL, sample TEXT, "
        "video_out INTEGER NOT NULL, upload TEXT, created REAL NOT NULL, started REAL, "
        "finished REAL, frames_done INTEGER NOT NULL DEFAULT 0, frames_total INTEGER NOT NULL "
        "DEFAULT 0, error TEXT, checkpoint TEXT);"
        "INSERT INTO jobs (id, state, pipeline, input, video_out, created) "
        "VALUES ('j1', 'queued', 'faces', 'a.mp4', 0, 1.0);"
        "PRAGMA user_version=1;"
    )
    old.commit()
    old.close()
    store = JobStore(path)
    try:
        job = store.get("j1")
        assert job is not None and job.crashes == 0 and job.attempts == 0
        assert job.owner == ""  # written before keys: nobody's, seen by every key
        store.start("j1", 2.0)
        assert store.crashed("j1") == 1
        job = store.get("j1")
        assert job is not None and (job.attempts, job.crashes) == (1, 1)
    finally:
        store.close()


def test_a_store_lists_jobs_by_owner(tmp_path: Path) -> None:
    """Rows keep the key name that submitted them; ``list`` filters by it (None: all)."""
    from frameserve.video.jobs import JobSpec
    from frameserve.video.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs.db")
    try:
        spec = JobSpec(pipeline="faces", input="a.mp4")
        store.insert("a", spec, None, 1.0, "alice")
        store.insert("b", spec, None, 2.0, "bob")
        assert [j.id for j in store.list(owner="alice")] == ["a"]
        assert [j.id for j in store.list()] == ["b", "a"]
        assert [j.id for j in store.list(JobState.QUEUED, "bob")] == ["b"]
        job = store.get("a")
        assert job is not None and job.owner == "alice"
    finally:
        store.close()
