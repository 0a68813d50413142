"""Runs the HTTP and gRPC front ends and the serving core on one event loop.

The loop (uvloop) owns the server, its schedulers and both front ends, so a request crosses no
thread until a backend runs it. Video jobs and live streams run in their own threads and reach
the schedulers through the loop (``AttachedServer``). SIGTERM/SIGINT start a graceful drain:
readiness turns false (with ``--drain-delay S``, S seconds before anything else, while requests
are still served, so a load balancer stops sending first), new inference is refused with
503/UNAVAILABLE, live streams stop, running
jobs stop at their last checkpoint and stay queued for the next start, in-flight requests finish
(up to the exit timeout), then both listeners close and the process exits 0. With
``--api-key-file``, SIGHUP reads the key file again (a bad file keeps the keys in force).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import uvicorn
import uvloop

from frameserve.api.access import AccessPolicy
from frameserve.api.auth import AuthSettings, Keys
from frameserve.api.grpc.server import create_grpc_server
from frameserve.api.http.app import create_http_app
from frameserve.api.http.browser import BrowserGuard, BrowserPolicy
from frameserve.api.http.deadlines import protocol_class
from frameserve.api.http.metrics import create_metrics_app
from frameserve.api.http.video import UploadSettings, VideoRoutes
from frameserve.api.shm import SharedMemoryRegistry, ShmSettings
from frameserve.api.tls import ServerTls, TlsSettings, load_tls
from frameserve.scale.cluster import RaySettings
from frameserve.serving.local import AttachedServer
from frameserve.serving.server import InferenceServer, RequestLimits, ServerSettings
from frameserve.video.jobs import JobQueue, JobSettings
from frameserve.video.limits import VideoLimits
from frameserve.video.live import LiveSettings, LiveStreams
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.live.preview import PreviewSettings
from frameserve.video.metrics import VideoCollector
from frameserve.video.push.hub import PushHub, PushSettings
from frameserve.video.push.metrics import PushCollector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListenSettings:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int | None = None  # also serve /metrics here (None: on the HTTP port only)
    tls: TlsSettings | None = None  # on every listener when set
    browser: BrowserPolicy = BrowserPolicy()


@dataclass(frozen=True)
class FrontEndSettings:
    """What both front ends share: shared-memory limits and the access log."""

    shm: ShmSettings = ShmSettings()
    access_log: bool = False  # one log line per HTTP request and gRPC call


@dataclass(frozen=True)
class VideoServiceSettings:
    """Jobs and live streams: where they read and keep things, and how many at once."""

    media_root: Path = Path("media")
    state_dir: Path = Path("state")
    max_upload_bytes: int = 2 * 2**30
    max_running_jobs: int = 1
    max_queued_jobs: int = 32
    checkpoint_interval_s: float = 5.0
    max_job_retries: int = 2  # runs of a job whose decode worker died, after the first
    max_streams: int = 16
    source_policy: SourcePolicy = SourcePolicy()  # where network stream sources may connect
    limits: VideoLimits = field(default_factory=VideoLimits)
    preview: PreviewSettings = PreviewSettings()  # live previews (MJPEG, JPEG, HLS)
    ray: RaySettings | None = None  # serve --ray: jobs and live streams on a Ray cluster


class _Video:
    """The video services of one server process: the job queue, live streams, their routes."""

    def __init__(
        self,
        server: InferenceServer,
        settings: VideoServiceSettings,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        settings.media_root.mkdir(parents=True, exist_ok=True)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        # HLS folders of live previews live as long as their encoder: any here are a killed
        # server's
        shutil.rmtree(settings.state_dir / "preview", ignore_errors=True)
        handle = AttachedServer(server, loop)
        self.closing = False
        # webhook and MQTT outputs of jobs and streams, on this loop; same destination policy
        self.push = PushHub(loop, PushSettings(policy=settings.source_policy))
        self.jobs = JobQueue(
            handle,
            JobSettings(
                state_dir=settings.state_dir,
                media_root=settings.media_root,
                max_running=settings.max_running_jobs,
                max_queued=settings.max_queued_jobs,
                checkpoint_interval_s=settings.checkpoint_interval_s,
                max_retries=settings.max_job_retries,
                limits=settings.limits,
            ),
            self.push,
            runner_factory=_ray_jobs(settings.ray),
        )
        self.streams = LiveStreams(
            handle,
            LiveSettings(
                media_root=settings.media_root,
                max_streams=settings.max_streams,
                policy=settings.source_policy,
                max_subscribers=settings.limits.max_subscribers,
                max_frame_pixels=settings.limits.max_frame_pixels,
                preview=replace(settings.preview, folder=settings.state_dir / "preview"),
            ),
            self.push,
        )
        if settings.ray is not None:  # --ray: the streams are placed on the cluster's nodes
            self.streams = _ray_streams(
                server, loop, settings.ray, self.streams.settings, self.push
            )
        uploads = UploadSettings(
            settings.state_dir / "uploads",
            settings.max_upload_bytes,
            settings.limits.max_concurrent_uploads,
        )
        self.routes = VideoRoutes(
            self.jobs, self.streams, uploads, lambda: server.accepting and not self.closing
        )
        server.metrics.registry.register(VideoCollector(self.streams, self.jobs))
        server.metrics.registry.register(PushCollector(self.push))

    async def close(self, timeout_s: float) -> None:
        """Stop live streams and running jobs (which stay queued at their last checkpoint),
        before the server drains: their frames must not meet a draining scheduler."""
        self.closing = True
        await asyncio.to_thread(self.streams.close, timeout_s)
        await asyncio.to_thread(self.jobs.close, timeout_s)
        # after both: a stopped stream or job hands its last messages over first
        await self.push.close(min(timeout_s, self.push.settings.flush_s + 1.0))


def _ray_jobs(settings: RaySettings | None) -> Callable[..., Any] | None:
    """``--ray``: jobs run their chunks on the cluster (Ray imported only then)."""
    if settings is None:
        return None
    from frameserve.scale.jobs import ray_runner_factory

    return ray_runner_factory(settings)


def _ray_streams(
    server: InferenceServer, loop: asyncio.AbstractEventLoop, ray: RaySettings,
    live: LiveSettings, push: PushHub,
) -> LiveStreams:  # fmt: skip
    """``--ray``: streams placed on the cluster's nodes, behind the ``LiveStreams`` interface
    (``scale.live.ClusterStreams`` has its methods; the routes see no difference)."""
    from frameserve.scale.cluster import connect
    from frameserve.scale.live import ClusterStreams

    streams = ClusterStreams(
        connect(ray), loop, server.repository.root, live, server.settings.model_cache_dir, push
    )
    return cast(LiveStreams, streams)


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process-level drain owns the signals."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def _uvicorn_server(
    app: Any, host: str, port: int, tls: ServerTls | None, limits: RequestLimits | None = None
) -> _HttpServer:
    """uvicorn on ``host:port`` (TLS when ``tls``) with the connection limits: a header
    deadline, and at most ``max_connections`` connections and requests at once (503 above,
    uvicorn's own answer)."""
    limits = limits or RequestLimits()
    return _HttpServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_context_factory=None if tls is None else (lambda _config, _default: tls.context),
            http=protocol_class(limits.request_timeout_s),
            lifespan="off",
            access_log=False,
            log_config=None,
            backlog=2048,
            timeout_keep_alive=75,
            limit_concurrency=limits.max_connections,
        )
    )


class _Listeners:
    """The HTTP, optional metrics and gRPC listeners of one process, on its loop."""

    def __init__(
        self,
        server: InferenceServer,
        shm: SharedMemoryRegistry,
        video: _Video,
        listen: ListenSettings,
        auth: AuthSettings,
        keys: Keys | None,
        tls: ServerTls | None,
        access_log: bool = False,
    ) -> None:
        self.listen = listen
        self._tls_mode = "off" if tls is None else "mutual" if tls.mutual else "on"
        http_access = AccessPolicy.for_http(auth, keys)
        app = BrowserGuard(
            create_http_app(server, shm, video.routes, http_access, access_log), listen.browser
        )
        self.http = _uvicorn_server(app, listen.host, listen.http_port, tls, server.limits)
        self.metrics = None
        if listen.metrics_port is not None:
            metrics_app = BrowserGuard(
                create_metrics_app(server.metrics.registry, http_access), listen.browser
            )
            self.metrics = _uvicorn_server(
                metrics_app, listen.host, listen.metrics_port, tls, server.limits
            )
        # raises RuntimeError when the port cannot be bound
        credentials = None if tls is None else tls.grpc_credentials()
        self.grpc = create_grpc_server(
            server, shm, self.grpc_address, video.streams,
            AccessPolicy.for_grpc(auth, keys), credentials, access_log,
        )  # fmt: skip
        self.http_task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None

    @property
    def grpc_address(self) -> str:
        return f"{self.listen.host}:{self.listen.grpc_port}"

    async def start(self) -> asyncio.Task[None] | None:
        """Start listening; the HTTP server's task (it ends if uvicorn fails), or None (each
        failure logged, whatever started stopped again) when a listener cannot bind."""
        await self.grpc.start()
        self.http_task = await _start_http(self.http, "HTTP")
        if self.http_task is not None and self.metrics is not None:
            self._metrics_task = await _start_http(self.metrics, "metrics")
        if self.http_task is None or (self.metrics is not None and self._metrics_task is None):
            await self.grpc.stop(None)
            await _stop_http(self.http, self.http_task)
            return None
        where = {"http": f"{self.listen.host}:{self.listen.http_port}", "grpc": self.grpc_address}
        where["tls"] = self._tls_mode
        if self.metrics is not None:
            where["metrics"] = f"{self.listen.host}:{self.listen.metrics_port}"
        log.info("listening", extra=where)
        return self.http_task

    async def stop(self) -> None:
        """gRPC, then HTTP, then metrics last, so a scraper sees the drain to its end."""
        await self.grpc.stop(grace=1.0)
        await _stop_http(self.http, self.http_task)
        if self.metrics is not None:
            await _stop_http(self.metrics, self._metrics_task)


async def _start_http(http: _HttpServer, name: str) -> asyncio.Task[None] | None:
    """Start ``http`` on the running loop; None (the failure logged) when it cannot listen."""
    task = asyncio.get_running_loop().create_task(_serve_http(http), name=name)
    while not http.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        config = http.config
        log.error("%s listener on %s:%d failed to start", name, config.host, config.port)
        return None
    return task


async def _serve_http(http: _HttpServer) -> None:
    try:
        await http.serve()
    except SystemExit:  # uvicorn's answer to a port it cannot bind: logged; we stop cleanly
        log.debug("uvicorn exited while starting")


async def _stop_http(http: _HttpServer, task: asyncio.Task[None] | None) -> None:
    http.should_exit = True
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def serve(
    settings: ServerSettings,
    listen: ListenSettings,
    video_settings: VideoServiceSettings,
    auth: AuthSettings | None = None,
    front: FrontEndSettings | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit code (ConfigError for a bad key
    file or TLS file, naming it, before anything starts)."""
    auth = auth or AuthSettings()
    front = front or FrontEndSettings()
    keys = Keys(auth.api_key_file) if auth.api_key_file is not None else None
    tls = None if listen.tls is None else load_tls(listen.tls)
    server = InferenceServer(settings)
    shm = SharedMemoryRegistry(settings=front.shm)
    loop = asyncio.get_running_loop()
    video = _Video(server, video_settings, loop)
    try:
        listeners = _Listeners(server, shm, video, listen, auth, keys, tls, front.access_log)
    except RuntimeError as err:  # grpc raises RuntimeError when the port cannot be bound
        address = f"{listen.host}:{listen.grpc_port}"
        log.error("cannot listen for gRPC on %s: %s (is the port in use?)", address, err)
        return 1
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if keys is not None:
        log.info("API keys in force: %d from %s (SIGHUP reloads)", len(keys.ring.keys), keys.path)
        loop.add_signal_handler(signal.SIGHUP, keys.reload)
    http_task = await listeners.start()
    if http_task is None:
        return 1
    await server.start()
    await asyncio.to_thread(video.jobs.start)  # resumes the jobs a previous process left
    stop_task = loop.create_task(stop.wait())
    await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    if stop_task.done() and settings.drain_delay_s > 0:
        await _leave(server, stop, settings.drain_delay_s)
    log.info("shutting down")
    await video.close(settings.exit_timeout_s)
    await server.drain()
    await listeners.stop()
    stop_task.cancel()
    shm.close()
    log.info("stopped")
    return 0


async def _leave(server: InferenceServer, stop: asyncio.Event, delay_s: float) -> None:
    """Readiness false for ``delay_s`` while everything is still served; a second signal ends
    the wait early."""
    server.leave()
    log.info("draining in %.1f s (--drain-delay); a second signal drains now", delay_s)
    stop.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


def run(
    settings: ServerSettings,
    listen: ListenSettings,
    video: VideoServiceSettings | None = None,
    auth: AuthSettings | None = None,
    front: FrontEndSettings | None = None,
) -> int:
    """Blocking entry point: run ``serve`` on a fresh uvloop event loop."""
    coroutine = serve(settings, listen, video or VideoServiceSettings(), auth, front)
    result: Any = uvloop.run(coroutine)
    return int(result)
