"""``reshape``: clients send ``dims``, the model file takes ``reshape.shape`` (Triton's rules).

The rule tests are pure; the version tests load a real ONNX model with ONNX Runtime.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError, InvalidInput, ModelExecutionError
from frameserve.serving.config import ModelConfig, TensorConfig, parse_model_config
from frameserve.serving.model import ModelVersion
from frameserve.serving.reshape import Reshape, reshape_problem
from frameserve.serving.types import InferRequest, InputTensor

from models import simple_add_sub


@pytest.mark.parametrize(
    ("dims", "shape"),
    [
        ([3, 224, 224], [1, 3, 224, 224]),  # Triton's densenet_onnx input
        ([1000], [1, 1000, 1, 1]),  # and output
        ([2, 4, -1, 6], [8, -1, 1, 6]),  # Triton's example of runs between -1 dims
        ([-1, 4], [-1, 2, 2]),
        ([1], []),  # a scalar
    ],
)
def test_shapes_triton_accepts(dims: list[int], shape: list[int]) -> None:
    assert reshape_problem(dims, shape) is None


@pytest.mark.parametrize(
    ("dims", "shape", "expected"),
    [
        ([3], [2, 2], "dims hold 3, reshape.shape holds 4"),
        ([2], [], "reshape.shape holds 1 (a scalar)"),
        ([-1], [3], "dims hold a variable number, reshape.shape holds 3"),
        ([2, 4, -1, 6], [4, -1, 12], "runs [4, 12], expected [8, 6]"),
        ([-1, 4], [-1, 4, -1], "runs [1, 4, 1], expected [1, 4]"),
        ([4], [0, 4], "expected dims >= 1 or -1, got [0, 4]"),
    ],
)
def test_shapes_triton_refuses(dims: list[int], shape: list[int], expected: str) -> None:
    problem = reshape_problem(dims, shape)
    assert problem is not None and expected in problem


def test_model_yaml_names_the_tensor_and_both_shapes() -> None:
    data = {
        "backend": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [3], "reshape": [2, 2]}],
    }
    with pytest.raises(ConfigError, match=r"inputs\.0: .*tensor 'x': reshape.shape \[2, 2\]"):
        parse_model_config(data, "model.yaml")


@pytest.mark.parametrize(
    ("field", "extra", "expected"),
    [
        ("inputs", {"label_filename": "labels.txt"}, "label_filename is for outputs only"),
        ("outputs", {"format": "NCHW", "dims": [3, 4, 4]}, "format is for inputs only"),
        ("inputs", {"format": "NHWC"}, "format NHWC needs 3 dims"),
        ("outputs", {"label_filename": "../labels.txt"}, "a file name inside the model folder"),
    ],
)
def test_format_and_labels_stay_where_triton_has_them(
    field: str, extra: dict, expected: str
) -> None:
    tensor = {"name": "t", "datatype": "FP32", "dims": [16], **extra}
    with pytest.raises(ConfigError, match=expected):
        parse_model_config({"backend": "onnxruntime", field: [tensor]}, "model.yaml")


def test_reshape_is_a_view_and_fills_variable_dims_in_order() -> None:
    r = Reshape("x", dims=(2, 4, -1, 6), shape=(8, -1, 1, 6))
    batch = np.zeros((5, 2, 4, 7, 6), np.float32)
    model = r.to_model(batch, lead=1)
    assert model.shape == (5, 8, 7, 1, 6) and np.shares_memory(model, batch)
    assert r.to_client(model, lead=1).shape == (5, 2, 4, 7, 6)
    with pytest.raises(ModelExecutionError, match=r"output 'x': the model gave shape \[5, 8, 7, 2"):
        r.to_client(np.zeros((5, 8, 7, 2, 6), np.float32), lead=1)


def _tensors(dims: list[int], reshape: list[int]) -> dict:
    def tensor(name: str) -> TensorConfig:
        return TensorConfig(name=name, datatype="INT32", dims=dims, reshape=reshape)

    return {
        "inputs": [tensor("INPUT0"), tensor("INPUT1")],
        "outputs": [tensor("OUTPUT0"), tensor("OUTPUT1")],
    }


def _version(tmp_path: Path, config: ModelConfig) -> ModelVersion:
    """The add/sub model under ``config``'s backend (ONNX Runtime or OpenVINO)."""
    path = simple_add_sub(tmp_path / "simple" / "1" / "model.onnx").parent
    return ModelVersion("simple", 1, config, path, CpuBudget(2, "test"), None)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_batch_goes_in_as_reshape_and_comes_out_as_dims(tmp_path: Path, backend: str) -> None:
    # The model file takes [N, 16]; clients send [N, 4, 4].
    config = ModelConfig(backend=backend, max_batch_size=4, **_tensors([4, 4], [16]))
    mv = _version(tmp_path, config)
    assert [t.shape for t in mv.metadata_tensors(mv.inputs)] == [(-1, 4, 4)] * 2
    a = np.arange(32, dtype=np.int32).reshape(2, 4, 4)

    async def main() -> None:
        await mv.warmup()  # warm-up samples are in the clients' shape too
        mv.start()
        try:
            inputs = [InputTensor(n, "INT32", a.shape, a) for n in ("INPUT0", "INPUT1")]
            resp = await mv.infer(InferRequest("simple", inputs))
            with pytest.raises(InvalidInput, match=r"expects \[-1, 4, 4\], got \[2, 16\]"):
                flat = a.reshape(2, 16)
                mv.prepare(InferRequest("simple", [InputTensor("INPUT0", "INT32", (2, 16), flat)]))
        finally:
            await mv.close(5)
        assert resp.outputs[0].shape == (2, 4, 4)
        np.testing.assert_array_equal(resp.outputs[0].data, a + a)

    asyncio.run(main())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_reshape_the_model_file_does_not_take_is_refused(tmp_path: Path, backend: str) -> None:
    config = ModelConfig(backend=backend, max_batch_size=4, **_tensors([16], [2, 8]))
    with pytest.raises(ConfigError) as info:
        _version(tmp_path, config)
    message = info.value.message
    assert "inputs[0].reshape: the model file's input 'INPUT0' has shape [16]" in message
    assert "got reshape.shape [2, 8]" in message
