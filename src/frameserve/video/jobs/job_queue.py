"""The durable queue of video jobs: submit, watch, cancel and delete, resume after a restart.

Threads: the API calls the public methods from its loop thread (briefly, or through
``asyncio.to_thread``); each running job has one thread of its own, ``job-<id>``, which
builds and runs the job's ``VideoRun`` (its decoder and sink threads); checkpoints are
committed from the sink thread. One lock guards the store (SQLite) and the table of running
jobs; nothing slow happens under it (a checkpoint's commit is one synchronous write).

At most ``max_running`` jobs run at once; the others wait in submit order, at most
``max_queued`` of them (``QueueFull`` beyond). Frames enter the schedulers at the background
level, below online requests and live streams: never dropped, only slowed.

Finished jobs are deleted with their files ``limits.job_retention_s`` after they ended, by the
``job-retention`` thread (and before a quota check); new jobs are refused while the state
folder is over ``limits.state_quota_bytes``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frameserve import logcontext
from frameserve.errors import (
    Conflict,
    FrameserveError,
    InvalidInput,
    NotFound,
    QueueFull,
    Unavailable,
)
from frameserve.serving.local import ServerHandle
from frameserve.video.config import load_named_pipeline
from frameserve.video.inputs import check_file_format
from frameserve.video.jobs.events import JobWatcher
from frameserve.video.jobs.runner import JobPaths, JobRunner
from frameserve.video.jobs.spec import Checkpoint, JobProgress, JobRecord, JobSettings, JobSpec
from frameserve.video.jobs.spec import JobState as S
from frameserve.video.jobs.store import JobStore, StoredJob
from frameserve.video.media import MediaRoot
from frameserve.video.process import open_processor
from frameserve.video.script_streams import ScriptStreams
from frameserve.video.worker import WorkerDied

log = logging.getLogger(__name__)

DELETE_WAIT_S = 10.0  # how long deleting a cancelled job waits for its thread to stop


@dataclass(frozen=True)
class _Outcome:
    """How a job's thread ended: ``done`` (every frame written), or the error it met;
    ``crashed``: the error is its decode worker's death (retried from the checkpoint)."""

    done: bool = False
    error: str | None = None
    crashed: bool = False


@dataclass(eq=False)
class _Active:
    """A job whose thread runs; ``reason`` says why it was asked to stop."""

    id: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    runner: JobRunner | None = None
    reason: str | None = None  # "cancel" | "shutdown"


class JobQueue:
    """Video jobs over one server; see the module docstring for threads and limits."""

    def __init__(
        self,
        handle: ServerHandle,
        settings: JobSettings,
        watcher: JobWatcher | None = None,
        runner_factory: Callable[..., Any] | None = None,
    ) -> None:
        """``watcher``: told when jobs start and end (the server's push outputs); without
        one, jobs with ``push`` outputs are refused. ``runner_factory``: makes each
        execution's runner (default ``JobRunner``; ``serve --ray``: one that runs the job's
        chunks across a cluster, ``scale.jobs``)."""
        self.handle = handle
        self.settings = settings
        self.watcher = watcher
        self._runner_factory = runner_factory or JobRunner
        self.media = MediaRoot(settings.media_root)
        self.uploads = (settings.state_dir / "uploads").resolve()
        self._lock = threading.RLock()
        self._store: JobStore | None = None
        self._active: dict[str, _Active] = {}
        self._closed = False
        self._closing = threading.Event()  # wakes the retention thread at close
        self._retention: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Open the store; jobs a previous process left queued or running run again, running
        ones from their last checkpoint."""
        with self._lock:
            if self._store is not None or self._closed:
                raise Unavailable("job queue: start() may be called once, before close()")
            (self.settings.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
            self._store = JobStore(self.settings.state_dir / "jobs.db")
            self._store.requeue_running()
            waiting = self._store.list(S.QUEUED)
            if waiting:
                resume = sum(1 for job in waiting if job.checkpoint is not None)
                log.info("jobs: %d waiting, %d resume from a checkpoint", len(waiting), resume)
            self._dispatch()
        if self.settings.limits.job_retention_s is not None:
            self._retention = threading.Thread(
                target=self._retain, name="job-retention", daemon=True
            )
            self._retention.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop running jobs without cancelling them: each goes back to "queued" with its
        last checkpoint, so the next ``start`` resumes it. Then close the store."""
        self._closing.set()
        if self._retention is not None:
            self._retention.join(timeout_s)
        with self._lock:
            self._closed = True
            active = list(self._active.values())
            for job in active:
                job.reason = job.reason or "shutdown"
                job.stop.set()
        deadline = time.monotonic() + timeout_s
        for job in active:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            late = sorted(j.id for j in active if j.thread is not None and j.thread.is_alive())
            if late:
                log.warning("jobs %s: still stopping after %.1f s; they resume at the next "
                            "start", late, timeout_s)  # fmt: skip
            if self._store is not None:
                self._store.close()
                self._store = None

    def _db(self) -> JobStore:
        if self._store is None:
            state = "closed" if self._closed else "not started"
            raise Unavailable(f"job queue: expected a started queue, it is {state}")
        return self._store

    # -- retention and quota ----------------------------------------------------------------
    def _retain(self) -> None:
        """The ``job-retention`` thread: delete expired jobs now and then until close."""
        retention = self.settings.limits.job_retention_s
        assert retention is not None
        every = min(60.0, max(0.5, retention / 4))  # an expired job outlives retention < 25%
        while not self._closing.wait(every):
            try:
                self.purge_expired()
            except Exception:  # noqa: BLE001 - a failed sweep must not end the thread
                log.exception("jobs: deleting expired jobs failed")

    def purge_expired(self, now: float | None = None) -> list[str]:
        """Delete finished jobs (record and files) that ended over ``job_retention_s`` ago;
        returns their ids."""
        retention = self.settings.limits.job_retention_s
        if retention is None:
            return []
        with self._lock:
            if self._store is None:
                return []
            cutoff = (time.time() if now is None else now) - retention
            expired = [j for j in self._store.ended_before(cutoff) if j not in self._active]
            for job_id in expired:
                self._store.delete(job_id)
        for job_id in expired:
            shutil.rmtree(self._paths(job_id).folder, ignore_errors=True)
            log.info("job %s: deleted after --job-retention %g s", job_id, retention)
        return expired

    def check_quota(self) -> None:
        """InsufficientStorage (507) while the state folder is over its quota (expired jobs
        are deleted first)."""
        if self.settings.limits.state_quota_bytes is not None:
            self.purge_expired()
            self.settings.limits.check_quota(self.settings.state_dir)

    # -- submit -----------------------------------------------------------------------------
    def submit(self, spec: JobSpec, owner: str = "") -> JobRecord:
        """Queue a job over ``spec.input`` in the media root for ``owner`` (an API key name,
        "" with keys off); returns it "queued"."""
        with self._lock:
            self._db()  # Unavailable before start and after close, before any other check
        self.check_quota()
        spec = self._validate(spec)
        check_file_format(self.media.resolve(spec.input, "input"), f"input {spec.input!r}")
        return self._add(spec, None, owner)

    def submit_file(self, spec: JobSpec, path: Path, owner: str = "") -> JobRecord:
        """Queue a job over an uploaded file (under ``state_dir/uploads``). The job owns the
        file from here: it moves into the job's folder and goes with the job; if the job is
        refused, the file is deleted."""
        try:
            with self._lock:
                self._db()
            upload = self._check_upload(path)
            check_file_format(upload, f"upload {spec.input!r}")
            self.check_quota()
            spec = self._validate(spec)
            return self._add(spec, upload, owner)
        except BaseException:
            if Path(path).resolve().is_relative_to(self.uploads):
                self._discard_upload(Path(path))
            raise

    def check_room(self) -> None:
        """Refuse a new job before anything is received for it: the queue is full (429) or
        the state folder is over its quota (507)."""
        with self._lock:
            waiting = self._db().count(S.QUEUED)
        if waiting >= self.settings.max_queued:
            raise QueueFull(
                f"jobs: {waiting} jobs are queued, the limit is max_queued "
                f"{self.settings.max_queued} (--max-queued-jobs); submit again after some "
                "have started"
            )
        self.check_quota()

    def validate(self, spec: JobSpec) -> JobSpec:
        """``spec`` checked as ``submit`` checks it (pipeline, models, sampling)."""
        return self._validate(spec)

    def _validate(self, spec: JobSpec) -> JobSpec:
        """Refuse what cannot run: unknown pipeline (InvalidInput), models not loaded
        (ConfigError), sampling a pipeline that makes frames. Returns the spec to store."""
        if spec.push:  # the outputs' fields and destinations
            if self.watcher is None:
                raise InvalidInput("push: expected no push outputs here: only a server pushes")
            self.watcher.check_job(spec)
        root = self.handle.server.repository.root
        name, config = load_named_pipeline(spec.pipeline, root, "pipeline")
        sampling = spec.sampling
        if config.transforms and sampling is not None and sampling.mode != "all":
            does = "makes new frames" if config.interpolates else "filters every frame"
            raise InvalidInput(
                f"sample: pipeline {name} {does} and needs all of them: expected "
                f"all or null, got {spec.sample!r}"
            )
        processor = open_processor(self.handle, name, config)  # raises when models are missing
        ScriptStreams(self.handle, processor, spec.params).check()  # configure refuses: 400
        if config.transforms and not spec.video_out:  # a transformation's product is video
            spec = spec.model_copy(update={"video_out": True})
        return spec

    def _check_upload(self, path: Path) -> Path:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.uploads) or not resolved.is_file():
            raise InvalidInput(f"upload: expected a file under {self.uploads}, got {str(path)!r}")
        return resolved

    def _discard_upload(self, path: Path) -> None:
        """Delete an upload and the folder the server made for it (when empty)."""
        path.unlink(missing_ok=True)
        folder = path.parent
        if folder != self.uploads and folder.is_relative_to(self.uploads):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: not only ours

    def _add(self, spec: JobSpec, upload: Path | None, owner: str) -> JobRecord:
        with self._lock:
            store = self._db()
            waiting = store.count(S.QUEUED)
            if waiting >= self.settings.max_queued:
                raise QueueFull(
                    f"jobs: {waiting} jobs are queued, the limit is max_queued "
                    f"{self.settings.max_queued}; submit again after some have started"
                )
            job_id = uuid.uuid4().hex
            paths = self._paths(job_id)
            paths.folder.mkdir(parents=True)
            owned = None
            if upload is not None:
                paths.uploads.mkdir()
                target = paths.uploads / upload.name
                shutil.move(upload, target)
                self._discard_upload(upload)
                owned = str(target.relative_to(paths.folder))
            store.insert(job_id, spec, owned, time.time(), owner)
            record = self._record(self._stored(job_id))
            log.info("job %s: queued (%s over %s)", job_id, spec.pipeline, spec.input)
            self._dispatch()
            return record

    # -- reading ----------------------------------------------------------------------------
    # ``owner``: None reads every job; a key name reads only that key's jobs, and another's
    # job answers NotFound exactly as a job that does not exist (its existence is not told).
    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        with self._lock:
            return self._record(self._stored(job_id, owner))

    def list(self, state: str | None = None, owner: str | None = None) -> list[JobRecord]:
        """Jobs, newest first; ``state`` filters (InvalidInput for an unknown name)."""
        wanted = S.parse(state) if state is not None else None
        with self._lock:
            return [self._record(job) for job in self._db().list(wanted, owner)]

    def results_path(self, job_id: str, owner: str | None = None) -> Path:
        """The job's JSON lines (present once it started; growing while it runs)."""
        with self._lock:
            self._stored(job_id, owner)
            return self._paths(job_id).results

    def output_path(self, job_id: str, owner: str | None = None) -> Path:
        """The joined MP4 of a job that asked for video and succeeded."""
        with self._lock:
            job = self._stored(job_id, owner)
        path = self._paths(job_id).output
        if not job.spec.video_out:
            raise NotFound(f"job {job_id}: has no video output (video_out was false)")
        if job.state is not S.SUCCEEDED or not path.is_file():
            raise NotFound(
                f"job {job_id}: video output exists once the job succeeded, it is {job.state}"
            )
        return path

    def summary_path(self, job_id: str, owner: str | None = None) -> Path:
        """The per-video summary of a job that succeeded (Conflict before, NotFound when its
        pipeline writes none)."""
        with self._lock:
            job = self._stored(job_id, owner)
        if job.state is not S.SUCCEEDED:
            raise Conflict(
                f"job {job_id}: its summary exists once the job succeeded, it is {job.state}"
            )
        path = self._paths(job_id).summary
        if not path.is_file():
            raise NotFound(
                f"job {job_id}: has no summary (its pipeline {job.spec.pipeline!r} says "
                "summary: false, or the job finished before summaries were written)"
            )
        return path

    def _stored(self, job_id: str, owner: str | None = None) -> StoredJob:
        job = self._db().get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"job {job_id!r}: no such job")
        return job

    def _record(self, job: StoredJob) -> JobRecord:
        active = self._active.get(job.id)
        progress = JobProgress(job.frames_done, job.frames_total)
        if active is not None and active.runner is not None and job.state is S.RUNNING:
            progress = active.runner.progress()
        push = self.watcher.job_status(job.id, job.spec) if self.watcher is not None else ()
        return JobRecord(
            job.id, job.state, job.spec, job.created, job.started, job.finished, progress,
            job.error, job.attempts, job.owner, push,
        )  # fmt: skip

    def _paths(self, job_id: str) -> JobPaths:
        return JobPaths(self.settings.state_dir / "jobs" / job_id)

    # -- cancel and delete ------------------------------------------------------------------
    def delete(self, job_id: str, owner: str | None = None) -> JobRecord:
        """Cancel a queued or running job (its record stays, "cancelled"); remove a finished
        one with all its files."""
        with self._lock:
            job = self._stored(job_id, owner)
            if not job.state.finished:
                return self._cancel(job)
            stopping = self._active.get(job_id)
        if stopping is not None and stopping.thread is not None:  # a cancel still winding down
            stopping.thread.join(DELETE_WAIT_S)
        with self._lock:
            job = self._stored(job_id)
            if job_id in self._active:
                raise Unavailable(f"job {job_id}: still stopping after a cancel; delete again")
            record = self._record(job)
            self._db().delete(job_id)
        shutil.rmtree(self._paths(job_id).folder, ignore_errors=True)
        log.info("job %s: deleted", job_id)
        return record

    def _cancel(self, job: StoredJob) -> JobRecord:
        active = self._active.get(job.id)
        frames_done = active.runner.written() if active and active.runner else None
        self._db().end(job.id, S.CANCELLED, time.time(), None, frames_done)
        if active is not None:
            active.reason = "cancel"
            active.stop.set()
        log.info("job %s: cancelled", job.id)
        return self._tell_end(job.id, "job.cancelled")

    def _tell_end(self, job_id: str, event: str) -> JobRecord:
        """The job's record (it just ended), told to the watcher (under the lock)."""
        record = self._record(self._stored(job_id))
        if self.watcher is not None:
            self.watcher.job_ended(record, event)
        return record

    # -- running ----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Start waiting jobs while slots are free (called under the lock)."""
        store = self._store
        while store is not None and not self._closed:
            if len(self._active) >= self.settings.max_running:
                return
            job_id = store.oldest(S.QUEUED)
            if job_id is None:
                return
            store.start(job_id, time.time())
            active = self._active[job_id] = _Active(job_id)
            active.thread = threading.Thread(
                target=logcontext.bound(self._run, job_id=job_id),
                args=(active,),
                name=f"job-{job_id}",
                daemon=True,
            )
            active.thread.start()

    def _run(self, active: _Active) -> None:
        """The job's thread: run it, then record how it ended (always)."""
        runner: JobRunner | None = None
        outcome = _Outcome()
        try:
            with self._lock:
                job = self._stored(active.id)
                if self.watcher is not None:
                    self.watcher.job_started(job.id, job.spec, lambda: self.get(active.id))
                runner = active.runner = self._runner_factory(
                    self.handle, self.settings, job, lambda cp: self._commit(active, cp),
                    active.stop,
                )  # fmt: skip
            run = runner.prepare(self.media)
            with self._lock:
                self._db().set_total(active.id, run.expected_frames())
            at = runner.resumes_at
            log.info("job %s: running from %s", active.id, f"frame {at}" if at else "the start")
            outcome = _Outcome(done=runner.execute(run))
        except WorkerDied as err:
            outcome = _Outcome(error=_public(err.message, runner), crashed=True)
        except FrameserveError as err:
            outcome = _Outcome(error=_public(err.message, runner))
        except Exception as err:
            log.exception("job %s: failed", active.id)
            outcome = _Outcome(error=_public(f"{type(err).__name__}: {err}", runner))
        finally:
            self._end(active, runner, outcome)

    def _commit(self, active: _Active, checkpoint: Checkpoint) -> None:
        """A checkpoint from the job's sink thread, with the progress it stands for."""
        with self._lock:
            if self._store is None or active.reason == "cancel":
                return
            self._store.checkpoint(active.id, checkpoint)

    def _end(self, active: _Active, runner: JobRunner | None, outcome: _Outcome) -> None:
        """Record the end of a job's thread: succeeded, failed, back to the queue (shutdown,
        or a decode worker that died while retries are left) or nothing more (a cancel,
        recorded when it was asked for)."""
        recorded = self._record_end(active, runner, outcome)
        if recorded and runner is not None and (outcome.done or active.reason == "cancel"):
            runner.remove_segments()  # outside the lock: a long job has many segments

    def _record_end(self, active: _Active, runner: JobRunner | None, outcome: _Outcome) -> bool:
        """False when the store was closed first: the row still says running, so the next
        start resumes the job from its checkpoint (its segments must stay)."""
        with self._lock:
            del self._active[active.id]
            store = self._store
            if store is None:
                log.warning("job %s: stopped after the queue closed; it resumes at the next "
                            "start", active.id)  # fmt: skip
                return False
            written = runner.written() if runner is not None else None
            done, error, crashed = outcome.done, outcome.error, outcome.crashed
            if active.reason == "cancel":
                store.set_done(active.id, written)
            elif done:
                store.end(active.id, S.SUCCEEDED, time.time(), None, written)
                if written is not None:  # the header's estimate gives way to the count
                    store.set_total(active.id, written)
                log.info("job %s: succeeded (%d frames)", active.id, written)
                self._tell_end(active.id, "job.finished")
            elif active.reason == "shutdown":  # back to the queue, its checkpoint kept
                store.end(active.id, S.QUEUED, None)
                log.info("job %s: stopped for shutdown, queued to resume", active.id)
            elif crashed and store.crashed(active.id) <= self.settings.max_retries:
                store.end(active.id, S.QUEUED, None, error)  # resumes at its checkpoint
                log.warning("job %s: %s; queued to resume", active.id, error)
            else:
                if crashed:
                    tries = self.settings.max_retries + 1
                    error = f"{error} ({tries} attempts, --max-job-retries {tries - 1})"
                error = error or "stopped before the end of its input"
                store.end(active.id, S.FAILED, time.time(), error, written)
                log.warning("job %s: failed: %s", active.id, error)
                self._tell_end(active.id, "job.failed")
            self._dispatch()
            return True


def _public(message: str, runner: JobRunner | None) -> str:
    """An error as the client may see it: the input named as the client named it."""
    if runner is None or runner.input is None:
        return message
    return message.replace(str(runner.input), runner.job.spec.input)
