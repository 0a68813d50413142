"""What a live stream hands out: its records (one per processed frame) and its status.

Both are frozen dataclasses inside the server; ``to_json`` gives the wire form the HTTP, SSE and
gRPC front ends send (its keys and their order are the API: see the README's live streams).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from frameserve.video.live.preview import PreviewStatus


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """One frame's result: its number and time (exact ticks and seconds), the result's own
    fields (``Detections.to_json``, ...), the stream, and the end-to-end lag once published."""

    stream: str
    frame: int
    pts_ticks: int
    time_base: Fraction
    result: dict[str, Any] = field(default_factory=dict)
    lag_ms: float | None = None  # stamped on the loop when the record is published

    @property
    def pts(self) -> float:
        """The frame's time in seconds."""
        return float(self.pts_ticks * self.time_base)

    def to_json(self) -> dict[str, Any]:
        """``frame``, ``pts``, ``pts_ticks``, the result's fields, ``stream``, ``lag_ms``."""
        out: dict[str, Any] = {"frame": self.frame, "pts": self.pts, "pts_ticks": self.pts_ticks}
        out.update(self.result)
        out["stream"] = self.stream
        if self.lag_ms is not None:
            out["lag_ms"] = self.lag_ms
        return out


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """A stream's counters, and its rates and lag percentiles over the last seconds."""

    fps_in: float
    fps_out: float
    frames_in: int
    frames_out: int
    dropped: dict[str, int]  # reason (stale, busy, failed) -> frames
    lag_p50_ms: float | None  # None: no record was published in the window
    lag_p99_ms: float | None
    # Since the stream started, for the Prometheus histogram: records at or under each bound
    # of LAG_BUCKETS_S (cumulative, the last is +Inf), and the lags' sum in seconds.
    lag_buckets: tuple[int, ...] = ()
    lag_sum_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """A stream as ``GET /v1/streams/{id}`` shows it."""

    id: str
    source: str  # without a password
    pipeline: str
    state: str  # connecting | running | retrying | stopped
    stats: StatsSnapshot
    last_error: str | None
    started: str  # ISO 8601, UTC, milliseconds
    reconnects: int
    owner: str = ""  # the API key name that attached it ("": keys off)
    push: tuple[dict[str, Any], ...] = ()  # its push outputs' status (PushStatus.to_json)
    preview: PreviewStatus | None = None  # its annotated preview's watchers and counters
    placement: dict[str, Any] | None = None  # serve --ray: node, moved, moves (scale/)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        out: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "pipeline": self.pipeline,
            "state": self.state,
            "fps_in": s.fps_in,
            "fps_out": s.fps_out,
            "frames_in": s.frames_in,
            "frames_out": s.frames_out,
            "dropped": dict(s.dropped),
            "lag_ms": {"p50": s.lag_p50_ms, "p99": s.lag_p99_ms},
            "last_error": self.last_error,
            "started": self.started,
            "reconnects": self.reconnects,
            "owner": self.owner or None,
            "push": [dict(p) for p in self.push],
        }
        if self.preview is not None:
            out["preview"] = self.preview.to_json()
        if self.placement is not None:
            out["placement"] = self.placement
        return out
