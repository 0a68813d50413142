"""``frameserve bench``: latency and throughput of one model, in-process or over the wire.

A sweep is every batch size crossed with every load (closed-loop concurrencies, then open-loop
request rates). Each point reports throughput in inferences/s (requests x batch size),
p50/p90/p95/p99, the server's own queue/compute split and batch sizes for the same interval
(from Triton's statistics extension), whether the server's counts agree with the client's, and
the client's CPU use, so a saturated load generator shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frameserve.cpu import CpuBudget
from frameserve.errors import InvalidInput, NotFound
from frameserve.serving.local import LocalServer
from frameserve.serving.repository import ModelRepository
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.tools.loadgen import Load, Measurement, measure
from frameserve.tools.targets import (
    LocalTarget,
    ModelInfo,
    StatsSnapshot,
    Target,
    make_inputs,
    remote_target,
)

# The frame size used to give open dims a realistic size when the model declares its
# pre-processing (a text detector's input follows the frame's aspect ratio).
REFERENCE_FRAME = (720, 1280)


@dataclass(frozen=True)
class BenchSettings:
    concurrency: tuple[int, ...] = ()
    request_rate: tuple[float, ...] = ()
    batch_size: tuple[int, ...] = (1,)
    duration_s: float = 5.0
    warmup_s: float = 1.0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def loads(self) -> list[Load]:
        loads = [Load(concurrency=c) for c in self.concurrency]
        loads += [Load(rate=r) for r in self.request_rate]
        return loads or [Load(concurrency=1)]


@dataclass(frozen=True)
class BenchPoint:
    """One measured point: its parameters, the client's view and the server's."""

    model: str
    version: str
    batch_size: int
    concurrency: int | None
    request_rate: float | None
    throughput: float  # inferences/s
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    first_error: str
    client_cpu_cores: float
    server_queue_ms: float  # per request, averaged over the point
    server_compute_ms: float
    server_mean_batch: float
    counts_agree: bool  # the server counted exactly the requests/inferences the client made
    client_requests: int
    server_requests: int
    server_inferences: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _point(info: ModelInfo, batch: int, m: Measurement, delta: StatsSnapshot) -> BenchPoint:
    n = max(1, delta.success)
    lat = m.latency_ms
    compute = delta.compute_input_ns + delta.compute_infer_ns + delta.compute_output_ns
    ok = m.total_ok
    return BenchPoint(
        model=info.name,
        version=info.version,
        batch_size=batch,
        concurrency=m.load.concurrency,
        request_rate=m.load.rate,
        throughput=m.request_rate * batch,
        requests_per_s=m.request_rate,
        p50_ms=lat["p50"],
        p90_ms=lat["p90"],
        p95_ms=lat["p95"],
        p99_ms=lat["p99"],
        mean_ms=lat["mean"],
        errors=m.errors,
        first_error=m.first_error,
        client_cpu_cores=m.client_cpu_cores,
        server_queue_ms=delta.queue_ns / n / 1e6,
        server_compute_ms=compute / n / 1e6,
        server_mean_batch=delta.inferences / max(1, delta.executions),
        counts_agree=delta.success == ok and delta.inferences == ok * batch,
        client_requests=ok,
        server_requests=delta.success,
        server_inferences=delta.inferences,
    )


async def sweep(
    target: Target,
    settings: BenchSettings,
    fill_shapes: Callable[[ModelInfo], dict[str, tuple[int, ...]]] | None = None,
    on_point: Callable[[BenchPoint], None] | None = None,
) -> list[BenchPoint]:
    """Every batch size x load against an opened target, on the caller's loop."""
    info = await target.open()
    try:
        shapes = dict(fill_shapes(info)) if fill_shapes else {}
        shapes.update(settings.shapes)
        unknown = set(settings.shapes) - {t.name for t in info.inputs}
        if unknown:
            raise InvalidInput(
                f"--shape: model {info.name!r} has inputs {[t.name for t in info.inputs]}, "
                f"got {sorted(unknown)}"
            )
        points = []
        for batch in settings.batch_size:
            prepared = target.prepare(make_inputs(info, batch, shapes))

            async def send(p: Any = prepared) -> None:
                await target.infer(p)

            for load in settings.loads():
                before = await target.stats()
                m = await measure(send, load, settings.duration_s, settings.warmup_s)
                after = await target.stats()
                point = _point(info, batch, m, after - before)
                points.append(point)
                if on_point is not None:
                    on_point(point)
        return points
    finally:
        await target.close()


def preprocess_shapes(
    server: InferenceServer, model: str, version: str = ""
) -> Callable[[ModelInfo], dict[str, tuple[int, ...]]]:
    """Open dims of a model with declared pre-processing: a 720p frame's tensor size."""

    def fill(info: ModelInfo) -> dict[str, tuple[int, ...]]:
        mv = server.model_version(model, version)
        open_inputs = [t for t in info.inputs if any(d < 0 for d in t.dims)]
        if mv.processing is None or len(open_inputs) != 1 or len(info.inputs) != 1:
            return {}
        frame = np.zeros((*REFERENCE_FRAME, 3), np.uint8)
        tensor, _ = mv.processing.preprocess([frame])
        return {open_inputs[0].name: tuple(tensor.shape[1:])}

    return fill


def bench_repository(
    repository: Path,
    model: str,
    settings: BenchSettings,
    version: str = "",
    on_point: Callable[[BenchPoint], None] | None = None,
    server_settings: ServerSettings | None = None,
) -> list[BenchPoint]:
    """Load ``model`` from a repository into an in-process server and sweep it."""
    check_repository_model(repository, model)
    ss = server_settings or ServerSettings(
        repository=repository, model_control_mode="explicit", load_models=(model,)
    )
    with LocalServer(ss) as local:
        server = local.server
        target = LocalTarget(server, model, version)
        fill = preprocess_shapes(server, model, version)
        return local.call(sweep(target, settings, fill, on_point))


def check_repository_model(repository: Path, model: str) -> None:
    """NotFound naming the repository's models when ``model`` has no folder there."""
    found = ModelRepository(repository, CpuBudget(1, "check"), None).model_folders()
    if model not in found:
        raise NotFound(f"--model: {repository} has no model {model!r}; it has {found}")


def bench_url(
    url: str,
    model: str,
    settings: BenchSettings,
    version: str = "",
    on_point: Callable[[BenchPoint], None] | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> list[BenchPoint]:
    """Sweep a model of a running server (``http://`` or ``grpc://``); ``headers`` go with
    every request (an API key: ``("Authorization", "Bearer SECRET")``)."""
    target = remote_target(url, model, version, headers)
    return asyncio.run(sweep(target, settings, None, on_point))


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME:D1,D2,...`` (perf_analyzer's ``--shape``) -> (name, dims)."""
    name, sep, dims = text.rpartition(":")
    try:
        values = tuple(int(d) for d in dims.split(","))
    except ValueError:
        values = ()
    if not sep or not name or not values or any(v < 1 for v in values):
        raise InvalidInput(f"--shape: expected NAME:D1,D2,... with dims >= 1, got {text!r}")
    return name, values
