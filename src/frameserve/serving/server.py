"""The inference server core: repository, readiness, draining and the request entry point.

Knows nothing of HTTP or gRPC: the front ends call ``infer`` and the metadata methods. Owned by
one event loop (the one ``start`` runs on); every method is called on that loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from frameserve import __version__
from frameserve.cpu import CpuBudget, detect_cpu_budget
from frameserve.errors import (
    ConfigError,
    FrameserveError,
    InvalidInput,
    NotFound,
    NotSupported,
    Unavailable,
)
from frameserve.processing.results import Result
from frameserve.processing.tasks import DecodeOptions
from frameserve.processing.transform import opencv_on_caller_threads
from frameserve.serving.activity import ActivityRecorder
from frameserve.serving.config import ModelConfig, parse_model_config
from frameserve.serving.model import ModelVersion
from frameserve.serving.pipeline import PIPELINE_FILE, PipelineConfig, load_pipeline_config
from frameserve.serving.predict import Predictor, Timings
from frameserve.serving.repository import ModelRepository, check_model_name
from frameserve.serving.stats import Metrics, VersionStats
from frameserve.serving.tracing import RequestTrace, Tracing, TracingSettings
from frameserve.serving.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    RepositoryEntry,
    TensorMetadata,
)

log = logging.getLogger(__name__)

ModelControlMode = Literal["none", "poll", "explicit"]
EXTENSIONS = (
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
)


@dataclass(frozen=True)
class RequestLimits:
    """Upper bounds on what one request may carry."""

    max_body_bytes: int = 256 * 2**20
    # Elements of one tensor: a wire input, and the tensor declared pre-processing would make
    # from an image (checked from the planned shape before anything is allocated).
    max_elements: int = 64 * 2**20
    max_image_pixels: int = 50_000_000  # a decoded image larger than this is refused (413)
    max_images: int = 64  # encoded images in one request (a BYTES batch)
    max_json_bytes: int = 64 * 2**20  # a JSON document (body or binary-extension header)
    request_timeout_s: float | None = 60.0  # a request's headers and body must arrive by then
    model_timeout_s: float | None = None  # waiting callers get 504 after it (None: wait)
    max_connections: int | None = 1024  # HTTP connections + in-flight requests (uvicorn: 503)
    max_grpc_streams: int = 100  # concurrent calls on one HTTP/2 connection


@dataclass(frozen=True)
class ServerSettings:
    repository: Path = Path("models")
    model_control_mode: ModelControlMode = "none"
    poll_interval_s: float = 15.0
    load_models: tuple[str, ...] = ()  # explicit mode: what to load at start ("*" = all)
    strict_readiness: bool = False
    exit_timeout_s: float = 30.0
    # SIGTERM turns readiness false this long before the drain starts, while requests are still
    # served, so a load balancer's health check takes the replica out before it refuses any.
    drain_delay_s: float = 0.0
    limits: RequestLimits = field(default_factory=RequestLimits)
    budget: CpuBudget | None = None  # None: read from the container's limits
    model_cache_dir: Path | None = None  # compiled models, for configs without cache_dir
    tracing: TracingSettings | None = None  # None: no tracing (OpenTelemetry never imported)


class InferenceServer:
    """Serves the models of one repository."""

    name = "frameserve"
    version = __version__
    extensions = EXTENSIONS

    def __init__(self, settings: ServerSettings, tracing: Tracing | None = None) -> None:
        """``tracing``: a ready ``Tracing`` (tests: an in-memory exporter); otherwise one is
        made from ``settings.tracing`` when that is set."""
        self.settings = settings
        if tracing is None and settings.tracing is not None:
            tracing = Tracing.from_settings(settings.tracing)
        self.tracing = tracing
        self.limits = settings.limits
        self.budget = settings.budget or detect_cpu_budget()
        opencv_on_caller_threads()  # the budget's threads are ours: no pool on top of them
        self.metrics = Metrics()
        self.repository = ModelRepository(
            settings.repository,
            self.budget,
            self.metrics,
            settings.model_cache_dir,
            model_timeout_s=self.limits.model_timeout_s,
        )
        self.predictor = Predictor(
            self.repository.get,
            self.budget.cores,
            max_elements=self.limits.max_elements,
            max_images=self.limits.max_images,
        )
        self.pipelines: dict[str, PipelineConfig] = {}
        self._pipeline_failures: dict[str, str] = {}
        self._started = False
        self._draining = False
        self._leaving = False
        self._poller: asyncio.Task[None] | None = None
        # recent throughput and times per version (GET /v1/models/activity), sampled on the loop
        self.activity = ActivityRecorder(self.model_statistics)

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the models the control mode asks for; the server is ready afterwards."""
        log.info("core budget: %s", self.budget.describe())
        mode = self.settings.model_control_mode
        if mode == "explicit":
            wanted = list(self.settings.load_models)
            if "*" in wanted:
                wanted = self.repository.model_folders()
        else:
            wanted = self.repository.model_folders()
        for name in wanted:
            try:
                await self.repository.load(name)
            except FrameserveError as err:
                log.error("model %s not loaded: %s", name, err.message)
        self.load_pipelines()
        if mode == "poll":
            self._poller = asyncio.get_running_loop().create_task(
                self._poll_forever(), name="poller"
            )
        self._started = True
        self.activity.start()
        log.info("ready: %d model version(s) loaded", len(self.repository.loaded()))

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.repository.poll()
                self.load_pipelines()
            except Exception:  # noqa: BLE001 - polling must survive a bad folder
                log.exception("repository poll failed")

    def leave(self) -> None:
        """Readiness turns false; requests are still served until ``drain``."""
        if not self._leaving:
            self._leaving = True
            log.info("leaving: readiness is false, requests are still served")

    async def drain(self) -> None:
        """Stop taking new requests, finish in-flight ones (up to ``exit_timeout_s``), unload."""
        if self._draining:
            return
        self._draining = True
        inflight = sum(mv.stats.inflight for mv in self.repository.loaded())
        log.info("draining: %d request(s) in flight", inflight)
        if self._poller is not None:
            self._poller.cancel()
        await self.activity.stop()
        # Each version closes once its queued and running requests are done; whatever is still
        # waiting at the exit timeout is answered with 503 by its scheduler.
        await self.repository.close(timeout=self.settings.exit_timeout_s)
        self.predictor.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the last spans

    def load_pipelines(self) -> None:
        """(Re)read every ``pipeline.yaml``; a bad one is reported and the rest still load."""
        found: dict[str, PipelineConfig] = {}
        failures: dict[str, str] = {}
        for name in self.repository.pipeline_folders():
            try:
                found[name] = load_pipeline_config(self.repository.root / name / PIPELINE_FILE)
            except ConfigError as err:
                failures[name] = err.message
                if self._pipeline_failures.get(name) != err.message:
                    log.error("pipeline %s not loaded: %s", name, err.message)
        for name in found.keys() - self.pipelines.keys():
            log.info("pipeline %s: %s", name, " -> ".join(found[name].models))
        self.pipelines, self._pipeline_failures = found, failures

    @property
    def live(self) -> bool:
        return True

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def accepting(self) -> bool:
        """Whether new work (requests, jobs, streams) is taken: started and not draining, and
        with ``strict_readiness`` no model failed; still true while leaving."""
        if not self._started or self._draining:
            return False
        return not (self.settings.strict_readiness and self.repository.failures())

    @property
    def ready(self) -> bool:
        """What readiness probes see: accepting, and not leaving."""
        return self.accepting and not self._leaving

    # -- inference ----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        if self._draining:
            raise Unavailable("server is shutting down; not accepting new requests")
        limit = self.limits.max_image_pixels
        pipeline = self.pipelines.get(request.model_name)
        if pipeline is not None:
            return await self.predictor.infer_pipeline(request.model_name, pipeline, request, limit)
        mv = self.repository.get(request.model_name, request.model_version)
        if mv.processing is not None and any(t.datatype == "BYTES" for t in request.inputs):
            request = await self.predictor.expand_images(mv, request, limit)
        return await mv.infer(request)

    async def predict(
        self,
        name: str,
        data: bytes,
        content_type: str | None,
        options: DecodeOptions,
        trace: RequestTrace | None = None,
    ) -> tuple[Result, Timings]:
        """An image request: encoded image -> task result in source pixels, with step times
        (and spans under ``trace``)."""
        if self._draining:
            raise Unavailable("server is shutting down; not accepting new requests")
        timings = Timings(trace=trace)
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            self.predictor.processing_version(name)  # 404/400 before decoding anything
        image = await self.predictor.decode(
            data, self.limits.max_image_pixels, content_type, "body", timings
        )
        if pipeline is not None:
            result = await self.predictor.run_pipeline(name, pipeline, image, options, timings)
        else:
            result = await self.predictor.predict(name, image, options, timings)
        return result, timings

    # -- metadata -------------------------------------------------------------------------
    def model_version(self, name: str, version: str = "") -> ModelVersion:
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        if name in self.pipelines and version in ("", "1"):
            return ModelMetadata(
                name=name,
                versions=("1",),
                platform="pipeline",
                inputs=(TensorMetadata("image", "BYTES", (-1,)),),
                outputs=(TensorMetadata("result", "BYTES", (-1,)),),
            )
        mv = self.repository.get(name, version)
        return ModelMetadata(
            name=mv.name,
            versions=tuple(str(v) for v in self.repository.versions_of(name)),
            platform=mv.platform,
            inputs=mv.metadata_tensors(mv.inputs),
            outputs=mv.metadata_tensors(mv.outputs),
        )

    def has_model(self, name: str) -> bool:
        """A model pipeline, or a model this repository knows (ready or not)."""
        return name in self.pipelines or self.repository.known(name)

    def model_ready(self, name: str, version: str = "") -> bool:
        if name in self.pipelines and version in ("", "1"):
            return all(self.model_ready(m) for m in self.pipelines[name].models)
        try:
            self.repository.get(name, version)
        except FrameserveError:
            return False
        return not self._draining

    def model_statistics(self, name: str = "", version: str = "") -> list[VersionStats]:
        if not name:
            return [mv.stats for mv in self.repository.loaded()]
        if version:
            return [self.repository.get(name, version).stats]
        versions = [mv for mv in self.repository.loaded() if mv.name == name]
        if not versions:
            raise NotFound(f"model {name!r} is not loaded")
        return [mv.stats for mv in versions]

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        entries = self.repository.index(ready_only)
        for name, pipeline in self.pipelines.items():
            ready = self.model_ready(name)
            if ready or not ready_only:
                missing = [m for m in pipeline.models if not self.model_ready(m)]
                reason = f"models not ready: {missing}" if missing else ""
                entries.append(
                    RepositoryEntry(name, "1", "READY" if ready else "UNAVAILABLE", reason)
                )
        if not ready_only:
            entries += [
                RepositoryEntry(n, "", "UNAVAILABLE", r) for n, r in self._pipeline_failures.items()
            ]
        return sorted(entries, key=lambda e: (e.name, e.version))

    # -- repository control -------------------------------------------------------------------
    def _require_explicit(self, action: str) -> None:
        if self.settings.model_control_mode != "explicit":
            raise NotSupported(
                f"{action}: model control mode is {self.settings.model_control_mode!r}; "
                "start the server with --model-control-mode explicit to load and unload models"
            )

    async def load_model(self, name: str, config_json: str | None = None) -> None:
        """Load or reload ``name``, optionally with a JSON config that replaces model.yaml
        (ours, or Triton's JSON model configuration)."""
        self._require_explicit("load")
        check_model_name(name)
        override = None
        if config_json is not None:
            try:
                data = json.loads(config_json)
            except json.JSONDecodeError as err:
                raise InvalidInput(
                    f"parameters.config: expected a JSON object, got invalid JSON ({err})"
                ) from None
            override = _override_config(data)
        if name not in self.repository.model_folders():
            raise NotFound(f"model {name!r}: no such folder in the model repository")
        try:
            await self.repository.load(name, override)
        except ConfigError as err:
            raise ConfigError(f"failed to load {name!r}: {err.message}") from None

    async def unload_model(self, name: str) -> None:
        self._require_explicit("unload")
        await self.repository.unload(name)


def _override_config(data: object) -> ModelConfig:
    """``parameters.config`` of a load request: our schema first (``frameserve tune`` sends
    it), then Triton's JSON ModelConfig (what ``GET .../config`` returns); both reasons when
    neither fits."""
    source = "parameters.config"
    try:
        return parse_model_config(data, source)
    except ConfigError as ours:
        from frameserve.serving.triton_config import parse_triton_json  # protobuf: only here

        try:
            return parse_triton_json(data, source)
        except ConfigError as triton:
            raise ConfigError(
                f"{source}: neither a frameserve model config ({ours.message}) nor Triton's "
                f"JSON model configuration ({triton.message})"
            ) from None
