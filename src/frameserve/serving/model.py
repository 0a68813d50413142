"""One loaded model version: its resolved config, backend, scheduler and statistics.

Requests are validated here against the model (names, datatypes, shapes, batch size), turned
into a ``WorkItem`` and handed to the scheduler with no ``await`` in between, so a version that
has been taken out of routing can drain by waiting for its scheduler alone.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import numpy as np

from frameserve.backends import Backend, BackendSettings, TensorSpec, load_backend
from frameserve.backends.base import StreamBackend, StreamKey
from frameserve.cpu import CpuBudget
from frameserve.datatypes import from_numpy, to_numpy
from frameserve.errors import ConfigError, FrameserveError, InvalidInput
from frameserve.processing.labels import check_class_count
from frameserve.processing.spec import ClassesSpec
from frameserve.processing.tasks import ModelProcessing
from frameserve.serving.classification import CLASSIFIABLE, read_labels, top_classes
from frameserve.serving.config import DynamicBatching, ModelConfig, TensorConfig, config_file
from frameserve.serving.model_metadata import onnx_metadata
from frameserve.serving.reshape import BatchReshape, Reshape
from frameserve.serving.scheduler import Scheduler, SchedulerSettings, WorkItem
from frameserve.serving.stats import Metrics, VersionStats
from frameserve.serving.types import (
    InferRequest,
    InferResponse,
    OutputTensor,
    TensorMetadata,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 4  # Triton's default when the model file allows batching


def _auto_batch_dim(config: ModelConfig) -> bool | None:
    """Whether the backend must give the model a batch dimension; None: decide from the file."""
    if config.max_batch_size is None:
        return None
    return config.max_batch_size > 0


def _model_batches(specs: tuple[TensorSpec, ...]) -> bool:
    return bool(specs) and all(len(s.shape) >= 1 and s.shape[0] == -1 for s in specs)


def resolve_tensors(
    declared: list[TensorConfig] | None,
    found: tuple[TensorSpec, ...],
    batch_dim: bool,
    field: str,
    source: str,
) -> tuple[TensorConfig, ...]:
    """Merge the tensors declared in model.yaml with those the model file reports.

    A declared ``reshape`` is the model file's shape (checked here); ``dims`` stay what
    clients see."""
    from_file = {
        s.name: TensorConfig(
            name=s.name, datatype=s.datatype, dims=list(s.shape[1:] if batch_dim else s.shape)
        )
        for s in found
    }
    for i, t in enumerate(declared or []):
        actual = from_file.get(t.name)
        where = f"{source}: {field}[{i}]"
        if actual is None:
            raise ConfigError(f"{where}.name: expected one of {sorted(from_file)}, got {t.name!r}")
        if t.datatype != actual.datatype:
            raise ConfigError(
                f"{where}.datatype: the model has {actual.datatype}, got {t.datatype}"
            )
        model_shape = t.dims if t.reshape is None else t.reshape
        compatible = len(model_shape) == len(actual.dims) and all(
            m == -1 or d == m for d, m in zip(model_shape, actual.dims, strict=True)
        )
        if not compatible and t.reshape is not None:
            raise ConfigError(
                f"{where}.reshape: the model file's {field[:-1]} {t.name!r} has shape "
                f"{actual.dims} (batch dim excluded), got reshape.shape {t.reshape}"
            )
        if not compatible:
            raise ConfigError(f"{where}.dims: the model has {actual.dims}, got {t.dims}")
        from_file[t.name] = t
    return tuple(from_file.values())


def _reshapes(tensors: tuple[TensorConfig, ...]) -> list[Reshape]:
    return [
        Reshape(t.name, tuple(t.dims), tuple(t.reshape)) for t in tensors if t.reshape is not None
    ]


class ModelVersion:
    """A version that is loaded (and, once ``warmup`` ran, ready for traffic)."""

    def __init__(
        self,
        name: str,
        version: int,
        config: ModelConfig,
        path: Path,
        budget: CpuBudget,
        metrics: Metrics | None,
        fingerprint: object = None,
        cache_dir: Path | None = None,
        model_timeout_s: float | None = None,
    ) -> None:
        """Load the backend (blocking: call from a worker thread); ``cache_dir``: the
        server's compiled-model cache, for configs that name none; ``model_timeout_s``: the
        server's limit on one model call (callers get 504 after it)."""
        self.name = name
        self.version = version
        self.config = config
        self.path = path
        self.fingerprint = fingerprint
        source = str(config_file(path.parent))
        settings = BackendSettings(
            name, version, path, config, budget, _auto_batch_dim(config), cache_dir=cache_dir
        )
        self.backend: Backend = load_backend(settings)
        backend = self.backend  # read once: a runtime Protocol check is not free
        self._streams_backend: StreamBackend | None = None  # a script that keeps stream state
        if isinstance(backend, StreamBackend) and backend.keeps_streams:
            self._streams_backend = backend
        # configured streams -> (params, profiling): a newer version is given them too
        self.stream_params: dict[StreamKey, tuple[dict[str, Any], bool]] = {}
        batch_dim = settings.batch_dim
        if batch_dim is None:
            batch_dim = _model_batches(self.backend.inputs)
        self.max_batch_size = (
            config.max_batch_size if config.max_batch_size is not None
            else (DEFAULT_MAX_BATCH_SIZE if batch_dim else 0)
        )  # fmt: skip
        try:
            self.inputs = resolve_tensors(
                config.inputs, self.backend.inputs, batch_dim, "inputs", source
            )
            self.outputs = resolve_tensors(
                config.outputs, self.backend.outputs, batch_dim, "outputs", source
            )
            self.processing = self._processing(source)
            self._labels = {
                t.name: read_labels(path.parent / t.label_filename)
                for t in self.outputs
                if t.label_filename is not None
            }
        except FrameserveError:
            self.backend.close()
            raise
        if "dynamic_batching" in config.model_fields_set:
            self.dynamic_batching: DynamicBatching | None = config.dynamic_batching
        else:
            self.dynamic_batching = DynamicBatching() if self.max_batch_size > 0 else None
        self.instances = self.backend.max_concurrency
        self.stats = VersionStats(name, str(version), metrics)
        db = self.dynamic_batching
        self.default_priority = (db.default_priority_level or 1) if db else 1
        self.priority_levels = db.priority_levels if db else 1
        self.default_timeout_s = (db.timeout_ms / 1000.0) if db and db.timeout_ms else None
        self._scheduler_settings = SchedulerSettings(
            max_batch_size=self.max_batch_size,
            batching=db,
            concurrency=self.instances,
            max_queue_size=db.max_queue_size if db else 1024,
            priority_levels=self.priority_levels,
            model_timeout_s=model_timeout_s,
            row_streams=self.streams_backend is not None,
        )
        self.scheduler: Scheduler | None = None
        self._input_index = {t.name: t for t in self.inputs}
        self._output_index = {t.name: t for t in self.outputs}
        self._output_names = [t.name for t in self.outputs]
        self._reshape = BatchReshape(
            tuple(_reshapes(self.inputs)),
            tuple(_reshapes(self.outputs)),
            lead=1 if self.max_batch_size > 0 else 0,
        )

    def _processing(self, source: str) -> ModelProcessing | None:
        """The declared pre/post-processing, checked against the model's tensors."""
        pre = self.config.preprocess
        if pre is None:
            return None
        inputs = [t.name for t in self.inputs]
        name = pre.input or (inputs[0] if len(inputs) == 1 else None)
        if name not in inputs:
            raise ConfigError(
                f"{source}: preprocess.input: expected one of {inputs}, got {pre.input!r}"
            )
        processing = ModelProcessing(
            pre,
            self.config.postprocess,
            self.path.parent,
            pre.fuse,
            metadata=lambda: onnx_metadata(self.path, self.config.model_file),
            source=source,
        )
        outputs = [t.name for t in self.outputs]
        unknown = [n for n in processing.output_names() if n not in outputs]
        if unknown:
            raise ConfigError(
                f"{source}: postprocess: the model has outputs {outputs}, got {unknown}"
            )
        if isinstance(processing.postprocess, ClassesSpec):
            [tensor] = [t for t in self.outputs if t.name == processing.postprocess.output]
            check_class_count(processing.postprocess, tensor.dims, source)
        processing.check_outputs({t.name: tuple(t.dims) for t in self.outputs}, source)
        return processing

    # -- description ------------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.config.backend

    @property
    def platform(self) -> str:
        return self.backend.platform

    def metadata_tensors(self, tensors: tuple[TensorConfig, ...]) -> tuple[TensorMetadata, ...]:
        lead = (-1,) if self.max_batch_size > 0 else ()
        return tuple(TensorMetadata(t.name, t.datatype, lead + tuple(t.dims)) for t in tensors)

    def describe(self) -> str:
        return (
            f"{self.name} v{self.version}: {self.backend.describe()} "
            f"max_batch_size={self.max_batch_size} "
            f"dynamic_batching={'on' if self.dynamic_batching else 'off'}"
        )

    # -- per-stream state (script models) -----------------------------------------------------
    @property
    def streams_backend(self) -> StreamBackend | None:
        """The backend when it keeps per-stream state (script models), else None."""
        return self._streams_backend

    async def configure_stream(
        self, stream: StreamKey, params: dict[str, Any], profiling: bool = False
    ) -> None:
        """Give ``stream`` its params before its first frame (a no-op for stateless
        backends); ``InvalidInput`` when the model refuses them."""
        backend = self.streams_backend
        if backend is not None:
            await asyncio.to_thread(backend.configure_stream, stream, params, profiling)
            self.stream_params[stream] = (dict(params), profiling)

    async def release_stream(self, stream: StreamKey) -> None:
        backend = self.streams_backend
        if backend is not None and self.stream_params.pop(stream, None) is not None:
            await asyncio.to_thread(backend.release_stream, stream)

    async def adopt_streams(self, older: list[ModelVersion]) -> None:
        """Configure the streams that older versions of this model serve, before this one
        takes their traffic (a reload moves running streams to it); a stream whose params
        this version refuses is logged, and its frames run unconfigured."""
        for mv in older:
            for stream, (params, profiling) in list(mv.stream_params.items()):
                if stream in self.stream_params:
                    continue
                try:
                    await self.configure_stream(stream, params, profiling)
                except FrameserveError as err:
                    log.warning("%s v%s: stream %s: %s", self.name, self.version, stream, err)

    def stage_seconds(self) -> dict[str, float]:
        """The model's own stage seconds (script models that profile), summed since load."""
        backend = self.streams_backend
        return backend.stage_seconds() if backend is not None else {}

    # -- lifecycle (on the loop) --------------------------------------------------------------
    async def warmup(self) -> None:
        """Run the configured warm-up inferences directly on the backend."""
        hook = getattr(self.backend, "warmup", None)
        if callable(hook):
            await asyncio.to_thread(hook)
        samples = self._warmup_inputs()
        outputs: dict[str, np.ndarray] = {}
        for _ in range(self.config.warmup.count):
            outputs = await self.run_batch(samples)
        if self.processing is not None and outputs:
            # Dynamic dims (-1) passed the check at load; the real shapes must fit too.
            lead = 1 if self.max_batch_size > 0 else 0
            shapes = {k: tuple(v.shape[lead:]) for k, v in outputs.items()}
            self.processing.check_outputs(shapes, str(config_file(self.path.parent)))

    def _warmup_inputs(self) -> dict[str, np.ndarray]:
        wc = self.config.warmup
        if wc.file:
            path = self.path.parent / wc.file
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {t.name: data[t.name] for t in self.inputs}
            except (OSError, KeyError, ValueError) as err:
                raise ConfigError(
                    f"{path}: warmup.file: cannot read sample inputs: {err}"
                ) from None
        if self.processing is not None and len(self.inputs) == 1:
            # Dynamic dims get a realistic size: a frame through the declared pre-processing.
            frame = np.full((240, 320, 3), 128, dtype=np.uint8)
            tensor, _ = self.processing.preprocess([frame] * wc.batch_size)
            return {self.inputs[0].name: tensor if self.max_batch_size > 0 else tensor[0]}
        lead = (wc.batch_size,) if self.max_batch_size > 0 else ()
        out = {}
        for t in self.inputs:
            shape = lead + tuple(1 if d == -1 else d for d in t.dims)
            dtype = to_numpy(t.datatype)
            out[t.name] = (
                np.full(shape, b"", dtype=object)
                if t.datatype == "BYTES"
                else np.zeros(shape, dtype)
            )
        return out

    def start(self) -> None:
        self.scheduler = Scheduler(self.run_batch, self._scheduler_settings, self.stats)
        self.scheduler.start()
        self.stats.set_ready(True)

    async def close(self, timeout: float | None = None) -> None:
        """Drain queued and running work, then release the runtime."""
        self.stats.set_ready(False)
        if self.scheduler is not None:
            await self.scheduler.close(timeout)
        await asyncio.to_thread(self.backend.close)
        self.stats.forget()

    # -- requests -------------------------------------------------------------------------------
    async def run_batch(
        self, batch: dict[str, np.ndarray], streams: list[StreamKey | None] | None = None
    ) -> dict[str, np.ndarray]:
        """One batch through the backend, in the model's shapes where ``reshape`` says so
        (numpy views, once per batch), its outputs back in the clients' shapes. ``streams``:
        each row's stream, for backends with per-stream state (the scheduler passes it)."""
        model_batch = self._reshape.to_model(batch) if self._reshape else batch
        backend = self.streams_backend
        if backend is not None and streams is not None:
            outputs = await backend.infer_rows(model_batch, streams)
        else:
            outputs = await self.backend.infer(model_batch)
        return self._reshape.to_client(outputs) if self._reshape else outputs

    async def infer(self, request: InferRequest) -> InferResponse:
        item = self.prepare(request)
        assert self.scheduler is not None, "infer on a version that was never started"
        self.scheduler.submit(item)
        self.stats.enter()
        try:
            outputs = await item.future
        finally:
            self.stats.leave()
        if request.trace is not None and item.batch is not None:
            request.trace.record_batch(
                item.enqueued_ns, item.batch, self.name, self.version, item.batch_size
            )
        return self._response(request, outputs)

    def prepare(self, request: InferRequest) -> WorkItem:
        """Validate a request against this version and make its work item."""
        arrays: dict[str, np.ndarray] = {}
        batch = 0
        for i, t in enumerate(request.inputs):
            spec = self._input_index.get(t.name)
            if spec is None:
                raise InvalidInput(
                    f"inputs[{i}].name: model {self.name} has inputs "
                    f"{list(self._input_index)}, got {t.name!r}"
                )
            if t.name in arrays:
                raise InvalidInput(f"inputs[{i}].name: input {t.name!r} is given twice")
            if t.datatype != spec.datatype:
                raise InvalidInput(
                    f"inputs[{i}].datatype: input {t.name!r} expects {spec.datatype}, "
                    f"got {t.datatype}"
                )
            batch = self._check_shape(i, t.name, t.shape, spec.dims, batch)
            arrays[t.name] = t.data
        missing = [n for n in self._input_index if n not in arrays]
        if missing:
            raise InvalidInput(
                f"inputs: model {self.name} expects {list(self._input_index)}, missing {missing}"
            )
        self._check_outputs(request.outputs)
        self._check_classification(request)
        loop = asyncio.get_running_loop()
        timeout = request.timeout_us / 1e6 if request.timeout_us > 0 else self.default_timeout_s
        shape_key = (
            tuple(arrays[n].shape[1:] for n in self._input_index) if self.max_batch_size else None
        )
        return WorkItem(
            inputs={n: arrays[n] for n in self._input_index},
            batch_size=batch if self.max_batch_size > 0 else 1,
            future=loop.create_future(),
            priority=self.priority_levels + 1
            if request.admission.background
            else self._priority(request.priority),
            deadline=loop.time() + timeout if timeout else None,
            shape_key=shape_key,
            admission=request.admission,
        )

    def _check_shape(
        self, i: int, name: str, shape: tuple[int, ...], dims: list[int], batch: int
    ) -> int:
        expected = ([-1] if self.max_batch_size > 0 else []) + list(dims)
        if len(shape) != len(expected) or any(
            e != -1 and s != e for s, e in zip(shape, expected, strict=True)
        ):
            raise InvalidInput(
                f"inputs[{i}].shape: input {name!r} expects {expected}, got {list(shape)}"
            )
        if self.max_batch_size <= 0:
            return batch
        b = shape[0]
        if not 1 <= b <= self.max_batch_size:
            raise InvalidInput(
                f"inputs[{i}].shape[0]: batch size must be within 1..{self.max_batch_size} "
                f"for model {self.name}, got {b}"
            )
        if batch and b != batch:
            raise InvalidInput(
                f"inputs[{i}].shape[0]: every input needs the same batch size {batch}, got {b}"
            )
        return b

    def _check_outputs(self, requested: list[str] | None) -> None:
        if requested is None:
            return
        for j, name in enumerate(requested):
            if name not in self._output_names:
                raise InvalidInput(
                    f"outputs[{j}].name: model {self.name} has outputs {self._output_names}, "
                    f"got {name!r}"
                )

    def _check_classification(self, request: InferRequest) -> None:
        for name, count in request.classification.items():
            spec = self._output_index.get(name)
            where = f"outputs.{name}.parameters.classification"
            if spec is None or (request.outputs is not None and name not in request.outputs):
                raise InvalidInput(
                    f"{where}: expected one of the requested outputs "
                    f"{request.outputs or self._output_names}, got {name!r}"
                )
            if count < 1:
                raise InvalidInput(f"{where}: expected a positive class count, got {count}")
            if spec.datatype not in CLASSIFIABLE:
                raise InvalidInput(
                    f"{where}: output {name!r} is {spec.datatype}; classification needs one of "
                    f"{sorted(CLASSIFIABLE)}"
                )

    def _priority(self, requested: int) -> int:
        if requested == 0:
            return self.default_priority
        if not 1 <= requested <= self.priority_levels:
            raise InvalidInput(
                f"parameters.priority: expected 1..{self.priority_levels} "
                f"(or 0 for the default), got {requested}"
            )
        return requested

    def _response(self, request: InferRequest, outputs: dict[str, Any]) -> InferResponse:
        names = request.outputs if request.outputs is not None else self._output_names
        tensors = []
        for name in names:
            arr = outputs[name]
            datatype = from_numpy(arr.dtype)
            count = request.classification.get(name)
            if count:
                labels = self._labels.get(name, ())
                arr = top_classes(arr, count, self.max_batch_size > 0, labels)
                datatype = "BYTES"
            tensors.append(OutputTensor(name, datatype, tuple(arr.shape), arr))
        return InferResponse(self.name, str(self.version), request.id, tensors)
