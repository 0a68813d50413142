"""What a video job is: the client's spec, its states, its record, the queue's settings, and
the checkpoint that lets a job resume where a stopped or killed process left it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from frameserve.errors import ConfigError, InvalidInput
from frameserve.video.frames import Sampling, SeekPoint, check_sample
from frameserve.video.limits import VideoLimits
from frameserve.video.params import ScriptParams
from frameserve.video.push.spec import PushList


class JobSpec(BaseModel):
    """A job as a client asks for it: a pipeline by name over a file of the media root."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    input: Annotated[StrictStr, Field(min_length=1, max_length=4096)]  # relative to media root
    sample: StrictStr | None = None  # None: the pipeline's own ``sample``
    video_out: StrictBool = False
    # Per-stream params for the pipeline's script models (their ``configure``); JSON object
    params: ScriptParams = None
    # Webhook and MQTT outputs told of the job's end (and progress): video.push.spec
    push: PushList = ()

    @field_validator("sample")
    @classmethod
    def _sample(cls, v: str | None) -> str | None:
        return check_sample(v)

    @property
    def sampling(self) -> Sampling | None:
        return Sampling.parse(self.sample, "sample") if self.sample is not None else None


class JobState(StrEnum):
    """queued -> running -> succeeded | failed | cancelled (running -> queued at shutdown)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def parse(cls, text: str, where: str = "state") -> JobState:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise InvalidInput(f"{where}: expected one of {names}, got {text!r}") from None

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """Written frames (those before a resume included), the total expected (0: unknown), the
    rate of the current run and the time left; rate and time left are None unless running."""

    frames_done: int = 0
    frames_total: int = 0
    fps: float | None = None
    eta_s: float | None = None
    chunks: tuple[int, int, int] | None = None  # a job on Ray: chunks done, running, total

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "frames_done": self.frames_done,
            "frames_total": self.frames_total,
            "fps": round(self.fps, 2) if self.fps is not None else None,
            "eta_s": round(self.eta_s, 1) if self.eta_s is not None else None,
        }
        if self.chunks is not None:
            out["chunks"] = dict(zip(("done", "running", "total"), self.chunks, strict=True))
        return out


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as the API shows it. Times are seconds since the epoch (ISO 8601 in JSON)."""

    id: str
    state: JobState
    spec: JobSpec
    created: float
    started: float | None = None  # the first start (a resumed job keeps it)
    finished: float | None = None
    progress: JobProgress = JobProgress()
    error: str | None = None
    attempts: int = 0  # executions started so far (a retry after a crash, a resume)
    owner: str = ""  # the API key name that submitted it ("": keys off)
    push: tuple[dict[str, Any], ...] = ()  # its push outputs' status (PushStatus.to_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "pipeline": self.spec.pipeline,
            "input": self.spec.input,
            "sample": self.spec.sample,
            "video_out": self.spec.video_out,
            "params": self.spec.params,
            "created": _iso(self.created),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "progress": self.progress.to_json(),
            "error": self.error,
            "attempts": self.attempts,
            "owner": self.owner or None,
            "push": [dict(p) for p in self.push],
        }


@dataclass(frozen=True)
class JobSettings:
    """Where jobs keep their state and read their inputs, and how many run at once.

    ``checkpoint_interval_s``: the least wall time between two checkpoints (taken at keyframes;
    0: at every keyframe). ``decode_threads``: FFmpeg threads per job (live streams and online
    requests need the cores more).
    """

    state_dir: Path
    media_root: Path
    max_running: int = 1
    max_queued: int = 32
    checkpoint_interval_s: float = 5.0
    decode_threads: int = 1
    max_retries: int = 2  # a job whose decode worker died runs again at most this often
    isolate: bool = True  # decode in a worker process (a crash in FFmpeg fails only the job)
    limits: VideoLimits = field(default_factory=VideoLimits)  # frame size/count, retention, quota

    def __post_init__(self) -> None:
        for name, least in (("max_running", 1), ("max_queued", 1), ("decode_threads", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"jobs: {name}: expected an integer >= {least}, got {value!r}")
        if not self.checkpoint_interval_s >= 0:
            raise ConfigError(
                "jobs: checkpoint_interval_s: expected seconds >= 0, "
                f"got {self.checkpoint_interval_s!r}"
            )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a job resumes, committed with its progress once the files below are on disk.

    ``seek``: the keyframe to decode from and the sampling state there; ``next_frame``: the
    index of the first frame still to write; ``written``: result lines written before it;
    ``results_bytes``: the results file's length after them (it is cut back to that);
    ``segments``: video segments complete before it (later ones are deleted).
    """

    seek: SeekPoint
    next_frame: int
    written: int
    results_bytes: int
    segments: int = 0

    def to_json(self) -> dict[str, Any]:
        tick = self.seek.next_tick
        return {
            "pts": self.seek.pts,
            "index": self.seek.index,
            "next_tick": None if tick is None else f"{tick.numerator}/{tick.denominator}",
            "next_frame": self.next_frame,
            "written": self.written,
            "results_bytes": self.results_bytes,
            "segments": self.segments,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        tick = data["next_tick"]
        seek = SeekPoint(int(data["pts"]), int(data["index"]), Fraction(tick) if tick else None)
        return cls(
            seek,
            int(data["next_frame"]),
            int(data["written"]),
            int(data["results_bytes"]),
            int(data["segments"]),
        )
