"""Where a bound decode worker's pictures are sampled: in the worker, or on the server's side.

``video run`` with one input binds its decode worker to a core of its own (``cpu``). On content
that is hard to decode (fine detail, noise) that core is the run's limit while the model's core
waits: then every microsecond the worker spends on something other than FFmpeg slows the run.
Sampling a picture at model size is the largest such part (0.15-0.25 ms a frame at 720p); it can
run in two halves (``processing.yuv.RowPlan``): the worker copies the rows the sampling reads
(a tenth of the cost) and the server samples them, to the same pixels.

Moved where the server has no time to spare, the same work only costs more (the copy, the
bytes), so ``SamplingBalance`` asks for rows only while the model waits for frames: over each
window of groups it compares the time frames waited in the scheduler's queue with the model's
compute time. Frames that do not wait (under ``ON_BELOW`` of compute) mean the decoder is the
limit: rows. Frames that wait (over ``OFF_ABOVE``) mean the model is: pictures. The gap between
the two keeps it from flapping. Measured in the README's video benchmark change table.
"""

from __future__ import annotations

from dataclasses import dataclass

from frameserve.serving.stats import VersionStats


@dataclass
class SamplingBalance:
    """Owned by the thread that reads one decode worker; fed the model's counters per group."""

    WINDOW = 10  # groups between decisions
    ON_BELOW = 0.02  # queue wait / compute under which the worker ships rows
    OFF_ABOVE = 0.10  # over which it samples again

    rows: bool = False  # what the worker was last asked for
    _groups: int = 0
    _last: tuple[int, int] | None = None  # (queue ns, compute ns) at the window's start

    def update(self, queue_ns: int, compute_ns: int) -> bool | None:
        """Count one group given the model's cumulative queue and compute nanoseconds; the
        new answer (ship rows: True) when it changes, else None."""
        self._groups += 1
        if self._last is None:
            self._last, self._groups = (queue_ns, compute_ns), 0
            return None
        if self._groups < self.WINDOW:
            return None
        q0, c0 = self._last
        self._last, self._groups = (queue_ns, compute_ns), 0
        if compute_ns <= c0:  # the model ran nothing in the window: nothing to judge by
            return None
        ratio = (queue_ns - q0) / (compute_ns - c0)
        wanted = ratio < (self.OFF_ABOVE if self.rows else self.ON_BELOW)
        if wanted == self.rows:
            return None
        self.rows = wanted
        return wanted


def model_times(stats: VersionStats) -> tuple[int, int]:
    """A model version's queue and compute nanoseconds so far, both summed per request
    (Triton's statistics: every request of a batch spent the batch's compute time)."""
    return stats.queue.ns, stats.compute_infer.ns
