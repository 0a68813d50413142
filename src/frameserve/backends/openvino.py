"""OpenVINO backend: reads IR (.xml/.bin), ONNX and TFLite; a pool of infer requests.

The compiled model is tuned from ``ModelConfig`` and the core budget: ``PERFORMANCE_HINT``,
``NUM_STREAMS`` (= ``instances``), ``INFERENCE_NUM_THREADS`` (= ``instances * threads`` or the
whole budget), ``INFERENCE_PRECISION_HINT``, pinning and the compiled-model cache. One infer
request per stream, each driven by one thread of a sized pool (``infer`` releases the GIL).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from frameserve.backends._threads import BlockingRunner
from frameserve.backends.base import BackendSettings, TensorSpec
from frameserve.backends.openvino_cache import ConvertedModels
from frameserve.backends.openvino_graph import (
    FRONTEND_EXTENSIONS,
    check_batching,
    fuse_preprocessing,
    rewrite_batch_reshapes,
)
from frameserve.datatypes import from_numpy
from frameserve.errors import ModelExecutionError, ModelLoadError

log = logging.getLogger(__name__)

MODEL_FILES = ("model.xml", "model.onnx", "model.tflite")
_PRECISION = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def runtime_message(err: BaseException, limit: int = 400) -> str:
    """OpenVINO's error text without its "Exception from src/...cpp:N:" location lines."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith("Exception from ")]
    return " ".join(useful or lines)[:limit]


def find_model_file(folder: Path, name: str | None = None) -> Path:
    """``name`` in ``folder`` when given (model.yaml's ``model_file``), else the first of
    ``MODEL_FILES`` found."""
    if name is not None:
        if not (folder / name).exists():
            raise ModelLoadError(f"{folder}: expected {name} (model_file), found none")
        return folder / name
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(f"{folder}: expected one of {list(MODEL_FILES)}, found none")


def _spec(port: Any) -> TensorSpec:
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    dtype = np.dtype(port.get_element_type().to_dtype())
    return TensorSpec(port.get_any_name(), from_numpy(dtype), shape)


def _with_dynamic_batch(model: ov.Model, source: Path) -> None:
    """Make the first dim of every input dynamic so the scheduler can batch."""
    new_shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        if ps.rank.is_dynamic or len(ps) == 0:
            raise ModelLoadError(
                f"{source}: input {port.get_any_name()!r} has no batch dimension "
                f"(shape {ps}); set max_batch_size: 0"
            )
        if ps[0].is_static:
            dims = [ov.Dimension(-1)] + [ps[i] for i in range(1, len(ps))]
            new_shapes[port.get_any_name()] = ov.PartialShape(dims)
    if new_shapes:
        try:
            model.reshape(new_shapes)
        except RuntimeError as err:
            raise ModelLoadError(
                f"{source}: cannot give the model a dynamic batch dimension "
                f"({runtime_message(err, 200)}); "
                "set max_batch_size: 0 to serve it without batching"
            ) from None


def _with_batch(model: ov.Model, source: Path, size: int) -> None:
    """Make the first dim of every input ``size`` (a static-shape copy of a batching model)."""
    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        shapes[port.get_any_name()] = ov.PartialShape([size] + [ps[i] for i in range(1, len(ps))])
    try:
        model.reshape(shapes)
    except RuntimeError as err:
        raise ModelLoadError(
            f"{source}: openvino.static_batch_sizes: cannot give the model batch {size} "
            f"({runtime_message(err, 200)}); remove {size} from the list"
        ) from None


def core_for(config: Any) -> ov.Core:
    """An ``ov.Core`` with the frontend extensions ``config.openvino`` names."""
    core = ov.Core()
    for name in config.openvino.frontend_extensions:
        for extension in FRONTEND_EXTENSIONS[name]():
            core.add_extension(extension)
    return core


def read_model(
    core: ov.Core, source: Path, config: Any, batch_dim: bool | None, *, fuse: bool = True
) -> ov.Model:
    """Read a model file as the backend serves it: the declared graph edits applied.

    ``config`` is the ``ModelConfig``: batch-1 Reshape rewrites (when the model batches),
    fused pre-processing (``fuse=False`` leaves it out, for tools that save the graph: the
    backend fuses again when it loads the saved file) and a dynamic batch dimension.
    """
    try:
        model = core.read_model(str(source))
    except RuntimeError as err:
        msg = runtime_message(err)
        raise ModelLoadError(f"{source}: OpenVINO cannot read the model: {msg}") from None
    if config.openvino.rewrite_batch_reshapes and batch_dim:
        rewrite_batch_reshapes(model)
    if fuse and config.preprocess is not None and config.preprocess.fuse:
        fuse_preprocessing(model, config.preprocess, source)
    if batch_dim:
        _with_dynamic_batch(model, source)
    return model


def compile_properties(settings: BackendSettings) -> dict[str, str]:
    """The OpenVINO properties this version compiles with."""
    cfg = settings.config
    props: dict[str, str] = {"PERFORMANCE_HINT": cfg.performance_hint or "THROUGHPUT"}
    if cfg.instances:
        props["NUM_STREAMS"] = str(cfg.instances)
    if cfg.device.startswith(("CPU", "AUTO", "HETERO", "MULTI")) or cfg.device == "CPU":
        threads = (cfg.threads * (cfg.instances or 1)) if cfg.threads else settings.budget.cores
        props["INFERENCE_NUM_THREADS"] = str(min(threads, settings.budget.cores))
    if cfg.precision:
        props["INFERENCE_PRECISION_HINT"] = _PRECISION[cfg.precision]
    if cfg.openvino.enable_cpu_pinning is not None:
        props["ENABLE_CPU_PINNING"] = "YES" if cfg.openvino.enable_cpu_pinning else "NO"
    if cfg.cache_dir:
        cache = Path(cfg.cache_dir)
        props["CACHE_DIR"] = str(cache if cache.is_absolute() else settings.path.parent / cache)
    elif settings.cache_dir is not None:  # the server's compiled-model cache
        props["CACHE_DIR"] = str(settings.cache_dir)
    props.update(cfg.openvino.properties)
    if not cfg.device.startswith("CPU"):
        # CPU-only properties make GPU/AUTO compiles fail; keep the portable ones.
        props.pop("INFERENCE_NUM_THREADS", None)
        props.pop("ENABLE_CPU_PINNING", None)
    return props


class OpenVinoBackend:
    """A compiled OpenVINO model and its infer requests."""

    platform = "openvino"

    def __init__(self, settings: BackendSettings) -> None:
        self._settings = settings
        source = find_model_file(settings.path, settings.config.model_file)
        self._core = core_for(settings.config)
        self.properties = compile_properties(settings)
        model, converted, key = self._read(source)
        self._rebatched = bool(
            settings.config.openvino.rewrite_batch_reshapes and settings.batch_dim
        )
        self.inputs = tuple(_spec(p) for p in model.inputs)
        self.outputs = tuple(_spec(p) for p in model.outputs)
        self._compiled = self._compile(model, source)
        if self._rebatched and not (converted and converted.checked(key, self.properties)):
            check_batching(self._compiled, source)
            if converted is not None:
                converted.mark_checked(key, self.properties)
        nireq = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.max_concurrency = settings.config.instances or max(1, nireq)
        self._free = self._pool(self._compiled)
        # Static-shape copies, compiled in the background the first time a batch of their size
        # comes (no load-time cost for sizes a workload never sends). The compile threads write
        # ``_static`` (one assignment per size), runner threads read it.
        self._model, self._source = model, source
        self._static_sizes = set(settings.config.openvino.static_batch_sizes)
        self._static: dict[int, queue.SimpleQueue[ov.InferRequest]] = {}
        self._static_models: list[ov.CompiledModel] = []
        self._compiles: dict[int, threading.Thread] = {}  # size -> its compile (kept, joined)
        self._compiles_lock = threading.Lock()
        self._closed = False
        self._runner = BlockingRunner(
            self.max_concurrency, f"ov-{settings.model_name}", settings.budget.cpus
        )
        self._output_names = [o.name for o in self.outputs]
        self._bytes_inputs = {i.name for i in self.inputs if i.datatype == "BYTES"}
        self._bytes_outputs = {i for i, o in enumerate(self.outputs) if o.datatype == "BYTES"}

    def _read(self, source: Path) -> tuple[ov.Model, ConvertedModels | None, str]:
        """The edited graph: from the converted-model cache, or read and edited (and then
        cached) when the compiled-model cache is on (``openvino_cache``)."""
        cfg, batch_dim = self._settings.config, self._settings.batch_dim
        converted = ConvertedModels.for_properties(self.properties)
        key = converted.key(source, cfg, batch_dim) if converted is not None else ""
        model = converted.read(self._core, key) if converted is not None else None
        if model is None:
            model = read_model(self._core, source, cfg, batch_dim)
            if converted is not None:
                converted.save(model, key)
                # Compiled as later loads will compile it: OpenVINO's cache key is the graph as
                # read, and a graph read back from IR hashes unlike the one edited in memory.
                model = converted.read(self._core, key) or model
        return model, converted, key

    def _compile(self, model: ov.Model, source: Path) -> ov.CompiledModel:
        device = self._settings.config.device
        try:
            return self._core.compile_model(model, device, self.properties)
        except RuntimeError as err:
            msg = runtime_message(err)
            raise ModelLoadError(
                f"{source}: OpenVINO cannot compile for {device} with {self.properties}: {msg}"
            ) from None

    @property
    def static_batches_ready(self) -> list[int]:
        """The batch sizes that run on their static-shape model now."""
        return sorted(self._static)

    def _requests_for(self, size: int) -> queue.SimpleQueue[ov.InferRequest]:
        """The free requests that run a batch of ``size``: its static-shape model once compiled
        (starting that compile on first use), else the dynamic one."""
        pool = self._static.get(size)
        if pool is not None:
            return pool
        if size in self._static_sizes:
            with self._compiles_lock:
                if size not in self._compiles and not self._closed:
                    thread = threading.Thread(
                        target=self._compile_static, args=(size,), daemon=True,
                        name=f"ov-{self._settings.model_name}-static-{size}",
                    )  # fmt: skip
                    self._compiles[size] = thread
                    thread.start()
        return self._free

    def _compile_static(self, size: int) -> None:
        """A compile thread: the static-shape copy for ``size``; on failure the size stays on
        the dynamic model (logged)."""
        try:
            fixed = self._model.clone()
            _with_batch(fixed, self._source, size)
            compiled = self._compile(fixed, self._source)
            pool = self._pool(compiled)
        except Exception as err:  # noqa: BLE001 - the dynamic model still serves this size
            log.warning("%s: batch %d stays on the dynamic-shape model: %s",
                        self._settings.model_name, size, err)  # fmt: skip
            return
        with self._compiles_lock:
            if self._closed:
                return
            self._static_models.append(compiled)
            self._static[size] = pool
        log.info("%s: batch %d runs on its static-shape model", self._settings.model_name, size)

    def _pool(self, compiled: ov.CompiledModel) -> queue.SimpleQueue[ov.InferRequest]:
        """``max_concurrency`` infer requests of ``compiled``: as many batches as may run."""
        free: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.max_concurrency):
            free.put(compiled.create_infer_request())
        return free

    def describe(self) -> str:
        c = self._compiled
        info = {
            "device": self._settings.config.device,
            "streams": c.get_property("NUM_STREAMS")
            if "CPU" in self._settings.config.device
            else "-",
            "requests": self.max_concurrency,
        }
        if self._settings.config.device.startswith("CPU"):
            info["threads"] = c.get_property("INFERENCE_NUM_THREADS")
            info["precision"] = c.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self._static_sizes:
            info["static_batches"] = ",".join(str(b) for b in sorted(self._static_sizes))
        return "openvino " + " ".join(f"{k}={v}" for k, v in info.items())

    def _infer_blocking(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = dict(batch)
        for name in self._bytes_inputs:  # OpenVINO takes strings as numpy bytes_, not objects
            inputs[name] = np.array(list(inputs[name].reshape(-1)), dtype=np.bytes_).reshape(
                inputs[name].shape
            )
        free = self._free
        if self._static_sizes:
            first = next(iter(inputs.values()))
            free = self._requests_for(first.shape[0] if first.ndim else 0)
        request = free.get()
        try:
            request.infer(inputs, share_inputs=True)
            # The request's output memory is reused by its next inference: copy it out.
            return {name: self._output(request, i) for i, name in enumerate(self._output_names)}
        except RuntimeError as err:
            msg = runtime_message(err)
            raise ModelExecutionError(f"OpenVINO inference failed: {msg}") from None
        finally:
            free.put(request)

    def _output(self, request: ov.InferRequest, index: int) -> np.ndarray:
        tensor = request.get_output_tensor(index)
        if index in self._bytes_outputs:
            return np.array(tensor.bytes_data, dtype=object).reshape(tuple(tensor.shape))
        return tensor.data.copy()

    async def infer(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self._runner.run(self._infer_blocking, batch)

    def close(self) -> None:
        with self._compiles_lock:
            self._closed = True
            compiles = list(self._compiles.values())
        for thread in compiles:
            thread.join()  # a compile cannot be interrupted; it ends within seconds
        self._runner.close()
        self._static.clear()
        self._static_models.clear()
        del self._compiled
