"""An ``InferenceServer`` on its own event-loop thread, for in-process callers.

``frameserve video run`` (and the tools) use the server core without HTTP: the loop thread owns
the repository, the schedulers and the processing pool, exactly as in ``frameserve serve``;
callers in other threads hand it coroutines with ``submit`` (``run_coroutine_threadsafe``), so
frames from every input batch together in the same schedulers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from frameserve.errors import ModelLoadError
from frameserve.serving.server import InferenceServer, ServerSettings

T = TypeVar("T")


class ServerHandle(Protocol):
    """What threads that feed a server need: the server and a way onto its loop.

    ``LocalServer`` (its own loop thread) and ``AttachedServer`` (the loop of ``frameserve
    serve``) both provide it, so video runs, jobs and live streams work in either.
    """

    server: InferenceServer
    loop: asyncio.AbstractEventLoop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]: ...


class AttachedServer:
    """A server that already runs on ``loop``; other threads reach it through ``submit``."""

    def __init__(self, server: InferenceServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule a coroutine on the server's loop from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


class LocalServer:
    """Starts the server on a private loop thread; ``close`` drains it and ends the thread."""

    def __init__(self, settings: ServerSettings, start_timeout_s: float = 600.0) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="frameserve-loop", daemon=True
        )
        self._thread.start()
        self.server = InferenceServer(settings)
        starting = self.submit(self.server.start())
        try:
            starting.result(timeout=start_timeout_s)
            failures = self.server.repository.failures()
            if failures:
                raise ModelLoadError("; ".join(failures))
        except BaseException:  # Ctrl-C or a failure while loading: stop loading, then drain
            starting.cancel()
            self.close()
            raise

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule a coroutine on the server's loop from any other thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout=timeout)

    def close(self, timeout_s: float = 30.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.server.drain(), timeout=timeout_s)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)
            if not self._thread.is_alive():
                self.loop.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
