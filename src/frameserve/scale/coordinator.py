"""The coordinator of one distributed job: plan, place, commit, merge.

Runs in the job's thread (``video run --ray``: the main thread). It plans the chunks by
demuxing (``chunks.plan_chunks``), copies each chunk's packets into a piece beside the job,
starts one ``ChunkWorker`` actor per live node (hard node affinity; named by job, node and
attempt, since a dead actor's name is not freed at once) and keeps at most two chunks queued
on each, so the next piece travels while one runs. Ray is called per chunk, never per frame.

Each finished chunk is committed once to the ``ChunkStore`` (only this thread writes). A
worker that dies (its node killed, the OOM killer) gives its chunks back to the queue; a
worker that cannot start (no model repository on its node) marks the node unusable with that
reason. A chunk that fails by itself three times fails the job. When every chunk is in, the
lines are joined in order with track ids stitched (``stitch``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from frameserve.errors import NotSupported, Unavailable, VideoError
from frameserve.scale.chunks import ChunkPlan, piece_path, plan_chunks, write_pieces
from frameserve.scale.cluster import Node, RaySettings, alive_nodes
from frameserve.scale.render import IdsByPts, ids_by_chunk
from frameserve.scale.stitch import stitch
from frameserve.scale.store import ChunkStore
from frameserve.scale.tracing import ChunkAttempt
from frameserve.scale.worker import ChunkResult, ChunkWorker, WorkerSetup
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.decode import probe
from frameserve.video.frames import Sampling
from frameserve.video.jobs.segments import segment_path
from frameserve.video.worker import run_isolated

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUED_PER_WORKER = 2  # one running, one whose piece is on its way
MAX_CHUNK_FAILURES = 3  # a chunk that fails by itself (not its worker) this often fails the job
MAX_WORKER_STARTS = 3  # per node: then the node is left out of this job
NO_NODE_TIMEOUT_S = 60.0  # no usable node for this long: the job fails
REFRESH_S = 1.0  # how often the node list is read


@dataclass(frozen=True)
class ChunkProgress:
    """What ``progress.chunks`` shows."""

    done: int = 0
    running: int = 0
    total: int = 0

    def to_json(self) -> dict[str, int]:
        return {"done": self.done, "running": self.running, "total": self.total}


@dataclass
class _Worker:
    node: Node
    actor: Any
    attempt: int
    ready: Any  # the ref of ``ready()`` until it answered, then None
    queued: dict[Any, int] = field(default_factory=dict)  # ref -> chunk number


@dataclass
class _Stats:
    """Counters the benchmark reads."""

    coordinator_cpu_s: float = 0.0
    chunks_run: int = 0
    workers_lost: int = 0
    duplicates: int = 0
    recovered_at: list[float] = field(default_factory=list)
    ready_at: list[float] = field(default_factory=list)  # when each worker had its models


class Coordinator:
    """Runs one input's chunks across the cluster; see the module docstring."""

    def __init__(
        self,
        ray: Any,
        settings: RaySettings,
        store: ChunkStore,
        setup: WorkerSetup,
        source: Path,
        folder: Path,
        stop: threading.Event | None = None,
        isolate: bool = False,
        segments: Path | None = None,
    ) -> None:
        """``folder``: where the pieces go (kept until the job ends, for a restart);
        ``isolate``: demux in a child process (``run_isolated``: FFmpeg reading an untrusted
        file in ``frameserve serve``); ``segments``: encode video (``render``) into segments
        there."""
        self.ray = ray
        self.settings = settings
        self.store = store
        self.setup = setup
        self.source = source
        self.pieces = folder
        self.stop = stop or threading.Event()
        self.isolate = isolate
        self.segments = segments
        self._rendered: set[int] = set()  # chunks whose segment is written
        self._render: list[IdsByPts] | None = None  # the render pass's ids, per chunk
        self.plan: ChunkPlan | None = None
        self.stats = _Stats()
        self._done: set[int] = set()
        self._running = 0
        self._workers: dict[str, _Worker] = {}
        self._unusable: dict[str, str] = {}  # node id -> why it is left out
        self._starts: dict[str, int] = {}
        self._failures: dict[int, int] = {}
        self._sent: dict[Any, int] = {}  # a queued chunk's ref -> when it was sent (ns)
        self.on_chunk: Callable[[ChunkAttempt], None] | None = None  # trace spans
        self._remote = ray.remote(ChunkWorker)

    # -- planning -----------------------------------------------------------------------------
    def prepare(self) -> ChunkPlan:
        """The plan (the stored one on a resume) and the pieces of the chunks not committed."""
        job = self.setup.job
        plan = self.store.plan(job)
        if plan is None or plan.sampling != self.setup.sampling:
            plan = self._new_plan()
            self.store.save_plan(job, plan)
        self._done = self.store.committed(job)
        if self.segments is not None:
            self._rendered = {c.number for c in plan.chunks
                              if segment_path(self.segments, c.number).is_file()}  # fmt: skip
        missing = [c for c in plan.chunks if self._needs_piece(c.number)
                   and not piece_path(self.pieces, c.number).is_file()]  # fmt: skip
        if missing:
            self._demux(write_pieces, self.source, plan, self.pieces, doing="cutting")
        self.plan = plan
        if self._done:
            log.info("job %s: resuming, %d of %d chunks committed", job, len(self._done),
                     len(plan.chunks))  # fmt: skip
        return plan

    def _needs_piece(self, number: int) -> bool:
        return number not in self._done or (
            self.segments is not None and number not in self._rendered
        )

    def _new_plan(self) -> ChunkPlan:
        info = self._demux(probe, self.source, doing="reading the header of")
        rate = float(info.rate) if info.rate else 25.0
        frames = max(1, round(self.settings.chunk_seconds * rate))
        sampling = Sampling.parse(self.setup.sampling)
        overlap = self.settings.overlap
        return self._demux(plan_chunks, self.source, sampling, frames, overlap, doing="planning")

    def _demux(self, target: Callable[..., T], *args: Any, doing: str) -> T:
        if not self.isolate:
            return target(*args)
        name = f"job-{self.setup.job[:8]}-plan"
        return run_isolated(target, *args, name=name, doing=f"{doing} {self.source}",
                            timeout_s=3600.0, stop=self.stop)  # fmt: skip

    def progress(self) -> tuple[int, ChunkProgress]:
        """Frames committed and the chunk counts (any thread)."""
        plan = self.plan
        if plan is None:
            return 0, ChunkProgress()
        done = set(self._done)
        frames = sum(c.kept for c in plan.chunks if c.number in done)
        passes = 2 if self.segments is not None else 1  # results, then segments
        total = passes * len(plan.chunks)
        return frames, ChunkProgress(len(done) + len(self._rendered), self._running, total)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> bool:
        """Run every chunk not committed (then, for video, render every segment not written);
        True when all are, False when stopped first."""
        plan = self.plan or self.prepare()
        try:
            if not self._loop(deque(c.number for c in plan.chunks if c.number not in self._done)):
                return False
            if self.segments is None:
                return True
            self._render = self._render_inputs()
            return self._loop(deque(c.number for c in plan.chunks
                                    if c.number not in self._rendered))  # fmt: skip
        finally:
            self._stop_workers()

    def _render_inputs(self) -> list[IdsByPts]:
        assert self.plan is not None
        chunks = self.plan.chunks
        lines = list(stitch(self.store.results(self.setup.job, len(chunks))))
        return ids_by_chunk(lines, [c.end for c in chunks])

    def _loop(self, pending: deque[int]) -> bool:
        """Place ``pending`` chunks until every one answered; False when stopped first."""
        cpu0, last_refresh, no_node_since = time.process_time(), 0.0, time.monotonic()
        try:
            while pending or any(w.queued for w in self._workers.values()):
                if self.stop.is_set():
                    return False
                now = time.monotonic()
                if now - last_refresh >= REFRESH_S:
                    self._refresh(pending)
                    last_refresh = now
                if self._workers:
                    no_node_since = now
                elif now - no_node_since > NO_NODE_TIMEOUT_S:
                    raise Unavailable(self._no_node_reason())
                self._fill(pending)
                self._collect(pending)
        finally:
            self.stats.coordinator_cpu_s += time.process_time() - cpu0
        return True

    def _refresh(self, pending: deque[int]) -> None:
        """Start a worker on each new usable node; give back the chunks of gone ones."""
        nodes = {n.id: n for n in alive_nodes(self.ray)}
        for node_id in list(self._workers):
            if node_id not in nodes:
                self._lose(self._workers[node_id], pending, "its node is gone")
        for node in nodes.values():
            if node.id not in self._workers and node.id not in self._unusable:
                self._start(node)

    def _start(self, node: Node) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        attempt = self._starts.get(node.id, 0) + 1
        if attempt > MAX_WORKER_STARTS:
            self._unusable[node.id] = f"its worker died {attempt - 1} times"
            return
        self._starts[node.id] = attempt
        cpus = self.settings.worker_cpus or node.cpus
        setup = WorkerSetup(**{**self.setup.__dict__, "cpus": cpus})
        actor = self._remote.options(
            name=f"{self.setup.job[:12]}-{node.id[:8]}-a{attempt}",
            num_cpus=cpus,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
        ).remote(setup)
        self._workers[node.id] = _Worker(node, actor, attempt, actor.ready.remote())

    def _fill(self, pending: deque[int]) -> None:
        assert self.plan is not None
        for worker in self._workers.values():
            while worker.ready is None and pending and len(worker.queued) < QUEUED_PER_WORKER:
                number = pending.popleft()
                chunk = self.plan.chunks[number]
                piece = self.ray.put(piece_path(self.pieces, number).read_bytes())
                render = self._render[number] if self._render is not None else None
                ref = worker.actor.run.remote(chunk.to_json(), piece, render)
                worker.queued[ref] = number
                self._sent[ref] = time.perf_counter_ns()
        self._running = sum(len(w.queued) for w in self._workers.values())

    def _collect(self, pending: deque[int]) -> None:
        refs = {}
        for worker in self._workers.values():
            if worker.ready is not None:
                refs[worker.ready] = worker
            for ref in worker.queued:
                refs[ref] = worker
        if not refs:
            time.sleep(0.1)
            return
        ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=0.5)
        for ref in ready:
            worker = refs[ref]
            if self._workers.get(worker.node.id) is worker:
                self._answer(worker, ref, pending)

    def _answer(self, worker: _Worker, ref: Any, pending: deque[int]) -> None:
        exc = self.ray.exceptions
        try:
            value = self.ray.get(ref)
        except exc.RayActorError as err:
            if worker.ready is ref:  # it never ran: its node cannot take this job's work
                self._not_started(worker, _reason(err))
            else:
                self._lose(worker, pending, _reason(err))
            return
        except exc.RayTaskError as err:
            number = worker.queued.pop(ref)
            self._report(worker, ref, number, "failed")
            self._chunk_failed(number, _reason(err), pending)
            return
        except exc.RayError as err:  # the worker's process or node, in other words
            self._lose(worker, pending, _reason(err))
            return
        if worker.ready is ref:
            worker.ready = None
            self.stats.ready_at.append(time.monotonic())
            log.info("job %s: worker %d ready on node %s", self.setup.job, worker.attempt,
                     worker.node.name)  # fmt: skip
            return
        number = worker.queued.pop(ref)
        self._report(worker, ref, number, self._commit(value, worker.node.id))
        self.stats.chunks_run += 1

    def _not_started(self, worker: _Worker, reason: str) -> None:
        self._unusable[worker.node.id] = reason
        log.warning("job %s: no worker on node %s (%s); its chunks go to other nodes",
                    self.setup.job, worker.node.name, reason)  # fmt: skip
        self._workers.pop(worker.node.id, None)
        self._kill(worker)

    def _report(self, worker: _Worker, ref: Any, number: int, outcome: str) -> None:
        """A chunk attempt ended: its trace span (when the job is traced)."""
        sent = self._sent.pop(ref, None)
        if self.on_chunk is None or sent is None or self.plan is None:
            return
        frames = self.plan.chunks[number].kept
        self.on_chunk(ChunkAttempt(number, self._render is not None, worker.node.name, sent,
                                   time.perf_counter_ns(), outcome, frames))  # fmt: skip

    def _commit(self, result: ChunkResult, node: str) -> str:
        """Record a chunk's answer; returns ``committed`` or ``duplicate``."""
        outcome = "committed"
        if result.video is not None:
            outcome = self._write_segment(result.number, result.video)
        elif self.store.commit(self.setup.job, result.number, result.lines, result.overlap,
                               node, result.seconds):  # fmt: skip
            self._done.add(result.number)
        else:
            self.stats.duplicates += 1
            outcome = "duplicate"
        if not self._needs_piece(result.number):
            piece_path(self.pieces, result.number).unlink(missing_ok=True)
        return outcome

    def _write_segment(self, number: int, data: bytes) -> str:
        """A chunk's segment, whole or absent (a rename); the first one written wins."""
        assert self.segments is not None
        path = segment_path(self.segments, number)
        if path.exists():
            self.stats.duplicates += 1
            return "duplicate"
        self.segments.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        self._rendered.add(number)
        return "committed"

    def _chunk_failed(self, number: int, reason: str, pending: deque[int]) -> None:
        n = self._failures[number] = self._failures.get(number, 0) + 1
        if n >= MAX_CHUNK_FAILURES:
            raise VideoError(f"chunk {number}: failed {n} times: {reason}")
        log.warning("job %s: chunk %d failed (%s); running it again", self.setup.job, number,
                    reason)  # fmt: skip
        pending.appendleft(number)

    def _lose(self, worker: _Worker, pending: deque[int], reason: str) -> None:
        """A worker is gone: its chunks go back to the front of the queue."""
        self._workers.pop(worker.node.id, None)
        self.stats.workers_lost += 1
        self.stats.recovered_at.append(time.monotonic())
        finished = self._rendered if self._render is not None else self._done
        for ref, number in worker.queued.items():
            self._report(worker, ref, number, "lost")
        lost = sorted(n for n in worker.queued.values() if n not in finished)
        pending.extendleft(reversed(lost))
        log.warning("job %s: worker on node %s lost (%s); chunks %s run elsewhere",
                    self.setup.job, worker.node.name, reason, lost)  # fmt: skip
        self._kill(worker)

    def _kill(self, worker: _Worker) -> None:
        try:
            self.ray.kill(worker.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - an actor on a dead node may be gone already
            log.debug("killing a lost worker failed", exc_info=True)

    def _stop_workers(self) -> None:
        for worker in list(self._workers.values()):
            self._kill(worker)
        self._workers.clear()
        self._running = 0

    def _no_node_reason(self) -> str:
        why = "; ".join(f"node {n[:8]}: {r}" for n, r in self._unusable.items())
        return f"job {self.setup.job}: no node can run its chunks" + (f" ({why})" if why else "")

    # -- the end ----------------------------------------------------------------------------
    def merge(self, out: Path) -> int:
        """Join the committed chunks into ``out`` (whole or absent); returns the lines."""
        assert self.plan is not None
        partial = out.with_name(out.name + ".partial")
        count = 0
        with partial.open("wb") as f:
            for line in stitch(self.store.results(self.setup.job, len(self.plan.chunks))):
                f.write(line)
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, out)
        if count != self.plan.kept:
            raise VideoError(f"job {self.setup.job}: joined {count} lines, expected "
                             f"{self.plan.kept}")  # fmt: skip
        return count

    def segment_files(self) -> list[Path]:
        """The rendered segments in order (``join_segments`` makes the video of them)."""
        assert self.plan is not None and self.segments is not None
        return [segment_path(self.segments, c.number) for c in self.plan.chunks]

    def finish(self) -> None:
        """Forget the job's chunks and pieces once its results are written."""
        self.store.drop(self.setup.job)
        for path in self.pieces.glob("*.mp4"):
            path.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """The useful line of a Ray error: the cause a worker raised, else Ray's own words."""
    text = str(err)
    for line in reversed(text.splitlines()):
        if "Error:" in line and "ray." not in line.split("Error:")[0]:
            return line.strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_pipeline(name: str, config: VideoPipelineConfig) -> None:
    """What a distributed job cannot do, refused before any work: what carries state from
    frame to frame across a chunk's border other than tracks (which are stitched)."""
    if config.interpolates:
        raise NotSupported(f"--ray: pipeline {name} makes new frames; run it on one node")
    for what, present in (("filters", config.filters), ("defects", config.defects)):
        if present is not None:
            raise NotSupported(
                f"--ray: pipeline {name} has {what}: (FFmpeg's filters and freeze detection "
                "keep state across frames, which chunks would cut); run it on one node"
            )
