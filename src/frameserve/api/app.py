"""Runs the HTTP and gRPC front ends and the serving core on one event loop.

The loop (uvloop) owns the server, its schedulers and both front ends, so a request crosses no
thread until a backend runs it. SIGTERM/SIGINT start a graceful drain: readiness turns false,
new inference is refused with 503/UNAVAILABLE, in-flight requests finish (up to the exit
timeout), then both listeners close and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvloop

from frameserve.api.grpc.server import create_grpc_server
from frameserve.api.http.app import create_http_app
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.serving.server import InferenceServer, ServerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process-level drain owns the signals."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


async def serve(settings: ServerSettings, listen: ListenSettings) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    server = InferenceServer(settings)
    shm = SharedMemoryRegistry()
    http = _HttpServer(
        uvicorn.Config(
            create_http_app(server, shm),
            host=listen.host,
            port=listen.http_port,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_config=None,
            backlog=2048,
            timeout_keep_alive=75,
        )
    )
    grpc_address = f"{listen.host}:{listen.grpc_port}"
    try:
        grpc_server = create_grpc_server(server, shm, grpc_address)
    except RuntimeError as err:  # grpc raises RuntimeError when the port cannot be bound
        log.error("cannot listen for gRPC on %s: %s (is the port in use?)", grpc_address, err)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await grpc_server.start()
    http_task = loop.create_task(http.serve(), name="http")
    while not http.started and not http_task.done():
        await asyncio.sleep(0.01)
    if http_task.done():
        await grpc_server.stop(None)
        log.error("HTTP listener on %s:%d failed to start", listen.host, listen.http_port)
        return 1
    http_addr = f"{listen.host}:{listen.http_port}"
    log.info("listening", extra={"http": http_addr, "grpc": f"{listen.host}:{listen.grpc_port}"})
    await server.start()
    stop_task = loop.create_task(stop.wait())
    await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await server.drain()
    await grpc_server.stop(grace=1.0)
    http.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await http_task
    stop_task.cancel()
    shm.close()
    log.info("stopped")
    return 0


def run(settings: ServerSettings, listen: ListenSettings) -> int:
    """Blocking entry point: run ``serve`` on a fresh uvloop event loop."""
    result: Any = uvloop.run(serve(settings, listen))
    return int(result)
