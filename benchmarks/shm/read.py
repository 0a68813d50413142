"""Reading a 4.9 MB shared-memory input three ways (one process, no server).

- a live mapping view: what the registry did before; free, but a client that truncates its
  object after registering it turns the next access into SIGBUS, which kills the server;
- fstat, then a copy out of the mapping: cheaper than a read, but a truncation between the
  check and the copy still faults;
- ``SharedMemoryRegistry.read``: fstat, then ``os.preadv`` into a fresh buffer (what it does now):
  a truncation can only make the read short, which is answered 400.

Run: ``python benchmarks/shm/read.py`` (medians of 5 runs of 300 reads each, in microseconds).
"""

from __future__ import annotations

import mmap
import os
import statistics
import time
import uuid
from collections.abc import Callable

import numpy as np

from frameserve.api.shm import SharedMemoryRegistry

SIZE = 1 * 3 * 640 * 640 * 4  # a 1x3x640x640 FP32 input: 4,915,200 bytes
RUNS, READS = 5, 300


def per_read_us(fn: Callable[[], object]) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(READS):
        fn()
    return (time.perf_counter() - start) / READS * 1e6


def main() -> None:
    key = f"frameserve_bench_{uuid.uuid4().hex[:8]}"
    path = f"/dev/shm/{key}"
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
    registry = SharedMemoryRegistry()
    registry.register("r", "/" + key, 0, SIZE)
    fd = os.open(path, os.O_RDWR)
    mapping = mmap.mmap(fd, SIZE)
    ways: dict[str, Callable[[], object]] = {
        "live mapping view (before; SIGBUS on truncation)": lambda: memoryview(mapping)[:SIZE],
        "fstat + copy out of the mapping (still races)": lambda: (
            os.fstat(fd).st_size,
            np.frombuffer(mapping, np.uint8, SIZE).copy(),
        ),
        "fstat + os.preadv into a fresh buffer (now)": lambda: registry.read("r", 0, SIZE),
    }
    try:
        results = {name: [per_read_us(fn) for _ in range(RUNS)] for name, fn in ways.items()}
    finally:
        registry.close()
        mapping.close()
        os.close(fd)
        os.unlink(path)
    for name, runs in results.items():
        print(f"{name}: median {statistics.median(runs):.1f} us per read of {SIZE} bytes")  # noqa: T201


if __name__ == "__main__":
    main()
