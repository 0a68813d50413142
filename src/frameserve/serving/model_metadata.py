"""The metadata properties of a version's ONNX file (Ultralytics writes class names there).

Read with the ``onnx`` package (a file format, not a runtime), only when a decoder needs them:
parsing a model's protobuf costs tens of milliseconds, and importing ``onnx`` ~45 ms more, so
it is imported only then (a server of OpenVINO or .tflite models never imports it).
"""

from __future__ import annotations

from pathlib import Path

from frameserve.errors import ConfigError


def onnx_file(version_folder: Path, model_file: str | None) -> Path | None:
    """The version's ONNX file: ``model_file`` when it is one, else the only ``*.onnx``."""
    if model_file is not None:
        path = version_folder / model_file
        return path if path.suffix.lower() == ".onnx" else None
    found = sorted(version_folder.glob("*.onnx"))
    return found[0] if len(found) == 1 else None


def onnx_metadata(version_folder: Path, model_file: str | None) -> dict[str, str]:
    """``metadata_props`` of the version's ONNX file; empty when the model is not ONNX."""
    path = onnx_file(version_folder, model_file)
    if path is None:
        return {}
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - OSError, protobuf's DecodeError, onnx's own
        raise ConfigError(f"{path}: cannot read the ONNX metadata: {err}") from None
    return {p.key: p.value for p in model.metadata_props}
