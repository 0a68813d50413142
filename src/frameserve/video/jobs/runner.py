"""One execution of a job: from its checkpoint (or the beginning) to the end of its input, a
cancel, or a shutdown. Runs in the job's own thread (``job-<id>``); its ``VideoRun`` adds the
decoder and sink threads, and the checkpoints are taken in the sink thread.

A job's folder (``state_dir/jobs/<id>/``) holds ``results.jsonl`` (the lines ``video run``
writes), ``segments/`` while it encodes, ``output.mp4`` once it succeeded with video,
``summary.json`` (made from the whole results file) once it succeeded, unless its pipeline
says ``summary: false``, and ``upload/`` when its input was uploaded.

Resuming: the results file is cut back to the checkpoint's length, later segments are
deleted, and decoding starts at the checkpoint's keyframe with the sampling state and frame
indices it had there, so every frame is written exactly once, in order. Trackers start fresh
after a resume: track ids of the frames after it are new ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from frameserve.errors import FrameserveError, PayloadTooLarge
from frameserve.serving.local import ServerHandle
from frameserve.serving.types import Admission
from frameserve.video.config import VideoOutSpec, load_named_pipeline
from frameserve.video.decode import VideoInfo
from frameserve.video.frames import Frame
from frameserve.video.jobs.segments import (
    SegmentedVideo,
    fsync_file,
    join_segments,
    segment_number,
    segment_path,
)
from frameserve.video.jobs.spec import Checkpoint, JobProgress, JobSettings
from frameserve.video.jobs.store import StoredJob
from frameserve.video.media import MediaRoot
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import StreamOutputs, StreamPlan, StreamRun, StreamStart
from frameserve.video.worker import run_isolated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobPaths:
    """The files of one job."""

    folder: Path

    @property
    def results(self) -> Path:
        return self.folder / "results.jsonl"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    @property
    def segments(self) -> Path:
        return self.folder / "segments"

    @property
    def output(self) -> Path:
        return self.folder / "output.mp4"

    @property
    def uploads(self) -> Path:
        return self.folder / "upload"

    def input(self, job: StoredJob, media: MediaRoot) -> Path:
        """The input file: the job's own upload, or the spec's path in the media root (checked
        again: the file may have gone or changed since the job was submitted)."""
        if job.upload is not None:
            return self.folder / job.upload
        return media.resolve(job.spec.input, "input")


class JobRunner:
    """Runs a job once; ``commit`` records a checkpoint (``JobQueue``: under its lock)."""

    def __init__(
        self,
        handle: ServerHandle,
        settings: JobSettings,
        job: StoredJob,
        commit: Callable[[Checkpoint], None],
        stop: threading.Event,
    ) -> None:
        self.handle = handle
        self.settings = settings
        self.job = job
        self.paths = JobPaths(settings.state_dir / "jobs" / job.id)
        self.stop = stop
        self._commit = commit
        self._resume = job.checkpoint
        self._video: SegmentedVideo | None = None
        self._run: VideoRun | None = None
        self.input: Path | None = None  # the resolved input, once known
        self.limit_error: FrameserveError | None = None  # why the sink stopped the run
        self._started = time.monotonic()
        self._last_checkpoint = self._started

    def progress(self) -> JobProgress:
        """Live progress, read from any thread while the job runs."""
        run = self._run
        if run is None:
            return JobProgress(self.job.frames_done, self.job.frames_total)
        done, total = run.streams[0].written, run.expected_frames()
        wall = time.monotonic() - self._started
        before = self._resume.written if self._resume is not None else 0
        fps = (done - before) / wall if wall > 0 else 0.0
        eta = (max(0, total - done) / fps) if total and fps > 0 else None
        return JobProgress(done, total, fps, eta)

    def prepare(self, media: MediaRoot) -> VideoRun:
        """Cut the files back to the checkpoint and build the run (probes the input)."""
        job = self.job
        name, config = load_named_pipeline(job.spec.pipeline, self._root(), "pipeline")
        path = self.input = self.paths.input(job, media)
        self._restore_files()
        video = job.spec.video_out or config.transforms
        options = RunOptions(
            out=self.paths.folder,
            sample=job.spec.sampling,
            video_out=video,
            decode_threads=self.settings.decode_threads,
            params=job.spec.params,
        )
        summary = self.paths.summary if config.summary_spec() is not None else None
        segments = self.paths.segments if video else None
        outputs = StreamOutputs(self.paths.results, None, segments, summary)
        cp = self._resume
        start = StreamStart(cp.seek, cp.next_frame, cp.written) if cp is not None else None
        run = VideoRun(
            self.handle, name, config, [path], options,
            admission=Admission(stream_id=f"job-{job.id}", background=True),
            plans=[StreamPlan(outputs, start, self._encoder)],
            on_frame=self._on_frame,
            stop=self.stop,
            thread_prefix=f"job-{job.id[:8]}-",
            isolate=self.settings.isolate,
        )  # fmt: skip
        self._run = run
        info = run.sources[0].info  # the header, read in a worker process: refuse at once
        where = "input header"
        self.settings.limits.check_frame(info.width, info.height, where)
        self.settings.limits.check_length(info.frames or None, info.duration_s, where)
        return run

    @property
    def resumes_at(self) -> int | None:
        """The first frame index this execution writes, when it resumes from a checkpoint."""
        return self._resume.next_frame if self._resume is not None else None

    def _root(self) -> Path:
        return self.handle.server.repository.root

    def execute(self, run: VideoRun) -> bool:
        """Run to the end; True when every frame was written (and the video joined), False
        when stopped first (cancel or shutdown)."""
        self._started = self._last_checkpoint = time.monotonic()
        run.run()
        if self.limit_error is not None:
            raise self.limit_error
        stream = run.streams[0]
        if not stream.finished:
            return False
        fsync_file(self.paths.results)
        if stream.outputs.video is not None:
            self._join(stream.source.path)
        return True

    def written(self) -> int:
        run = self._run
        return run.streams[0].written if run is not None else self.job.frames_done

    # -- files ------------------------------------------------------------------------------
    def _restore_files(self) -> None:
        """Cut results back to the checkpoint and delete the segments after it; without a
        usable checkpoint, start over with empty files."""
        paths, cp = self.paths, self._resume
        paths.folder.mkdir(parents=True, exist_ok=True)
        if cp is not None and not self._files_match(cp):
            self._resume = cp = None
        with paths.results.open("ab") as f:
            f.truncate(cp.results_bytes if cp is not None else 0)
            os.fsync(f.fileno())
        keep = cp.segments if cp is not None else 0
        if paths.segments.is_dir():
            for p in paths.segments.iterdir():
                number = segment_number(p)
                if number is None or number >= keep:
                    p.unlink()
        stale = (paths.output, paths.summary)  # remade when the job finishes
        for leftover in (*stale, *(p.with_name(p.name + ".partial") for p in stale)):
            leftover.unlink(missing_ok=True)

    def _files_match(self, cp: Checkpoint) -> bool:
        paths = self.paths
        size = paths.results.stat().st_size if paths.results.is_file() else -1
        missing = [n for n in range(cp.segments) if not segment_path(paths.segments, n).is_file()]
        if size >= cp.results_bytes and not missing:
            return True
        log.warning(
            "job %s: the files do not match its checkpoint (results: %d bytes, expected at "
            "least %d; missing segments %s): starting again from the beginning",
            self.job.id, size, cp.results_bytes, missing,
        )  # fmt: skip
        return False

    def _encoder(
        self,
        folder: Path,
        source: VideoInfo,
        time_base: Fraction,
        rate: Fraction | None,
        spec: VideoOutSpec,
        threads: int,
    ) -> SegmentedVideo:
        first = self._resume.segments if self._resume is not None else 0
        self._video = SegmentedVideo(folder, first, source, time_base, rate, spec, threads)
        return self._video

    def _join(self, source: Path) -> None:
        folder = self.paths.segments
        numbers = sorted(n for p in folder.iterdir() if (n := segment_number(p)) is not None)
        if numbers != list(range(len(numbers))):
            raise RuntimeError(f"job {self.job.id}: segments {numbers} are not 0 to n-1")
        if numbers:
            segments = [segment_path(folder, n) for n in numbers]
            if self.settings.isolate:  # the remux reads the input's audio: FFmpeg in a child
                name = f"job-{self.job.id[:8]}-join"
                out = self.paths.output
                doing = f"copying the audio of {source}"
                run_isolated(
                    join_segments, segments, source, out, name=name, doing=doing,
                    timeout_s=3600.0, stop=self.stop,
                )  # fmt: skip
            else:
                join_segments(segments, source, self.paths.output)

    def _check_limits(self, frame: Frame) -> None:
        """Stop the run when a frame shows the video is over the limits (a header may lie:
        a resolution change, more frames or a longer timeline than it said)."""
        if self.limit_error is not None:
            return
        width, height = frame.size or (0, 0)
        limits = self.settings.limits
        where = f"frame {frame.index}"
        try:
            limits.check_frame(width, height, where)
            limits.check_length(frame.index + 1, float(frame.pts * frame.time_base), where)
        except PayloadTooLarge as err:
            self.limit_error = err
            self.stop.set()

    def remove_segments(self) -> None:
        shutil.rmtree(self.paths.segments, ignore_errors=True)

    # -- sink thread ------------------------------------------------------------------------
    def _on_frame(self, st: StreamRun, frame: Frame) -> None:
        """Before ``frame`` is written: at a keyframe boundary, once the interval has passed,
        sync what was written and commit a checkpoint that resumes at ``frame``."""
        self._check_limits(frame)
        if frame.seek is None or (st.written == 0 and self._resume is None):
            return  # nothing written yet: starting over costs nothing
        now = time.monotonic()
        if now - self._last_checkpoint < self.settings.checkpoint_interval_s:
            return
        results_bytes = st.sync()
        segments = self._video.cut() if self._video is not None else 0
        cp = Checkpoint(frame.seek, frame.index, st.written, results_bytes, segments)
        self._commit(cp)
        self._last_checkpoint = now
