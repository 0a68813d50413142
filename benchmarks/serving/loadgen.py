"""One load point: perf_analyzer against a server at a fixed concurrency, plus what it cost.

perf_analyzer runs in time windows. Its stability search is switched off in effect: it accepts
the last three windows when max/min of their throughput and of their latency is at most
``1 + s/100``, so a huge ``-s`` stops it after warm-up plus exactly three windows, which it
merges. With its default (10 %) the run fails at concurrency 1 on a shared 2-core machine,
where one scheduling hiccup moves a window's p99 several-fold; the benchmark's repeats and
medians carry the statistics instead. Alongside each point we record:

- the load generator's CPU time (``RUSAGE_CHILDREN`` delta: perf_analyzer is the only child
  reaped in that span), so a reader sees whether the client could have been the bottleneck;
- the server tree's CPU time and peak resident memory (sampled every 0.25 s);
- CPU used by every other process on the machine in the same span (the noise).
"""

from __future__ import annotations

import csv
import re
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from servers import ServerProcess

PROTOCOLS = ("grpc", "http", "grpc-shm")  # grpc-shm: gRPC, tensors in system shared memory

CSV_TIMES = {  # perf_analyzer --verbose-csv column -> our name (microseconds)
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_input_us",
    "Server Compute Infer": "server_infer_us",
    "Server Compute Output": "server_output_us",
    "Client Recv": "client_recv_us",
}


@dataclass(frozen=True)
class LoadSettings:
    """How long and how each point is measured (the same for every server)."""

    window_ms: int = 2000
    max_windows: int = 3
    stability_pct: int = 100_000  # accept any 3 windows: repeats + medians do the statistics
    warmup_per_concurrency: int = 8

    def timeout_s(self) -> float:
        return self.max_windows * self.window_ms / 1000 * 2 + 60


@dataclass
class LoadPoint:
    """What one perf_analyzer run measured; latencies in milliseconds."""

    protocol: str
    concurrency: int
    ok: bool
    error: str | None = None
    throughput: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    avg_batch: float | None = None
    wall_s: float | None = None
    client_cpu_s: float | None = None
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None
    server_rss_peak: int | None = None
    breakdown_us: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def perf_analyzer_command(
    binary: Path,
    model: str,
    url: str,
    protocol: str,
    concurrency: int,
    s: LoadSettings,
    csv: Path,
    extra: Sequence[str] = (),
) -> list[str]:
    """Synchronous requests: perf_analyzer runs one client thread per in-flight request.

    ``grpc-shm`` is gRPC with every input and output in system shared memory: perf_analyzer
    registers its regions once and requests carry only their names and offsets. ``extra``
    (TLS files, headers) is appended as given.
    """
    wire = ["-i", protocol]
    if protocol == "grpc-shm":
        wire = ["-i", "grpc", "--shared-memory", "system"]
    return [
        str(binary), "-m", model, "-u", url, *wire,
        "--concurrency-range", f"{concurrency}:{concurrency}",
        "--sync",
        "--measurement-mode", "time_windows", "-p", str(s.window_ms),
        "-s", str(s.stability_pct), "-r", str(s.max_windows),
        "--warmup-request-count", str(s.warmup_per_concurrency * concurrency),
        "--percentile=99", "-f", str(csv), "--verbose-csv", *extra,
    ]  # fmt: skip


class _RssSampler(threading.Thread):
    """Samples the server tree's RSS until stopped; keeps the peak."""

    def __init__(self, server: ServerProcess, period_s: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self._server, self._period = server, period_s
        self._stop_event = threading.Event()
        self.peak = 0

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, self._server.rss_bytes())
            self._stop_event.wait(self._period)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def _busy_cpu_seconds() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_point(
    binary: Path,
    server: ServerProcess,
    protocol: str,
    concurrency: int,
    settings: LoadSettings,
    workdir: Path,
    extra: Sequence[str] = (),
) -> LoadPoint:
    """Run perf_analyzer once against ``server`` and account for every CPU second it took;
    ``extra`` goes to perf_analyzer as given (an HTTPS server gets an ``https://`` URL)."""
    csv_path = workdir / f"{server.name}-{server.model}-{protocol}-c{concurrency}.csv"
    csv_path.unlink(missing_ok=True)
    url = server.ports.url(protocol)
    if protocol == "http" and server.tls_context is not None:
        url = f"https://{url}"
    cmd = perf_analyzer_command(
        binary, server.model, url, protocol, concurrency, settings, csv_path, extra
    )
    sampler = _RssSampler(server)
    before = (_children_cpu(), server.cpu_seconds(), _busy_cpu_seconds(), _self_cpu())
    sampler.start()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=settings.timeout_s())
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:  # run() killed perf_analyzer (by PID) already
        output, rc = f"timed out after {err.timeout:.0f} s", None
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    after = (_children_cpu(), server.cpu_seconds(), _busy_cpu_seconds(), _self_cpu())
    client, srv, busy, own = (a - b for a, b in zip(after, before, strict=True))
    (workdir / csv_path.with_suffix(".log").name).write_text(" ".join(cmd) + "\n\n" + output)
    point = LoadPoint(protocol, concurrency, ok=False, wall_s=wall, server_rss_peak=peak)
    point.client_cpu_s, point.server_cpu_s = client, srv
    point.other_cpu_s = max(0.0, busy - client - srv - own)
    if rc != 0 or not csv_path.is_file():
        point.error = _last_line(output) if rc is not None else output
        return point
    _fill_from_csv(point, csv_path)
    point.avg_batch = _average_batch(output)
    return point


def _fill_from_csv(point: LoadPoint, csv_path: Path) -> None:
    with csv_path.open(newline="") as f:
        row = next(csv.DictReader(f))
    point.ok = True
    point.throughput = float(row["Inferences/Second"])
    point.p50_ms = float(row["p50 latency"]) / 1000
    point.p90_ms = float(row["p90 latency"]) / 1000
    point.p99_ms = float(row["p99 latency"]) / 1000
    point.breakdown_us = {ours: float(row[col]) for col, ours in CSV_TIMES.items() if col in row}


def _average_batch(output: str) -> float | None:
    """Server-side inferences per model execution, from perf_analyzer's server statistics."""
    inferences = re.findall(r"Inference count: (\d+)", output)
    executions = re.findall(r"Execution count: (\d+)", output)
    if not inferences or not executions or int(executions[-1]) == 0:
        return None
    return int(inferences[-1]) / int(executions[-1])


def _last_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def wait_for_quiet(
    max_wait_s: float, server: ServerProcess | None, threshold_cores: float = 0.25
) -> float:
    """Wait (at most ``max_wait_s``) until other processes use < ``threshold_cores``.

    Returns the cores they used in the last one-second sample. The idle server under test and
    this process do not count; a machine shared with test runs is the usual reason to wait.
    """
    deadline = time.monotonic() + max_wait_s
    while True:
        before = (_busy_cpu_seconds(), server.cpu_seconds() if server else 0.0, _self_cpu())
        time.sleep(1.0)
        after = (_busy_cpu_seconds(), server.cpu_seconds() if server else 0.0, _self_cpu())
        busy, srv, own = (a - b for a, b in zip(after, before, strict=True))
        other = max(0.0, busy - srv - own)
        if other < threshold_cores or time.monotonic() >= deadline:
            return other


def measure_side_by_side(
    variants: Sequence[str],
    start: Callable[[str], ServerProcess],
    perf_args: Callable[[str, str], list[str] | None],
    protocols: Sequence[str],
    settings: SideBySide,
) -> list[dict]:
    """Every variant's server, fresh per repeat and in alternating order, loaded by
    perf_analyzer over each protocol: one record per point (``repeat``, ``variant``,
    ``other_cores`` and the point's fields). ``perf_args(variant, protocol)`` gives the extra
    perf_analyzer flags, or None to leave that protocol out for the variant."""
    records: list[dict] = []
    load = LoadSettings()
    deadline = time.monotonic() + settings.max_minutes * 60
    for repeat in range(settings.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            if time.monotonic() > deadline:
                print(f"time is up: skipping repeat {repeat} {variant}")  # noqa: T201
                continue
            server = start(variant)
            server.start()
            try:
                other = wait_for_quiet(10.0, server)
                for protocol in protocols:
                    extra = perf_args(variant, protocol)
                    if extra is None:
                        continue
                    point = run_point(
                        settings.perf_analyzer, server, protocol, settings.concurrency, load,
                        settings.logs, extra,
                    )  # fmt: skip
                    rec = {"repeat": repeat, "variant": variant, "other_cores": other}
                    records.append({**rec, **point.to_dict()})
                    print(  # noqa: T201
                        f"repeat {repeat} {variant:6} {protocol:4}: "
                        f"{point.throughput or 0:8.1f} infer/s  p99 {point.p99_ms or 0:6.2f} ms"
                        + ("" if point.ok else f"  FAILED {point.error}")
                    )
            finally:
                server.stop()
    return records


@dataclass(frozen=True)
class SideBySide:
    """How ``measure_side_by_side`` runs: repeats, a time budget, the load and where logs go."""

    perf_analyzer: Path
    logs: Path
    repeats: int = 3
    concurrency: int = 8
    max_minutes: float = 8.0


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are there (None when none is)."""
    found = [v for v in values if v is not None]
    return statistics.median(found) if found else None
