"""Counters, rates and lag percentiles of one live stream over a sliding window.

Written by the stream's reader thread (frames in, busy drops), its sink thread (stale and failed
frames) and the event loop (records out, with their lag); read by ``status()`` from any thread.
One lock guards everything; each event costs an append to a bounded deque, and the window is
trimmed as it goes, so reading the rates costs a pass over at most a few seconds of events.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections import deque

from frameserve.video.live.records import StatsSnapshot

WINDOW_S = 5.0  # rates and lag percentiles are over the last seconds
MAX_EVENTS = 8192  # per deque: a 5 s window up to ~1600 frames per second
DROP_REASONS = ("stale", "busy", "failed")
# The lag histogram's upper bounds in seconds (+Inf after them): a live stream's lag is tens of
# milliseconds when it keeps up and seconds when it does not.
LAG_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class StreamStats:
    """Thread-safe counters of one stream (see the module docstring for who writes what)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self.frames_in = 0
        self.frames_out = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self._in: deque[float] = deque(maxlen=MAX_EVENTS)
        self._out: deque[tuple[float, float]] = deque(maxlen=MAX_EVENTS)  # (time, lag s)
        self._lag_counts = [0] * (len(LAG_BUCKETS_S) + 1)  # per bucket, not cumulative
        self._lag_sum = 0.0

    def frame_in(self, now: float) -> None:
        """A frame was taken for the model (after sampling)."""
        with self._lock:
            self.frames_in += 1
            self._in.append(now)
            self._trim(now)

    def frame_out(self, now: float, lag_s: float) -> None:
        """A record was published, ``lag_s`` after its frame arrived."""
        with self._lock:
            self.frames_out += 1
            self._out.append((now, lag_s))
            self._lag_counts[bisect.bisect_left(LAG_BUCKETS_S, lag_s)] += 1
            self._lag_sum += lag_s
            self._trim(now)

    def drop(self, reason: str) -> None:
        """A frame gave no record: ``stale`` (the scheduler replaced it by a newer frame),
        ``busy`` (the result stage was full) or ``failed`` (the model or decoder raised)."""
        with self._lock:
            self.dropped[reason] += 1

    def _trim(self, now: float) -> None:
        oldest = now - self.window_s
        while self._in and self._in[0] < oldest:
            self._in.popleft()
        while self._out and self._out[0][0] < oldest:
            self._out.popleft()

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        """The counters, the rates and the lag's p50 and p99 over the window (None when no
        record was published in it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            span = self._span(now)
            lags = sorted(lag for _, lag in self._out)
            fps_in = round(len(self._in) / span, 2) if span > 0 else 0.0
            fps_out = round(len(self._out) / span, 2) if span > 0 else 0.0
            frames_in, frames_out, dropped = self.frames_in, self.frames_out, dict(self.dropped)
            buckets, lag_sum = tuple(itertools.accumulate(self._lag_counts)), self._lag_sum
        return StatsSnapshot(
            fps_in, fps_out, frames_in, frames_out, dropped,
            _percentile_ms(lags, 0.50), _percentile_ms(lags, 0.99), buckets, lag_sum,
        )  # fmt: skip

    def _span(self, now: float) -> float:
        """Seconds the window covers: shorter while the stream is young, and shorter when a
        deque is full (then it holds less than the window)."""
        span = min(self.window_s, now - self.started)
        if len(self._in) == MAX_EVENTS:
            span = min(span, now - self._in[0])
        if len(self._out) == MAX_EVENTS:
            span = min(span, now - self._out[0][0])
        return span


def _percentile_ms(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted seconds, in milliseconds."""
    if not values:
        return None
    rank = max(0, math.ceil(q * len(values)) - 1)
    return round(values[rank] * 1000.0, 2)
