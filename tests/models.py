"""Small real models for tests, built with ``onnx.helper`` (no model hub needed).

Import from any test as ``from models import ...`` (``tests/`` is on ``sys.path``; see
``tests/conftest.py``). Builders write one file and return its path; ``make_model`` lays out
a whole model folder of a repository: ``<repo>/<name>/model.yaml`` plus numbered versions.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from frameserve.tools.example_models import save_model, write_model_yaml

# v2 datatype -> ONNX element type name (TensorProto attribute)
ONNX_TYPES = {
    "FP32": "FLOAT",
    "FP16": "FLOAT16",
    "FP64": "DOUBLE",
    "INT8": "INT8",
    "INT16": "INT16",
    "INT32": "INT32",
    "INT64": "INT64",
    "UINT8": "UINT8",
    "BOOL": "BOOL",
    "BYTES": "STRING",
}


def _dims(dims: Sequence[int | str]) -> list[int | str]:
    """``-1`` becomes a symbolic (dynamic) dimension."""
    return [f"d{i}" if d == -1 else d for i, d in enumerate(dims)]


def simple_add_sub(path: Path, width: int = 16, batch: int | str = "N") -> Path:
    """Triton's classic "simple": INPUT0, INPUT1 INT32 [N,16] -> OUTPUT0 = sum, OUTPUT1 = diff.

    ``batch`` may be an int to build a model with a static batch dimension.
    """
    from onnx import TensorProto, helper

    shape = [batch, width]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [
            helper.make_tensor_value_info("INPUT0", TensorProto.INT32, shape),
            helper.make_tensor_value_info("INPUT1", TensorProto.INT32, shape),
        ],
        [
            helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, shape),
            helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, shape),
        ],
    )
    return save_model(graph, path)


def densenet_like(path: Path, classes: int = 1000, channels: int = 8, batch: int | str = 1) -> Path:
    """A small stand-in for Triton's quick-start ``densenet_onnx``, with its tensor names and
    shapes: ``data_0`` FP32 [1,3,224,224] -> conv 3x3 -> ReLU -> global average pool ->
    1x1 conv to ``classes`` -> ``fc6_1`` FP32 [1,classes,1,1]. Fixed seeded weights;
    ``batch`` "N" gives both a dynamic batch dimension."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(18)
    w1 = rng.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((classes, channels, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["data_0", "w1"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pool"]),
            helper.make_node("Conv", ["pool", "w2"], ["fc6_1"]),
        ],
        "densenet_like",
        [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("fc6_1", TensorProto.FLOAT, [batch, classes, 1, 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return save_model(graph, path)


def identity(path: Path, datatype: str, dims: Sequence[int | str]) -> Path:
    """``INPUT0`` -> ``OUTPUT0`` unchanged.

    ``datatype`` is a v2 name (FP32, FP16, INT8, INT64, UINT8, BOOL, BYTES, ...) or an ONNX
    element type name (FLOAT, STRING, ...); BYTES is an ONNX string tensor. ``dims`` is the full
    shape, batch dimension included; ``-1`` or a string is a dynamic dimension.

    Serve a BYTES identity with ONNX Runtime: OpenVINO 2026.4.1 aborts the whole process
    (``munmap_chunk(): invalid pointer``) when it frees an infer request that ran an Identity
    over strings.
    """
    from onnx import TensorProto, helper

    elem = getattr(TensorProto, ONNX_TYPES.get(datatype, datatype))
    shape = _dims(dims)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        "identity",
        [helper.make_tensor_value_info("INPUT0", elem, shape)],
        [helper.make_tensor_value_info("OUTPUT0", elem, shape)],
    )
    return save_model(graph, path)


def python_model(folder: Path, source_code: str) -> Path:
    """Write ``<folder>/model.py`` (dedented) for the Python backend; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.py"
    path.write_text(textwrap.dedent(source_code).lstrip())
    return path


def make_model(
    repo: Path,
    name: str,
    backend: str,
    build: Callable[[Path], object] | None = None,
    config: dict[str, Any] | None = None,
    versions: Iterable[int] = (1,),
) -> Path:
    """Write ``<repo>/<name>/model.yaml`` and one folder per version; returns the model folder.

    ``build(version_folder)`` writes the model file(s) of each version (the folder exists and
    its name is the version number); the YAML is ``{"backend": backend, **config}``.
    """
    folder = repo / name
    write_model_yaml(folder, {"backend": backend, **(config or {})})
    for v in versions:
        vdir = folder / str(v)
        vdir.mkdir(parents=True, exist_ok=True)
        if build is not None:
            build(vdir)
    return folder


def onnx_file(builder: Callable[..., Path], *args: Any, **kwargs: Any) -> Callable[[Path], Path]:
    """A ``make_model`` build step: ``builder(version_folder / "model.onnx", *args, **kwargs)``."""

    def build(vdir: Path) -> Path:
        return builder(vdir / "model.onnx", *args, **kwargs)

    return build


def python_file(source_code: str) -> Callable[[Path], Path]:
    """A ``make_model`` build step that writes ``model.py`` into each version folder."""

    def build(vdir: Path) -> Path:
        return python_model(vdir, source_code)

    return build
