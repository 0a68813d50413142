"""CpuBudget from cgroup trees written into tmp_path (the layout the kernel exposes).

The real ``/sys/fs/cgroup`` of this machine cannot be given a quota from a test, so the cgroup
files are fakes with the kernel's exact formats; ``detect_cpu_budget`` takes their paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frameserve.cpu import CpuBudget, cpu_seconds, decoder_cores, detect_cpu_budget


def _v2_tree(root: Path, leaf: str, quotas: dict[str, str]) -> Path:
    """A cgroup v2 tree: ``quotas`` maps a path below ``root`` to its ``cpu.max`` text.

    Returns the ``/proc/self/cgroup`` file, which names ``leaf`` as this process's cgroup.
    """
    cg = root / "sys" / "fs" / "cgroup"
    (cg / leaf.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for rel, text in quotas.items():
        folder = cg / rel.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(text + "\n")
    proc = root / "proc_self_cgroup"
    proc.write_text(f"0::{leaf}\n")
    return proc


def _budget(root: Path, proc: Path, affinity: int) -> CpuBudget:
    return detect_cpu_budget(root / "sys" / "fs" / "cgroup", proc, affinity=affinity)


def test_v2_quota_at_the_leaf(tmp_path: Path) -> None:
    proc = _v2_tree(tmp_path, "/kubepods/pod1/ctr", {"/kubepods/pod1/ctr": "200000 100000"})
    b = _budget(tmp_path, proc, affinity=16)
    assert b == CpuBudget(2, "cgroup v2 cpu.max", 2.0, 16)


def test_v2_quota_at_a_parent_is_honoured(tmp_path: Path) -> None:
    proc = _v2_tree(tmp_path, "/kubepods/pod1/ctr", {"/kubepods/pod1": "300000 100000"})
    b = _budget(tmp_path, proc, affinity=16)
    assert (b.cores, b.source, b.quota_cores) == (3, "cgroup v2 cpu.max", 3.0)


def test_v2_the_smaller_of_leaf_and_parent_wins(tmp_path: Path) -> None:
    # parent smaller than leaf
    proc = _v2_tree(
        tmp_path / "a",
        "/kubepods/pod1/ctr",
        {"/kubepods/pod1/ctr": "800000 100000", "/kubepods": "200000 100000"},
    )
    assert _budget(tmp_path / "a", proc, affinity=16).cores == 2
    # leaf smaller than parent
    proc = _v2_tree(
        tmp_path / "b",
        "/kubepods/pod1/ctr",
        {"/kubepods/pod1/ctr": "100000 100000", "/kubepods": "400000 100000"},
    )
    assert _budget(tmp_path / "b", proc, affinity=16).cores == 1


def test_v2_max_means_no_quota(tmp_path: Path) -> None:
    proc = _v2_tree(
        tmp_path, "/user.slice/session", {"/user.slice/session": "max 100000", "/": "max 100000"}
    )
    b = _budget(tmp_path, proc, affinity=6)
    assert b == CpuBudget(6, "affinity mask", None, 6)


def test_v2_root_cgroup_reads_the_root_file(tmp_path: Path) -> None:
    proc = _v2_tree(tmp_path, "/", {"/": "100000 100000"})
    assert _budget(tmp_path, proc, affinity=8).cores == 1


def _v1_tree(root: Path, quota_us: str, period_us: str, name: str = "cpu,cpuacct") -> Path:
    cg = root / "sys" / "fs" / "cgroup"
    (cg / name).mkdir(parents=True)
    (cg / name / "cpu.cfs_quota_us").write_text(quota_us + "\n")
    (cg / name / "cpu.cfs_period_us").write_text(period_us + "\n")
    proc = root / "proc_self_cgroup"
    # a cgroup v1 host: no "0::" line
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    return proc


def test_v1_quota(tmp_path: Path) -> None:
    proc = _v1_tree(tmp_path, "300000", "100000")
    b = _budget(tmp_path, proc, affinity=16)
    assert b == CpuBudget(3, "cgroup v1 cfs quota", 3.0, 16)


def test_v1_plain_cpu_controller_folder(tmp_path: Path) -> None:
    proc = _v1_tree(tmp_path, "200000", "100000", name="cpu")
    assert _budget(tmp_path, proc, affinity=16).cores == 2


def test_v1_minus_one_means_no_quota(tmp_path: Path) -> None:
    proc = _v1_tree(tmp_path, "-1", "100000")
    b = _budget(tmp_path, proc, affinity=4)
    assert (b.cores, b.source, b.quota_cores) == (4, "affinity mask", None)


def test_affinity_smaller_than_quota_wins(tmp_path: Path) -> None:
    proc = _v2_tree(tmp_path, "/ctr", {"/ctr": "800000 100000"})
    b = _budget(tmp_path, proc, affinity=2)
    assert b == CpuBudget(2, "affinity mask", 8.0, 2)
    assert "2 cores (from affinity mask)" in b.describe()
    assert "quota=8" in b.describe()


def test_fractional_quota_rounds_up(tmp_path: Path) -> None:
    proc = _v2_tree(tmp_path / "a", "/ctr", {"/ctr": "150000 100000"})
    b = _budget(tmp_path / "a", proc, affinity=8)
    assert (b.cores, b.quota_cores) == (2, 1.5)
    assert "quota=1.5" in b.describe()
    # below one core still leaves one core to run on
    proc = _v2_tree(tmp_path / "b", "/ctr", {"/ctr": "50000 100000"})
    assert _budget(tmp_path / "b", proc, affinity=8).cores == 1


def test_no_cgroup_files_at_all_uses_affinity(tmp_path: Path) -> None:
    b = detect_cpu_budget(tmp_path / "nothing", tmp_path / "no_proc_file", affinity=3)
    assert b == CpuBudget(3, "affinity mask", None, 3)


def test_this_machine_has_a_positive_budget() -> None:
    b = detect_cpu_budget()
    assert b.cores >= 1
    assert b.affinity_cores is not None and b.cores <= b.affinity_cores


def test_cpu_seconds_count_live_children() -> None:
    """``tune --pipeline`` trials count their decode workers' CPU (the search prefers the
    cheapest feasible point)."""
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    spin += "time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds([child.pid]) - time.process_time() < 0.35:
            assert time.monotonic() < deadline, "the child's CPU time never showed"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    here = time.process_time()
    assert cpu_seconds([child.pid]) - here < 0.05  # an ended worker counts nothing


def test_decoder_cores_are_the_last_of_the_mask_and_leave_one_to_the_rest() -> None:
    mask = [0, 1, 2, 3]
    assert decoder_cores(1, 1, 2, [0, 1]) == [(1,)]
    assert decoder_cores(1, 1, 4, mask) == [(3,)]
    assert decoder_cores(2, 1, 4, mask) == [(2,), (3,)]
    assert decoder_cores(1, 2, 4, mask) == [(2, 3)]
    assert decoder_cores(3, 1, 4, mask) == [(1,), (2,), (3,)]


@pytest.mark.parametrize(
    ("inputs", "threads", "budget", "mask"),
    [
        (2, 1, 2, [0, 1]),  # nothing left for inference
        (1, 1, 1, [0]),  # one core in all
        (1, 2, 2, [0, 1]),  # the decoder would take both
        (1, 1, 1, [0, 1, 2, 3]),  # a quota of one core on a bigger host
        (4, 1, 8, [0, 1, 2]),  # a mask narrower than the quota
        (0, 1, 4, [0, 1, 2, 3]),
    ],
)
def test_no_decoder_cores_where_they_would_leave_no_core_to_the_rest(
    inputs: int, threads: int, budget: int, mask: list[int]
) -> None:
    assert decoder_cores(inputs, threads, budget, mask) == []


def test_decoder_cores_from_this_process_mask() -> None:
    mask = sorted(os.sched_getaffinity(0))
    picked = decoder_cores(1, 1, len(mask))
    assert picked == ([(mask[-1],)] if len(mask) > 1 else [])


def test_a_budget_without_the_decoders_cores_binds_inference_to_the_rest() -> None:
    budget = CpuBudget(4, "affinity mask", None, 4)
    left = budget.without_cores([(2,), (3,)], "for the decode workers", [0, 1, 2, 3])
    assert left == CpuBudget(
        2, "affinity mask, less 2 for the decode workers", None, 4, cpus=(0, 1)
    )
    assert left.describe().endswith("inference on cpus 0,1")
    assert budget.without(2, "for the decode workers").cpus == ()  # a count binds nothing
