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
the two keeps it from flapping.

Frames that do not wait only say that the decoder is slower than the model; the sampling moved
over still needs a core with time to spare. Where both cores are full (``pan``: the command
busy 0.98-1.16 cores of its 1, against 0.64-0.88 on ``detail``), rows only add the copy and the
bytes. So rows also need the command's own cores under ``BUSY_ON_BELOW`` busy over the window
(its process CPU time against the wall), and stop over ``BUSY_OFF_ABOVE``. Measured in the
README's video benchmark change table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from frameserve.serving.stats import VersionStats


@dataclass
class SamplingBalance:
    """Owned by the thread that reads one decode worker; fed the model's counters per group."""

    WINDOW = 10  # groups between decisions
    ON_BELOW = 0.02  # queue wait / compute under which the worker ships rows
    OFF_ABOVE = 0.10  # over which it samples again
    BUSY_ON_BELOW = 0.85  # share of the command's cores busy under which rows may come here
    BUSY_OFF_ABOVE = 0.95  # over which the worker samples again

    cores: int = 1  # the command's cores: its budget, the decode worker's core set aside
    rows: bool = False  # what the worker was last asked for
    _groups: int = 0
    _last: tuple[int, int, float, float] | None = None  # the window's start, as ``update``'s

    def update(self, queue_ns: int, compute_ns: int, cpu_s: float, wall_s: float) -> bool | None:
        """Count one group given the model's cumulative queue and compute nanoseconds and the
        command's CPU and wall seconds (``command_times``); the new answer (ship rows: True)
        when it changes, else None."""
        self._groups += 1
        now = (queue_ns, compute_ns, cpu_s, wall_s)
        if self._last is None:
            self._last, self._groups = now, 0
            return None
        if self._groups < self.WINDOW:
            return None
        q0, c0, cpu0, wall0 = self._last
        self._last, self._groups = now, 0
        if compute_ns <= c0 or wall_s <= wall0:  # no inference, no time: nothing to judge by
            return None
        ratio = (queue_ns - q0) / (compute_ns - c0)
        busy = (cpu_s - cpu0) / (wall_s - wall0) / self.cores
        if self.rows:
            wanted = ratio < self.OFF_ABOVE and busy < self.BUSY_OFF_ABOVE
        else:
            wanted = ratio < self.ON_BELOW and busy < self.BUSY_ON_BELOW
        if wanted == self.rows:
            return None
        self.rows = wanted
        return wanted

    def observe(self, stats: VersionStats) -> bool | None:
        """``update`` with a model version's counters and this process's times, now."""
        return self.update(*model_times(stats), *command_times())


def command_times() -> tuple[float, float]:
    """This process's CPU seconds (all its threads) and a wall clock, for ``update``."""
    return time.process_time(), time.monotonic()


def model_times(stats: VersionStats) -> tuple[int, int]:
    """A model version's queue and compute nanoseconds so far, both summed per request
    (Triton's statistics: every request of a batch spent the batch's compute time)."""
    return stats.queue.ns, stats.compute_infer.ns
