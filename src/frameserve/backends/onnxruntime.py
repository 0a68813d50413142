"""ONNX Runtime backend: ``instances`` sessions with explicit thread counts."""

from __future__ import annotations

import queue
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from frameserve.backends._threads import BlockingRunner
from frameserve.backends.base import BackendSettings, TensorSpec
from frameserve.errors import ModelExecutionError, ModelLoadError

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}
_OPT_LEVEL = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _spec(arg: Any, where: str) -> TensorSpec:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"{where}: tensor {arg.name!r} has unsupported type {arg.type}")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _as_str(array: np.ndarray) -> np.ndarray:
    flat = [
        v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)
        for v in array.reshape(-1)
    ]
    return np.array(flat, dtype=object).reshape(array.shape)


def _as_bytes(array: np.ndarray) -> np.ndarray:
    flat = [
        v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in array.reshape(-1)
    ]
    return np.array(flat, dtype=object).reshape(array.shape)


class OnnxRuntimeBackend:
    """``instances`` ORT sessions; each runs one batch at a time on its own threads."""

    platform = "onnxruntime_onnx"

    def __init__(self, settings: BackendSettings) -> None:
        cfg = settings.config
        file_name = cfg.model_file or "model.onnx"
        source = settings.path / file_name
        if not source.is_file():
            raise ModelLoadError(f"{settings.path}: expected {file_name} for backend onnxruntime")
        self.max_concurrency = cfg.instances or 1
        threads = cfg.threads or max(1, settings.budget.cores // self.max_concurrency)
        available = set(ort.get_available_providers())
        missing = [p for p in cfg.onnxruntime.providers if p not in available]
        if missing:
            raise ModelLoadError(
                f"{source}: onnxruntime.providers {missing} are not installed; "
                f"available: {sorted(available)}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = cfg.onnxruntime.inter_op_threads or 1
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if cfg.onnxruntime.execution_mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.graph_optimization_level = _OPT_LEVEL[cfg.onnxruntime.graph_optimization_level]
        self._threads = threads
        self._providers = list(cfg.onnxruntime.providers)
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        try:
            for _ in range(self.max_concurrency):
                self._free.put(
                    ort.InferenceSession(str(source), options, providers=self._providers)
                )
        except Exception as err:  # noqa: BLE001 - ORT raises InvalidProtobuf, NoSuchFile, Fail, ...
            msg = " ".join(str(err).split())[:300]
            raise ModelLoadError(f"{source}: ONNX Runtime cannot load the model: {msg}") from None
        session = self._free.get()
        self.inputs = tuple(_spec(a, str(source)) for a in session.get_inputs())
        self.outputs = tuple(_spec(a, str(source)) for a in session.get_outputs())
        self._free.put(session)
        if settings.batch_dim:
            static = [i.name for i in self.inputs if not i.shape or i.shape[0] != -1]
            if static:
                raise ModelLoadError(
                    f"{source}: max_batch_size is {cfg.max_batch_size}, but inputs {static} have "
                    "no dynamic first dimension; set max_batch_size: 0 or export the model with "
                    "a dynamic batch axis"
                )
        self._output_names = [o.name for o in self.outputs]
        self._bytes_inputs = {i.name for i in self.inputs if i.datatype == "BYTES"}
        self._bytes_outputs = {o.name for o in self.outputs if o.datatype == "BYTES"}
        self._runner = BlockingRunner(
            self.max_concurrency, f"ort-{settings.model_name}", settings.budget.cpus
        )

    def describe(self) -> str:
        return (
            f"onnxruntime sessions={self.max_concurrency} intra_op_threads={self._threads} "
            f"providers={self._providers}"
        )

    def _infer_blocking(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = dict(batch)
        for name in self._bytes_inputs:
            # ORT turns each element into str() of it: b"a" would arrive as "b'a'"
            feeds[name] = _as_str(feeds[name])
        session = self._free.get()
        try:
            results = session.run(self._output_names, feeds)
        except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
            msg = " ".join(str(err).split())[:400]
            raise ModelExecutionError(f"ONNX Runtime inference failed: {msg}") from None
        finally:
            self._free.put(session)
        outputs = dict(zip(self._output_names, results, strict=True))
        for name in self._bytes_outputs:
            outputs[name] = _as_bytes(outputs[name])
        return outputs

    async def infer(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self._runner.run(self._infer_blocking, batch)

    def close(self) -> None:
        self._runner.close()
