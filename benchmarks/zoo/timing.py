"""Bounded timing loops and the CPU that other processes took meanwhile.

Every loop stops at a count or a time budget, whichever comes first, so a slow model or a
busy machine makes a point noisier, never the run longer than planned.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Budget:
    """How many samples a latency point takes and how long a throughput window lasts."""

    warmup: int = 3
    min_runs: int = 5
    max_runs: int = 50
    seconds: float = 2.0  # per latency point
    window_s: float = 0.7  # per throughput window
    windows: int = 3  # throughput: the median of this many windows


def sample_ms(fn: Callable[[], object], budget: Budget) -> list[float]:
    """Milliseconds of ``fn()`` over up to ``max_runs`` calls or ``seconds`` (after warm-up)."""
    for _ in range(budget.warmup):
        fn()
    out: list[float] = []
    deadline = time.perf_counter() + budget.seconds
    while len(out) < budget.max_runs and (
        len(out) < budget.min_runs or time.perf_counter() < deadline
    ):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary_ms(values: list[float]) -> dict:
    """Median and p90 of a list of milliseconds, with the count."""
    if not values:
        return {"n": 0, "p50_ms": None, "p90_ms": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"n": len(values), "p50_ms": statistics.median(values), "p90_ms": p90}


def rate_windows(run_window: Callable[[float], tuple[int, float]], budget: Budget) -> dict:
    """Items per second: the median over ``windows`` windows of ``run_window(seconds)``.

    ``run_window`` keeps the runtime busy for about ``seconds`` and returns (items completed,
    seconds until the last one completed); the first window is a warm-up and is dropped.
    """
    run_window(budget.window_s / 2)
    rates = []
    for _ in range(budget.windows):
        items, elapsed = run_window(budget.window_s)
        rates.append(items / elapsed if elapsed > 0 else 0.0)
    return {"per_s": statistics.median(rates), "windows": [round(r, 2) for r in rates]}


def threads_window(
    workers: list[Callable[[], None]], seconds: float, items_per_call: int
) -> tuple[int, float]:
    """Each worker called in a loop on its own thread for ``seconds``; (items, elapsed)."""
    counts = [0] * len(workers)
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < deadline:
            workers[i]()
            counts[i] += 1

    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=loop, args=(i,), name=f"bench-{i}") for i in range(len(workers))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) * items_per_call, time.perf_counter() - t0


class OtherCpu:
    """CPU (in cores) used meanwhile by processes other than this one and its descendants."""

    def __init__(self) -> None:
        self._self = psutil.Process()
        self._start = self._snapshot()
        self._t0 = time.monotonic()

    def _snapshot(self) -> tuple[float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
        busy += getattr(t, "softirq", 0.0)
        return busy, _cpu_seconds(self._self)

    def cores(self) -> float:
        """Average cores the other processes used since this object was made."""
        busy, own = self._snapshot()
        elapsed = max(1e-6, time.monotonic() - self._t0)
        return round(max(0.0, (busy - self._start[0]) - (own - self._start[1])) / elapsed, 2)


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of ``proc``, its live descendants and its children that have exited."""
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            c = child.cpu_times()
            total += c.user + c.system
        return total
    except psutil.Error:
        return 0.0


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25) -> float:
    """Wait (at most ``max_wait_s``) until other processes use < ``threshold_cores``."""
    deadline = time.monotonic() + max_wait_s
    while True:
        probe = OtherCpu()
        time.sleep(0.5)
        other = probe.cores()
        if other < threshold_cores or time.monotonic() >= deadline:
            return other
