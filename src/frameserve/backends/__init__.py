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


def cpu_has_bf16(device: str = "CPU") -> bool:
    """Whether OpenVINO can run bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    import openvino as ov

    try:
        caps = ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    except RuntimeError:
        return False
    return "BF16" in [str(c).upper() for c in caps]


__all__ = ["Backend", "BackendSettings", "TensorSpec", "cpu_has_bf16", "load_backend"]
