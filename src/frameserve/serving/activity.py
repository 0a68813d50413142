"""Recent activity per model version: what ``GET /v1/models/activity`` and the dashboard show.

Triton's statistics are totals since a version loaded; a page that wants "inferences a second
over the last minutes" would have to poll and difference them itself, and would see nothing of
the time before it opened. ``ActivityRecorder`` does that once, on the server: every
``interval_s`` it reads the versions' ``VersionStats`` and keeps the differences in a bounded
ring per version (``window_s / interval_s`` samples). A version that is unloaded loses its ring;
one that is reloaded (fresh counters) starts a new baseline.

Owned by the server's event loop: ``sample`` runs there (the counters it reads are updated only
on that loop), and ``start``/``stop`` create and cancel its one task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frameserve.serving.stats import VersionStats

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 2.0
DEFAULT_WINDOW_S = 600.0


@dataclass(frozen=True, slots=True)
class _Totals:
    """The cumulative counters of one version at one moment."""

    inferences: int
    executions: int
    requests: int
    queue_ns: int
    compute_ns: int
    compute_count: int

    @classmethod
    def of(cls, stats: VersionStats) -> _Totals:
        compute = stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns
        return cls(
            stats.inference_count,
            stats.execution_count,
            stats.success.count,
            stats.queue.ns,
            compute,
            stats.compute_infer.count,
        )

    def behind(self, other: _Totals) -> bool:
        """Whether any counter of ``self`` is below ``other``'s (the version was reloaded)."""
        return any(a < b for a, b in zip(_astuple(self), _astuple(other), strict=True))


def _astuple(t: _Totals) -> tuple[int, ...]:
    return (t.inferences, t.executions, t.requests, t.queue_ns, t.compute_ns, t.compute_count)


@dataclass(frozen=True, slots=True)
class ActivitySample:
    """What one version did during one interval ending at ``t`` (seconds since the epoch)."""

    t: float
    seconds: float
    inferences: int
    executions: int
    requests: int
    queue_ns: int  # summed over the interval's requests
    compute_ns: int  # summed over the interval's requests (Triton's per-request semantics)
    compute_count: int

    def to_json(self) -> dict[str, Any]:
        per_s = self.inferences / self.seconds if self.seconds > 0 else 0.0
        queue_ms = self.queue_ns / self.requests / 1e6 if self.requests else None
        compute_ms = self.compute_ns / self.compute_count / 1e6 if self.compute_count else None
        return {
            "t": round(self.t, 3),
            "seconds": round(self.seconds, 3),
            "inferences": self.inferences,
            "executions": self.executions,
            "requests": self.requests,
            "inferences_per_s": round(per_s, 3),
            "queue_ms": None if queue_ms is None else round(queue_ms, 3),
            "compute_ms": None if compute_ms is None else round(compute_ms, 3),
        }


class _VersionRing:
    """The samples of one version and the totals the next sample is measured from."""

    def __init__(self, totals: _Totals, at: float, size: int) -> None:
        self.totals = totals
        self.at = at
        self.samples: deque[ActivitySample] = deque(maxlen=size)

    def add(self, totals: _Totals, at: float) -> None:
        if totals.behind(self.totals):  # reloaded: counters restarted, measure from here
            self.totals, self.at = totals, at
            return
        prev = self.totals
        self.samples.append(
            ActivitySample(
                at,
                at - self.at,
                totals.inferences - prev.inferences,
                totals.executions - prev.executions,
                totals.requests - prev.requests,
                totals.queue_ns - prev.queue_ns,
                totals.compute_ns - prev.compute_ns,
                totals.compute_count - prev.compute_count,
            )
        )
        self.totals, self.at = totals, at


class ActivityRecorder:
    """Samples ``read()`` (the loaded versions' stats) every ``interval_s`` into bounded rings."""

    def __init__(
        self,
        read: Callable[[], list[VersionStats]],
        interval_s: float = DEFAULT_INTERVAL_S,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0 or window_s < interval_s:
            raise ValueError(
                f"activity: expected 0 < interval_s <= window_s, got {interval_s}, {window_s}"
            )
        self.interval_s = interval_s
        self.window_s = window_s
        self._read = read
        self._clock = clock
        self._size = max(1, round(window_s / interval_s))
        self._rings: dict[tuple[str, str], _VersionRing] = {}
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        """Take one sample of every loaded version; forget the versions no longer loaded."""
        now = self._clock()
        seen = set()
        for stats in self._read():
            key = (stats.model, stats.version)
            seen.add(key)
            totals = _Totals.of(stats)
            ring = self._rings.get(key)
            if ring is None:
                self._rings[key] = _VersionRing(totals, now, self._size)
            else:
                ring.add(totals, now)
        for key in self._rings.keys() - seen:
            del self._rings[key]

    def to_json(self, model: str | None = None) -> dict[str, Any]:
        """The rings as the API shows them, optionally of one model's versions only."""
        models = [
            {
                "name": name,
                "version": version,
                "samples": [s.to_json() for s in ring.samples],
            }
            for (name, version), ring in sorted(self._rings.items())
            if model is None or name == model
        ]
        return {"interval_s": self.interval_s, "window_s": self.window_s, "models": models}

    def start(self) -> None:
        """Start sampling on the running loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="activity")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a bad sample must not end the recording; say why
                log.exception("model activity: sampling failed")
            await asyncio.sleep(self.interval_s)
