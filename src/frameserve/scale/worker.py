"""The per-node worker of a distributed job: a Ray actor that holds the pipeline's models and
runs chunks through the same ``VideoRun`` and ``FramePump`` as a local run.

One ``ChunkWorker`` per node and job attempt, placed with hard node affinity (the coordinator
chooses the node). It starts a ``LocalServer`` over the model repository at the same path as
the coordinator's (every node needs it there: a node without it fails its worker with that
reason, and the coordinator sends the chunks elsewhere), with a core budget of the CPUs Ray
gave it (Ray counts the machine's CPUs, not the affinity mask). A chunk arrives as its MP4
piece (bytes from the object store); the worker decodes it as a resumed job would (from the
chunk's keyframe, with the selector's state there and the first frame's index) and returns
the result lines: its own frames and the overlap frames of the next chunk, apart.

This module imports no Ray: the coordinator wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError
from frameserve.scale.chunks import Chunk
from frameserve.scale.render import GivenIds, IdsByPts, segment_encoder
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.serving.types import Admission
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.frames import Sampling
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import StreamOutputs, StreamPlan, StreamStart

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSetup:
    """What every worker of one job gets: the pipeline, where the models are, its CPUs."""

    job: str
    pipeline: str
    config: VideoPipelineConfig
    repository: Path
    sampling: str
    cpus: int
    params: dict[str, Any] | None = None
    model_cache_dir: Path | None = None


@dataclass(frozen=True)
class ChunkResult:
    """The lines one chunk wrote: its own frames, and the next chunk's first kept frames."""

    number: int
    lines: bytes
    overlap: bytes
    node: str
    seconds: float
    video: bytes | None = None  # the encoded segment (the render pass)


class ChunkWorker:
    """Holds the pipeline's models on one node; ``run`` processes one chunk at a time."""

    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.node = socket.gethostname()
        missing = [m for m in setup.config.models if not (setup.repository / m).is_dir()]
        if missing:
            raise ConfigError(
                f"node {self.node}: the model repository at {setup.repository} is missing "
                f"or lacks {', '.join(missing)}: every node needs the repository at the same "
                "path as the coordinator's"
            )
        settings = ServerSettings(
            repository=setup.repository,
            model_control_mode="explicit",
            load_models=tuple(setup.config.models),
            budget=CpuBudget(max(1, setup.cpus), "ray --num-cpus"),
            model_cache_dir=setup.model_cache_dir,
        )
        self.local = LocalServer(settings)
        self._folder = Path(tempfile.mkdtemp(prefix=f"frameserve-{setup.job[:8]}-"))

    def ready(self) -> str:
        """Answers once the models are loaded (the coordinator waits on it)."""
        return self.node

    def run(
        self, chunk_json: dict[str, Any], piece: bytes, render: IdsByPts | None = None
    ) -> ChunkResult:
        """Run one chunk: its result lines, or with ``render`` (the joined track ids of its
        frames) its encoded segment, drawn with those ids."""
        chunk = Chunk.from_json(chunk_json)
        started = time.monotonic()
        path = self._folder / f"{chunk.number:05d}.mp4"
        path.write_bytes(piece)
        out = self._folder / f"{chunk.number:05d}.jsonl"
        video = self._folder / f"{chunk.number:05d}.out.mp4" if render is not None else None
        for leftover in (out, video):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        try:
            run = self._run(chunk, path, StreamOutputs(out, None, video), render)
            run.run()
            lines, overlap = split_lines(out.read_bytes(), chunk)
            segment = video.read_bytes() if video is not None else None
        finally:
            for done in (path, out, video):
                if done is not None:
                    done.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        return ChunkResult(chunk.number, lines, overlap, self.node, seconds, segment)

    def _run(
        self, chunk: Chunk, path: Path, outputs: StreamOutputs, render: IdsByPts | None
    ) -> VideoRun:
        s = self.setup
        encoder = segment_encoder(chunk.end_pts)
        run = VideoRun(
            self.local, s.pipeline, s.config, [path],
            RunOptions(out=self._folder, sample=Sampling.parse(s.sampling),
                       video_out=render is not None, decode_threads=max(1, s.cpus),
                       summary=False, params=s.params),
            admission=Admission(stream_id=f"job-{s.job}-{chunk.number}", background=True),
            plans=[StreamPlan(outputs, StreamStart(chunk.seek, chunk.first, 0), encoder)],
            stop=threading.Event(),
        )  # fmt: skip
        stream = run.streams[0]
        if render is not None and stream.tracker is not None:
            stream.tracker = GivenIds(render)  # type: ignore[assignment]
        return run

    def close(self) -> None:
        self.local.close()


def split_lines(data: bytes, chunk: Chunk) -> tuple[bytes, bytes]:
    """The chunk's own lines and its overlap lines; frames at or after its bound (decoded
    only because they came before a needed packet in decode order) are dropped."""
    own: list[bytes] = []
    overlap: list[bytes] = []
    for raw in data.splitlines():
        if not raw:
            continue
        line = orjson.loads(raw)
        if chunk.bound_pts is not None and line["pts_ticks"] >= chunk.bound_pts:
            continue
        (own if line["frame"] < chunk.end else overlap).append(raw)
    if len(own) != chunk.kept:
        raise ConfigError(
            f"chunk {chunk.number}: expected {chunk.kept} frames from {chunk.first} to "
            f"{chunk.end}, the piece gave {len(own)}"
        )
    return b"".join(r + b"\n" for r in own), b"".join(r + b"\n" for r in overlap)
