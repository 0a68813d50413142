"""Inference runtimes behind one narrow protocol (``frameserve.backends.base.Backend``)."""

from __future__ import annotations

import sys

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


def refuse_runtime_telemetry() -> None:
    """Keep OpenVINO's Python package from sending usage telemetry from this process.

    ``import openvino`` imports its model converter, which (with no consent file, outside CI)
    posts an event to Google Analytics from a forked copy of the importing process. A server
    must neither phone home nor fork itself while it loads models, and the fork costs ~0.35 s
    of start-up. With ``openvino_telemetry`` refused, OpenVINO uses its own no-op stub, as it
    does where that package is not installed. The CLI calls this before anything imports
    OpenVINO; a library caller may too. No effect once the package is imported.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # imports fail


__all__ = [
    "Backend",
    "BackendSettings",
    "TensorSpec",
    "cpu_has_bf16",
    "load_backend",
    "refuse_runtime_telemetry",
]
