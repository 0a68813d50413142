"""A sized thread pool that runs blocking backend calls off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class BlockingRunner:
    """Runs at most ``workers`` blocking calls at once; owned by one backend.

    The runtimes release the GIL while they compute, so a thread per parallel execution is
    enough; the pool never grows beyond the backend's ``max_concurrency``.
    """

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
