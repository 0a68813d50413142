"""OpenVINO backend: reads IR (.xml/.bin), ONNX and TFLite; a pool of infer requests.

The compiled model is tuned from ``ModelConfig`` and the core budget: ``PERFORMANCE_HINT``,
``NUM_STREAMS`` (= ``instances``), ``INFERENCE_NUM_THREADS`` (= ``instances * threads`` or the
whole budget), ``INFERENCE_PRECISION_HINT``, pinning and the compiled-model cache. One infer
request per stream, each driven by one thread of a sized pool (``infer`` releases the GIL).
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from frameserve.backends._threads import BlockingRunner
from frameserve.backends.base import BackendSettings, TensorSpec
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


def find_model_file(folder: Path) -> Path:
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
        source = find_model_file(settings.path)
        self._core = core_for(settings.config)
        model = read_model(self._core, source, settings.config, settings.batch_dim)
        self._rebatched = bool(
            settings.config.openvino.rewrite_batch_reshapes and settings.batch_dim
        )
        self.inputs = tuple(_spec(p) for p in model.inputs)
        self.outputs = tuple(_spec(p) for p in model.outputs)
        self.properties = compile_properties(settings)
        try:
            self._compiled = self._core.compile_model(
                model, settings.config.device, self.properties
            )
        except RuntimeError as err:
            msg = runtime_message(err)
            raise ModelLoadError(
                f"{source}: OpenVINO cannot compile for {settings.config.device} "
                f"with {self.properties}: {msg}"
            ) from None
        if self._rebatched:
            check_batching(self._compiled, source)
        nireq = int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.max_concurrency = settings.config.instances or max(1, nireq)
        self._free: queue.SimpleQueue[ov.InferRequest] = queue.SimpleQueue()
        for _ in range(self.max_concurrency):
            self._free.put(self._compiled.create_infer_request())
        self._runner = BlockingRunner(self.max_concurrency, f"ov-{settings.model_name}")
        self._output_names = [o.name for o in self.outputs]
        self._bytes_inputs = {i.name for i in self.inputs if i.datatype == "BYTES"}
        self._bytes_outputs = {i for i, o in enumerate(self.outputs) if o.datatype == "BYTES"}

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
        return "openvino " + " ".join(f"{k}={v}" for k, v in info.items())

    def _infer_blocking(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = dict(batch)
        for name in self._bytes_inputs:  # OpenVINO takes strings as numpy bytes_, not objects
            inputs[name] = np.array(list(inputs[name].reshape(-1)), dtype=np.bytes_).reshape(
                inputs[name].shape
            )
        request = self._free.get()
        try:
            request.infer(inputs, share_inputs=True)
            # The request's output memory is reused by its next inference: copy it out.
            return {name: self._output(request, i) for i, name in enumerate(self._output_names)}
        except RuntimeError as err:
            msg = runtime_message(err)
            raise ModelExecutionError(f"OpenVINO inference failed: {msg}") from None
        finally:
            self._free.put(request)

    def _output(self, request: ov.InferRequest, index: int) -> np.ndarray:
        tensor = request.get_output_tensor(index)
        if index in self._bytes_outputs:
            return np.array(tensor.bytes_data, dtype=object).reshape(tuple(tensor.shape))
        return tensor.data.copy()

    async def infer(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self._runner.run(self._infer_blocking, batch)

    def close(self) -> None:
        self._runner.close()
        del self._compiled
