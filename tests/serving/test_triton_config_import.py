"""Triton's config.pbtxt (and its JSON form) mapped onto our ModelConfig, and what is refused.

The mapping tests are pure; the repository tests load real ONNX models with ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError
from frameserve.serving.config import (
    DynamicBatching,
    ModelConfig,
    VersionPolicy,
    WarmupConfig,
    read_folder_config,
)
from frameserve.serving.server import InferenceServer, ServerSettings, _override_config
from frameserve.serving.triton_config import parse_triton_json, read_triton_config
from frameserve.serving.types import InferRequest, InputTensor
from frameserve.tools.example_models import write_model_yaml

from models import simple_add_sub

SIMPLE = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest: { num_versions: 2 } }
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 500
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 250000 }
}
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
model_warmup [
  {
    name: "zeros"
    batch_size: 2
    count: 3
    inputs { key: "INPUT0" value: { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } }
    inputs { key: "INPUT1" value: { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } }
  }
]
"""


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.pbtxt"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str, name: str = "m") -> str:
    with pytest.raises(ConfigError) as info:
        read_triton_config(write(tmp_path / name, text))
    return info.value.message


def test_a_full_onnxruntime_config_maps_field_by_field(tmp_path: Path) -> None:
    config = read_triton_config(write(tmp_path / "simple", SIMPLE))
    assert config.backend == "onnxruntime"
    assert config.name == "simple"
    assert config.max_batch_size == 8
    assert [(t.name, t.datatype, t.dims) for t in config.inputs or []] == [
        ("INPUT0", "INT32", [16]),
        ("INPUT1", "INT32", [16]),
    ]
    assert [t.name for t in config.outputs or []] == ["OUTPUT0", "OUTPUT1"]
    assert config.instances == 2
    assert config.threads == 1
    assert config.onnxruntime.inter_op_threads == 1
    assert config.version_policy == VersionPolicy(kind="latest", latest=2)
    assert config.dynamic_batching == DynamicBatching(
        max_queue_delay_ms=0.5,
        preferred_batch_sizes=[4, 8],
        max_queue_size=64,
        timeout_ms=250,
        priority_levels=2,
        default_priority_level=2,
    )
    assert config.warmup == WarmupConfig(count=3, batch_size=2)


def test_a_minimal_config_leaves_the_rest_to_the_model_file(tmp_path: Path) -> None:
    config = read_triton_config(write(tmp_path / "m", 'backend: "onnxruntime"'))
    # Triton completes max_batch_size and the tensors from the file; so do we
    assert config.max_batch_size is None and config.inputs is None
    # ... but without a dynamic_batching block Triton runs each request alone
    assert "dynamic_batching" in config.model_fields_set and config.dynamic_batching is None
    assert config.version_policy == VersionPolicy()


def test_openvino_backend_parameters(tmp_path: Path) -> None:
    config = read_triton_config(
        write(
            tmp_path / "m",
            """
            backend: "openvino"
            default_model_filename: "model.onnx"
            instance_group [ { count: 3 kind: KIND_CPU } ]
            parameters { key: "NUM_STREAMS" value: { string_value: "3" } }
            parameters { key: "PERFORMANCE_HINT" value: { string_value: "LATENCY" } }
            parameters { key: "INFERENCE_NUM_THREADS" value: { string_value: "2" } }
            parameters { key: "HINT_BF16" value: { string_value: "YES" } }
            """,
        )
    )
    assert config.backend == "openvino" and config.model_file == "model.onnx"
    assert config.instances == 3 and config.performance_hint == "LATENCY"
    assert config.precision == "bf16"
    assert config.openvino.properties == {"INFERENCE_NUM_THREADS": "2"}


def test_unsupported_fields_are_named_with_the_file(tmp_path: Path) -> None:
    message = refusal(
        tmp_path,
        """
        platform: "onnxruntime_onnx"
        max_batch_size: 4
        input [ { name: "x" data_type: TYPE_FP32 allow_ragged_batch: true dims: [ 3 ]
                  optional: true } ]
        model_transaction_policy { decoupled: true }
        response_cache { enable: true }
        dynamic_batching { preserve_ordering: true
                           default_queue_policy { timeout_action: DELAY } }
        parameters { key: "enable_mem_arena" value: { string_value: "1" } }
        """,
    )
    assert str(tmp_path / "m" / "config.pbtxt") in message
    for field in (
        "model_transaction_policy: not supported",
        "response_cache: not supported",
        "input[0].allow_ragged_batch: not supported",
        "input[0].optional: not supported",
        "dynamic_batching.preserve_ordering: not supported",
        "timeout_action: only REJECT",
        "parameters['enable_mem_arena']: not supported for backend onnxruntime",
    ):
        assert field in message, message


@pytest.mark.parametrize(
    "text,expected",
    [
        ('backend: "python"', "backend: Python-backend models are not supported"),
        ('platform: "ensemble"', "platform: ensembles are not supported"),
        ('backend: "onnxruntime" sequence_batching { }', "sequence_batching: not supported"),
        ('platform: "tensorrt_plan"', "expected platform ['onnxruntime_onnx', 'openvino']"),
        ("max_batch_size: 4", "got platform '', backend ''"),
        (
            'backend: "onnxruntime" instance_group [ { kind: KIND_GPU gpus: [ 0 ] } ]',
            "instance_group[0].gpus: not supported",
        ),
        (
            'backend: "onnxruntime" instance_group [ { kind: KIND_GPU } ]',
            "expected KIND_CPU or KIND_AUTO, got KIND_GPU",
        ),
        (
            'backend: "onnxruntime" dynamic_batching { default_queue_policy '
            "{ default_timeout_microseconds: 1500 } }",
            "expected whole milliseconds (a multiple of 1000), got 1500",
        ),
        (
            'backend: "openvino" instance_group [ { count: 2 } ] '
            'parameters { key: "NUM_STREAMS" value: { string_value: "4" } }',
            "expected instance_group count 1 or 4, got 2",
        ),
        (
            'backend: "onnxruntime" '
            'parameters { key: "intra_op_thread_count" value: { string_value: "0" } }',
            "expected a positive integer, got '0'",
        ),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ] '
            'model_warmup [ { batch_size: 1 inputs { key: "x" value: '
            "{ data_type: TYPE_FP32 dims: [ 7 ] random_data: true } } } ]",
            "only zero_data samples are supported",
        ),
        (
            'backend: "onnxruntime" input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ] '
            'model_warmup [ { batch_size: 1 inputs { key: "x" value: '
            "{ data_type: TYPE_FP32 dims: [ 7 ] zero_data: true } } } ]",
            "expected data_type TYPE_FP32 and dims [1]",
        ),
        ('name: "other" backend: "onnxruntime"', "name must equal the folder name 'm'"),
        ("backend: onnxruntime max_batch_size: x", "not a Triton model configuration: 1:"),
    ],
)
def test_refusals_say_what_and_why(tmp_path: Path, text: str, expected: str) -> None:
    message = refusal(tmp_path, text)
    assert expected in message, message


def test_model_yaml_wins_over_config_pbtxt(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write(folder, 'backend: "onnxruntime" max_batch_size: 2')
    assert read_folder_config(folder).max_batch_size == 2
    write_model_yaml(folder, {"backend": "onnxruntime", "max_batch_size": 6})
    assert read_folder_config(folder).max_batch_size == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="expected model.yaml or config.pbtxt, found neither"):
        read_folder_config(empty)


def test_load_parameters_take_ours_first_then_triton_json() -> None:
    ours = _override_config({"backend": "onnxruntime", "max_batch_size": 2})
    assert ours == ModelConfig(backend="onnxruntime", max_batch_size=2)
    triton = _override_config({"platform": "onnxruntime_onnx", "max_batch_size": "2"})
    assert triton.backend == "onnxruntime" and triton.max_batch_size == 2
    with pytest.raises(ConfigError) as info:
        _override_config({"backend": "tensorflow", "max_batch_size": 2})
    message = info.value.message
    assert "neither a frameserve model config (parameters.config: backend:" in message
    assert "nor Triton's JSON model configuration (parameters.config: platform/backend" in message


def _simple_request(n: int) -> InferRequest:
    a = np.arange(16 * n, dtype=np.int32).reshape(n, 16)
    return InferRequest(
        "simple",
        [InputTensor("INPUT0", "INT32", a.shape, a), InputTensor("INPUT1", "INT32", a.shape, a)],
    )


def test_a_triton_folder_serves_and_polling_notices_edits(tmp_path: Path) -> None:
    """model file under Triton's default_model_filename; an edit of config.pbtxt reloads."""
    repo = tmp_path / "models"
    folder = repo / "simple"
    simple_add_sub(folder / "1" / "simple.onnx")
    path = write(
        folder,
        SIMPLE.replace(
            "max_batch_size: 8", 'default_model_filename: "simple.onnx"\nmax_batch_size: 8'
        ),
    )

    async def main() -> None:
        settings = ServerSettings(repository=repo, budget=CpuBudget(2, "test"), exit_timeout_s=5.0)
        server = InferenceServer(settings)
        await asyncio.wait_for(server.start(), 30)
        try:
            resp = await asyncio.wait_for(server.infer(_simple_request(2)), 10)
            assert resp.outputs[0].data.tolist()[1][:2] == [32, 34]
            assert server.repository.get("simple").instances == 2
            path.write_text(path.read_text().replace("count: 2", "count: 1"))
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            await asyncio.wait_for(server.repository.poll(), 30)
            assert server.repository.get("simple").instances == 1
        finally:
            await asyncio.wait_for(server.drain(), 10)

    asyncio.run(main())


DENSENET = """
name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [ { name: "data_0" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 224, 224 ]
          reshape { shape: [ 1, 3, 224, 224 ] } } ]
output [ { name: "fc6_1" data_type: TYPE_FP32 dims: [ 1000 ]
           reshape { shape: [ 1, 1000, 1, 1 ] } label_filename: "densenet_labels.txt" } ]
"""


def test_reshape_format_and_labels_map_onto_tensors(tmp_path: Path) -> None:
    config = read_triton_config(write(tmp_path / "densenet_onnx", DENSENET))
    assert config.inputs is not None and config.outputs is not None
    (data,), (fc,) = config.inputs, config.outputs
    assert (data.dims, data.reshape, data.format) == ([3, 224, 224], [1, 3, 224, 224], "NCHW")
    assert (fc.dims, fc.reshape, fc.label_filename) == (
        [1000],
        [1, 1000, 1, 1],
        "densenet_labels.txt",
    )
    assert data.label_filename is None and fc.format is None


def test_an_empty_reshape_is_a_scalar_in_text_and_json(tmp_path: Path) -> None:
    text = """
    platform: "onnxruntime_onnx"
    max_batch_size: 4
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } } ]
    """
    assert read_triton_config(write(tmp_path / "m", text)).inputs[0].reshape == []  # type: ignore[index]
    json_config = {
        "platform": "onnxruntime_onnx",
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1], "reshape": {"shape": []}}],
    }
    assert parse_triton_json(json_config, "load").inputs[0].reshape == []  # type: ignore[index]


def test_a_reshape_of_another_size_is_refused_with_the_file(tmp_path: Path) -> None:
    message = refusal(
        tmp_path, DENSENET.replace("[ 1, 1000, 1, 1 ]", "[ 1, 999, 1, 1 ]"), "densenet_onnx"
    )
    assert str(tmp_path / "densenet_onnx" / "config.pbtxt") in message
    assert "outputs.0: Value error, tensor 'fc6_1': reshape.shape [1, 999, 1, 1]" in message
    assert "dims hold 1000, reshape.shape holds 999" in message
