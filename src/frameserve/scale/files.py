"""``frameserve video run --ray ADDRESS``: the same outputs as a local run, made by the cluster.

This process is the coordinator: it plans each input's chunks, ships their packets through
the object store and joins the committed lines into ``OUT/<stem>.jsonl`` (and the summary the
pipeline asks for). Its chunk record lives in ``OUT/.frameserve-ray.db``: a run started again
with the same input, pipeline and sampling after a crash runs only the chunks not committed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frameserve.scale.cluster import RaySettings, connect
from frameserve.scale.coordinator import Coordinator, check_pipeline
from frameserve.scale.store import ChunkStore
from frameserve.scale.worker import WorkerSetup
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.frames import Sampling
from frameserve.video.jobs.segments import join_segments
from frameserve.video.summary import summarize_file, write_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileJob:
    """One input of ``video run --ray``."""

    input: Path
    jsonl: Path
    summary: Path | None
    video: Path | None = None  # OUT/<stem>.mp4 (--video-out)


@dataclass(frozen=True)
class FileResult:
    input: Path
    frames: int
    chunks: int
    wall_s: float
    workers_lost: int


def job_key(path: Path, pipeline: str, sampling: str) -> str:
    """The same input, pipeline and sampling resume the same chunk record."""
    stat = path.stat()
    text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{pipeline}|{sampling}"
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def run_files(
    settings: RaySettings,
    name: str,
    config: VideoPipelineConfig,
    jobs: list[FileJob],
    out: Path,
    repository: Path,
    sample: Sampling | None,
    params: dict[str, Any] | None = None,
) -> list[FileResult]:
    """Run every input across the cluster, one after the other (each uses every node)."""
    check_pipeline(name, config)
    ray = connect(settings)
    sampling = str(sample or Sampling.parse(config.sample, f"{name}: sample"))
    store = ChunkStore(out / ".frameserve-ray.db")
    results = []
    try:
        for job in jobs:
            key = job_key(job.input, name, sampling)
            setup = WorkerSetup(key, name, config, repository.resolve(), sampling, 1, params)
            pieces = out / ".frameserve-ray" / key
            segments = pieces / "segments" if job.video is not None else None
            coordinator = Coordinator(
                ray, settings, store, setup, job.input, pieces, segments=segments
            )
            started = time.monotonic()
            plan = coordinator.prepare()
            coordinator.run()
            frames = coordinator.merge(job.jsonl)
            if job.video is not None:
                join_segments(coordinator.segment_files(), job.input, job.video)
            spec = config.summary_spec()
            if spec is not None and job.summary is not None:
                write_summary(job.summary, summarize_file(job.jsonl, spec, name))
            coordinator.finish()
            shutil.rmtree(pieces, ignore_errors=True)
            wall = time.monotonic() - started
            lost = coordinator.stats.workers_lost
            results.append(FileResult(job.input, frames, len(plan.chunks), wall, lost))
    finally:
        store.close()
    return results
