"""A sized thread pool that runs blocking backend calls off the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class BlockingRunner:
    """Runs at most ``workers`` blocking calls at once; owned by one backend.

    The runtimes release the GIL while they compute, so a thread per parallel execution is
    enough; the pool never grows beyond the backend's ``max_concurrency``. ``cpus``
    (``CpuBudget.cpus``): each thread binds itself to them as it starts. OpenVINO runs a
    one-thread stream's inference on the calling thread, so that binds the inference itself.
    """

    def __init__(self, workers: int, name: str, cpus: tuple[int, ...] = ()) -> None:
        self.workers = workers
        self.cpus = cpus
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=name, initializer=self._bind if cpus else None
        )

    def _bind(self) -> None:
        try:
            os.sched_setaffinity(0, self.cpus)
        except (AttributeError, OSError) as err:  # runs unbound, as fast as before
            log.warning("inference threads: not bound to cpus %s (%s)", list(self.cpus), err)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
