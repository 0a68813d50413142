"""Inference runtimes behind one narrow protocol (``frameserve.backends.base.Backend``)."""

from __future__ import annotations

from frameserve.backends.base import Backend, BackendSettings, TensorSpec


def load_backend(settings: BackendSettings) -> Backend:
    """Load one model version with the backend its config names (blocking: call off-loop)."""
    kind = settings.config.backend
    # Imported here so that a server without, say, ONNX Runtime models never loads its library.
    if kind == "openvino":
        from frameserve.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(settings)
    if kind == "onnxruntime":
        from frameserve.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(settings)
    from frameserve.backends.python import PythonBackend

    return PythonBackend(settings)


__all__ = ["Backend", "BackendSettings", "TensorSpec", "load_backend"]
