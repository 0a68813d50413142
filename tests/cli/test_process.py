"""What the CLI settles for its process before numpy loads (fresh interpreters)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os, sys
from frameserve.cli.main import main
try:
    main(['--version'])
except SystemExit:
    pass
import cv2, numpy, threadpoolctl
blas = [p for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']
print(os.environ['OPENBLAS_NUM_THREADS'], sorted({p['num_threads'] for p in blas}))
"""


def _run(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | extra
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60,
        check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_openblas_runs_one_thread_so_no_pool_spins_beside_the_work() -> None:
    # numpy's OpenBLAS (and OpenCV's copy) would start a thread per core that spins ~0.1 s
    assert _run({}) == "1 [1]"


def test_a_thread_count_the_user_set_is_kept() -> None:
    assert _run({"OPENBLAS_NUM_THREADS": "2"}) == "2 [2]"
