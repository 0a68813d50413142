"""``frameserve serve --ray``: the job queue's jobs run across the cluster.

``RayJobRunner`` has the shape ``JobQueue`` expects of a runner (``prepare``, ``execute``,
``progress``, ``written``), so the queue, the API and the job JSON do not change; the job's
progress gains ``chunks`` {done, running, total}. The chunk record shares the job store's
SQLite file (``--state-dir/jobs.db``), written by this process only. A job interrupted by a
shutdown or a crash resumes from its committed chunks when the server starts again.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frameserve.scale.cluster import RaySettings, connect
from frameserve.scale.coordinator import Coordinator, check_pipeline
from frameserve.scale.store import ChunkStore
from frameserve.scale.tracing import JobSpans
from frameserve.scale.worker import WorkerSetup
from frameserve.serving.local import ServerHandle
from frameserve.video.config import load_named_pipeline
from frameserve.video.decode import probe
from frameserve.video.jobs.runner import JobPaths
from frameserve.video.jobs.segments import join_segments
from frameserve.video.jobs.spec import Checkpoint, JobProgress, JobSettings
from frameserve.video.jobs.store import StoredJob
from frameserve.video.media import MediaRoot
from frameserve.video.summary import summarize_file, write_summary
from frameserve.video.worker import run_isolated


@dataclass(frozen=True)
class PlannedJob:
    """What ``prepare`` hands back: the queue reads the frame total from it."""

    frames: int

    def expected_frames(self) -> int:
        return self.frames


class RayJobRunner:
    """One execution of a job on the cluster (the job's thread)."""

    def __init__(
        self,
        ray_settings: RaySettings,
        handle: ServerHandle,
        settings: JobSettings,
        job: StoredJob,
        commit: Callable[[Checkpoint], None],
        stop: threading.Event,
    ) -> None:
        self.ray_settings = ray_settings
        self.handle = handle
        self.settings = settings
        self.job = job
        self.paths = JobPaths(settings.state_dir / "jobs" / job.id)
        self.stop = stop
        self.input: Path | None = None
        self.resumes_at: int | None = None
        self._coordinator: Coordinator | None = None
        self._spans: JobSpans | None = None
        self._started = time.monotonic()
        self._before = 0

    def prepare(self, media: MediaRoot) -> PlannedJob:
        job, root = self.job, self.handle.server.repository.root
        name, config = load_named_pipeline(job.spec.pipeline, root, "pipeline")
        check_pipeline(name, config)
        path = self.input = self.paths.input(job, media)
        self.paths.folder.mkdir(parents=True, exist_ok=True)
        self._check_header(path)
        sampling = job.spec.sampling or None
        sample = str(sampling) if sampling is not None else config.sample
        setup = WorkerSetup(job.id, name, config, root.resolve(), sample, 1, job.spec.params,
                            self.handle.server.settings.model_cache_dir)  # fmt: skip
        ray = connect(self.ray_settings)
        store = ChunkStore(self.settings.state_dir / "jobs.db")
        video = bool(job.spec.video_out or config.transforms)
        coordinator = Coordinator(
            ray, self.ray_settings, store, setup, path,
            self.paths.folder / "pieces", self.stop, isolate=self.settings.isolate,
            segments=self.paths.segments if video else None,
        )  # fmt: skip
        self._coordinator = coordinator
        tracing = self.handle.server.tracing
        if tracing is not None:  # a span per job and per chunk attempt
            self._spans = JobSpans(tracing, self.handle.loop, job.id, name)
            coordinator.on_chunk = self._spans.chunk
        try:
            plan = coordinator.prepare()
        except BaseException:
            store.close()  # execute, which closes it, will not run
            raise
        self._before, _ = coordinator.progress()
        return PlannedJob(plan.kept)

    def _check_header(self, path: Path) -> None:
        if self.settings.isolate:
            info = run_isolated(probe, path, name=f"job-{self.job.id[:8]}-probe",
                                doing=f"reading the header of {path}", stop=self.stop)  # fmt: skip
        else:
            info = probe(path)
        where = "input header"
        self.settings.limits.check_frame(info.width, info.height, where)
        self.settings.limits.check_length(info.frames or None, info.duration_s, where)

    def execute(self, planned: PlannedJob) -> bool:
        """Run the chunks; join them into the job's results once all are committed."""
        coordinator = self._coordinator
        assert coordinator is not None
        self._started = time.monotonic()
        ok, error = False, None
        try:
            if not coordinator.run():
                return False
            coordinator.merge(self.paths.results)
            if coordinator.segments is not None:
                self._join(coordinator.segment_files())
            name, config = coordinator.setup.pipeline, coordinator.setup.config
            spec = config.summary_spec()
            if spec is not None:
                write_summary(self.paths.summary, summarize_file(self.paths.results, spec, name))
            coordinator.finish()
            ok = True
            return True
        except Exception as err:
            error = str(err)
            raise
        finally:
            coordinator.store.close()
            if self._spans is not None:
                self._spans.end(ok, error)

    def _join(self, segments: list[Path]) -> None:
        """The segments into ``output.mp4`` with the input's audio (FFmpeg in a child)."""
        assert self.input is not None
        args = (segments, self.input, self.paths.output)
        if self.settings.isolate:
            run_isolated(join_segments, *args, name=f"job-{self.job.id[:8]}-join",
                         doing=f"copying the audio of {self.input}", timeout_s=3600.0,
                         stop=self.stop)  # fmt: skip
        else:
            join_segments(*args)

    def progress(self) -> JobProgress:
        coordinator = self._coordinator
        if coordinator is None:
            return JobProgress(self.job.frames_done, self.job.frames_total)
        done, chunks = coordinator.progress()
        total = coordinator.plan.kept if coordinator.plan is not None else 0
        wall = time.monotonic() - self._started
        fps = (done - self._before) / wall if wall > 0 else 0.0
        eta = (max(0, total - done) / fps) if total and fps > 0 else None
        counts = (chunks.done, chunks.running, chunks.total)
        return JobProgress(done, total, fps, eta, chunks=counts)

    def written(self) -> int:
        coordinator = self._coordinator
        return coordinator.progress()[0] if coordinator is not None else self.job.frames_done

    def remove_segments(self) -> None:
        shutil.rmtree(self.paths.folder / "pieces", ignore_errors=True)
        shutil.rmtree(self.paths.segments, ignore_errors=True)


def ray_runner_factory(ray_settings: RaySettings) -> Callable[..., Any]:
    """What ``JobQueue(runner_factory=...)`` takes: a ``RayJobRunner`` per execution."""

    def make(
        handle: ServerHandle,
        settings: JobSettings,
        job: StoredJob,
        commit: Callable[[Checkpoint], None],
        stop: threading.Event,
    ) -> RayJobRunner:
        return RayJobRunner(ray_settings, handle, settings, job, commit, stop)

    return make
