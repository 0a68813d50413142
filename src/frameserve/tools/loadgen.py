"""The load generator: closed-loop concurrency and open-loop request rates over any target.

A target is one coroutine function, ``send()``, that makes one request and raises on failure.
``measure`` drives it on the calling event loop for a warm-up and a measured window and returns
latencies of the requests that completed inside the window, like perf_analyzer: throughput is
completions in the window over its length. The generator's own CPU time (the process's, over the
window) is reported with every point, so a saturated client is visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

Send = Callable[[], Awaitable[None]]

# Open loop: at most this many requests outstanding; past it the generator counts the tick as
# missed instead of queueing unbounded work in the client.
MAX_OUTSTANDING = 1024


@dataclass(frozen=True)
class Load:
    """Closed loop (``concurrency`` requests always outstanding) or open loop (``rate`` /s)."""

    concurrency: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("a load is either a concurrency or a request rate, not both")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency: expected >= 1, got {self.concurrency}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"request rate: expected > 0, got {self.rate}")

    def describe(self) -> str:
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        return f"rate {self.rate:g}/s"


@dataclass
class _Window:
    start: float = 0.0
    end: float = float("inf")
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    missed: int = 0
    total_ok: int = 0  # over the whole run, warm-up and tail included (to compare with
    total_failed: int = 0  # the server's own counters)

    def record(self, started: float, done: float, error: BaseException | None) -> None:
        if error is None:
            self.total_ok += 1
        else:
            self.total_failed += 1
        if not self.start <= done <= self.end:
            return
        if error is None:
            self.latencies_ns.append(int((done - started) * 1e9))
            return
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class Measurement:
    """What one load point measured (requests, not inferences: the caller knows the batch)."""

    load: Load
    window_s: float
    requests: int
    errors: int
    first_error: str
    missed: int
    latency_ms: dict[str, float]  # p50, p90, p95, p99, mean, max
    client_cpu_cores: float  # process CPU seconds / window seconds
    total_ok: int  # every successful request of the run, warm-up and tail included
    total_failed: int

    @property
    def request_rate(self) -> float:
        return self.requests / self.window_s if self.window_s > 0 else 0.0


def percentiles(latencies_ns: list[int]) -> dict[str, float]:
    """p50/p90/p95/p99/mean/max in milliseconds (zeros when nothing completed)."""
    if not latencies_ns:
        return {k: 0.0 for k in ("p50", "p90", "p95", "p99", "mean", "max")}
    a = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


async def _timed(send: Send, window: _Window) -> None:
    started = time.perf_counter()
    try:
        await send()
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is counted and the first one shown
        window.record(started, time.perf_counter(), err)
    else:
        window.record(started, time.perf_counter(), None)


async def _closed(send: Send, concurrency: int, window: _Window, stop_at: float) -> None:
    async def worker() -> None:
        while time.perf_counter() < stop_at:
            await _timed(send, window)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _open(send: Send, rate: float, window: _Window, stop_at: float) -> None:
    """Constant inter-arrival times, the schedule kept even when replies are slow."""
    interval = 1.0 / rate
    tasks: set[asyncio.Task[None]] = set()
    next_at = time.perf_counter()
    while next_at < stop_at:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(tasks) >= MAX_OUTSTANDING:
            if window.start <= time.perf_counter() <= window.end:
                window.missed += 1
        else:
            task = asyncio.create_task(_timed(send, window))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        next_at += interval
    if tasks:
        await asyncio.gather(*tasks)


async def measure(send: Send, load: Load, duration_s: float, warmup_s: float = 1.0) -> Measurement:
    """Drive ``send`` at ``load`` for ``warmup_s`` then ``duration_s``; only the window counts."""
    if duration_s <= 0:
        raise ValueError(f"duration: expected > 0 s, got {duration_s}")
    now = time.perf_counter()
    window = _Window(start=now + warmup_s, end=now + warmup_s + duration_s)
    cpu = _CpuClock(window)
    cpu_task = asyncio.create_task(cpu.run())
    try:
        if load.concurrency is not None:
            await _closed(send, load.concurrency, window, window.end)
        else:
            assert load.rate is not None
            await _open(send, load.rate, window, window.end)
    finally:
        cpu_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cpu_task
    return Measurement(
        load=load,
        window_s=duration_s,
        requests=len(window.latencies_ns),
        errors=window.errors,
        first_error=window.first_error,
        missed=window.missed,
        latency_ms=percentiles(window.latencies_ns),
        client_cpu_cores=cpu.cores(duration_s),
        total_ok=window.total_ok,
        total_failed=window.total_failed,
    )


class _CpuClock:
    """Process CPU time at the window's start and end (sampled on the loop, so it is cheap)."""

    def __init__(self, window: _Window) -> None:
        self._window = window
        self._start: float | None = None
        self._end: float | None = None

    async def run(self) -> None:
        await asyncio.sleep(max(0.0, self._window.start - time.perf_counter()))
        self._start = time.process_time()
        await asyncio.sleep(max(0.0, self._window.end - time.perf_counter()))
        self._end = time.process_time()

    def cores(self, duration_s: float) -> float:
        if self._start is None:
            return 0.0
        end = self._end if self._end is not None else time.process_time()
        return (end - self._start) / duration_s
