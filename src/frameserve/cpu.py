"""One core budget for the whole process, read from the container's CPU limits.

``os.cpu_count()`` reports the host's cores, not what a container may use. The budget is the
smallest of: the affinity mask, the cgroup v2 ``cpu.max`` quota (walking up the hierarchy), and
the cgroup v1 CFS quota. Every thread pool and runtime thread count is derived from it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class CpuBudget:
    """How many cores this process may keep busy, and which limit set that number."""

    cores: int
    source: str
    quota_cores: float | None = None
    affinity_cores: int | None = None
    # The cores the models' inference threads are bound to; () where the OS places them.
    cpus: tuple[int, ...] = ()

    def without(self, cores: int, why: str) -> CpuBudget:
        """What is left after ``cores`` are set aside (at least one core)."""
        if cores <= 0:
            return self
        left = max(1, self.cores - cores)
        return CpuBudget(left, f"{self.source}, less {cores} {why}", self.quota_cores,
                         self.affinity_cores)  # fmt: skip

    def without_cores(
        self, taken: list[tuple[int, ...]], why: str, mask: list[int] | None = None
    ) -> CpuBudget:
        """What is left after the cores ``taken`` (``decoder_cores``) are set aside, with the
        inference threads bound to the rest of the affinity mask (this process's, as
        ``decoder_cores`` reads it; ``mask`` for tests): each keeps its core's caches, and
        none is preempted by the decoders. The process's other threads (light: the event loop,
        sinks) stay free to use every core."""
        busy = {c for cores in taken for c in cores}
        left = self.without(len(busy), why)
        if mask is None:
            try:
                mask = sorted(os.sched_getaffinity(0))
            except (AttributeError, OSError):
                return left
        rest = tuple(c for c in mask if c not in busy)
        return replace(left, cpus=rest) if rest else left

    def describe(self) -> str:
        parts = [f"{self.cores} cores (from {self.source})"]
        if self.affinity_cores is not None:
            parts.append(f"affinity={self.affinity_cores}")
        if self.quota_cores is not None:
            parts.append(f"quota={self.quota_cores:g}")
        if self.cpus:
            parts.append(f"inference on cpus {','.join(map(str, self.cpus))}")
        return ", ".join(parts)


def _affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_v2_quota(cgroup_root: Path, proc_cgroup: Path) -> float | None:
    """Smallest ``cpu.max`` quota on the path from this process's cgroup up to the root."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rel = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), None)
    if rel is None:
        return None
    best: float | None = None
    node = cgroup_root / rel.lstrip("/")
    while True:
        quota = _read_cpu_max(node / "cpu.max")
        if quota is not None:
            best = quota if best is None else min(best, quota)
        if node == cgroup_root or cgroup_root not in node.parents:
            break
        node = node.parent
    return best


def _read_cpu_max(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) != 2 or fields[0] == "max":
        return None
    quota, period = int(fields[0]), int(fields[1])
    return quota / period if period > 0 and quota > 0 else None


def _cgroup_v1_quota(cgroup_root: Path) -> float | None:
    for name in ("cpu,cpuacct", "cpu"):
        base = cgroup_root / name
        try:
            quota = int((base / "cpu.cfs_quota_us").read_text())
            period = int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def detect_cpu_budget(
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    affinity: int | None = None,
) -> CpuBudget:
    """Read the core budget from affinity and cgroup v2/v1 quotas (the paths are for tests)."""
    aff = affinity if affinity is not None else _affinity_cores()
    quota = _cgroup_v2_quota(cgroup_root, proc_cgroup)
    source = "cgroup v2 cpu.max"
    if quota is None:
        quota = _cgroup_v1_quota(cgroup_root)
        source = "cgroup v1 cfs quota"
    if quota is not None and math.ceil(quota) < aff:
        return CpuBudget(max(1, math.ceil(quota)), source, quota, aff)
    return CpuBudget(max(1, aff), "affinity mask", quota, aff)


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of this process and of its live children ``pids`` (decode workers), from
    Linux's ``/proc/<pid>/stat``; a child that has ended counts nothing."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def decoder_cores(
    inputs: int, threads: int, budget: int, mask: list[int] | None = None
) -> list[tuple[int, ...]]:
    """Cores of its own for each of ``inputs`` decode workers of ``threads`` FFmpeg threads:
    the last cores of the affinity mask (``mask``, for tests), ``threads`` each, or none when
    that would leave less than one core of the ``budget`` to everything else.

    A decoder on a core of its own keeps that core's caches and is not preempted by inference
    threads, which are then sized for the cores left (``CpuBudget.without``); the rest of the
    process stays free to use every core, the decoder's too while it waits.
    """
    if mask is None:
        try:
            mask = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return []
    need = inputs * threads
    if inputs < 1 or threads < 1 or need >= min(budget, len(mask)):
        return []
    picked = mask[-need:]
    return [tuple(picked[i * threads : (i + 1) * threads]) for i in range(inputs)]
