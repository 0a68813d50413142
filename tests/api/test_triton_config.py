"""Triton's ModelConfig and statistics messages as frameserve builds them.

``model_config_proto`` reads a ``ModelVersion``; a real one needs a loaded backend, so these tests
use a stand-in object with the same attributes, built around a real ``ModelConfig`` parsed from
model.yaml data. Statistics come from real ``VersionStats`` objects. Messages are read back with
tritonclient's own protobuf classes, as clients do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2 as client_mc
from tritonclient.grpc import service_pb2 as client_pb

from frameserve.api.triton_config import (
    data_type,
    model_config_proto,
    model_statistics_proto,
    triton_json,
)
from frameserve.serving.config import DynamicBatching, ModelConfig, TensorConfig, parse_model_config
from frameserve.serving.stats import VersionStats
from frameserve.triton_pb import model_config_pb2 as mc


@dataclass
class StandInVersion:
    """Stand-in for ``frameserve.serving.model.ModelVersion`` (which needs a loaded backend):
    the resolved attributes that ``model_config_proto`` reads, and nothing else."""

    name: str
    version: int
    config: ModelConfig
    platform: str
    backend_name: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instances: int
    dynamic_batching: DynamicBatching | None


def stand_in(yaml_data: dict[str, Any], **resolved: Any) -> StandInVersion:
    config = parse_model_config(yaml_data, "model.yaml")
    fields: dict[str, Any] = {
        "name": "faces",
        "version": 1,
        "config": config,
        "platform": "openvino",
        "backend_name": config.backend,
        "max_batch_size": config.max_batch_size or 0,
        "inputs": tuple(config.inputs or ()),
        "outputs": tuple(config.outputs or ()),
        "instances": config.instances or 1,
        "dynamic_batching": config.dynamic_batching,
    }
    fields.update(resolved)
    return StandInVersion(**fields)


FACES = {
    "backend": "openvino",
    "max_batch_size": 8,
    "inputs": [{"name": "image", "datatype": "FP32", "dims": [3, 192, -1]}],
    "outputs": [
        {"name": "boxes", "datatype": "FP32", "dims": [-1, 4]},
        {"name": "labels", "datatype": "BYTES", "dims": [-1]},
    ],
    "dynamic_batching": {
        "max_queue_delay_ms": 2.5,
        "preferred_batch_sizes": [4, 8],
        "max_queue_size": 64,
        "timeout_ms": 40,
        "priority_levels": 3,
        "default_priority_level": 2,
    },
    "instances": 2,
    "threads": 4,
    "performance_hint": "THROUGHPUT",
    "parameters": {"score_threshold": 0.5, "nms": True},
}


def as_client_config(message: mc.ModelConfig) -> client_mc.ModelConfig:
    """The message as tritonclient parses it off the wire."""
    return client_mc.ModelConfig.FromString(message.SerializeToString())


def test_config_has_what_perf_analyzer_reads():
    config = as_client_config(model_config_proto(stand_in(FACES)))

    assert (config.name, config.platform, config.backend) == ("faces", "openvino", "openvino")
    assert config.max_batch_size == 8
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == (
        "image",
        client_mc.TYPE_FP32,
        [3, 192, -1],
    )
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("boxes", client_mc.TYPE_FP32, [-1, 4]),
        ("labels", client_mc.TYPE_STRING, [-1]),
    ]
    (group,) = config.instance_group
    assert (group.name, group.kind, group.count) == ("faces", group.KIND_CPU, 2)
    assert not config.HasField("sequence_batching")
    assert not config.model_transaction_policy.decoupled


def test_dynamic_batching_in_triton_units():
    db = as_client_config(model_config_proto(stand_in(FACES))).dynamic_batching

    assert list(db.preferred_batch_size) == [4, 8]
    assert db.max_queue_delay_microseconds == 2500
    assert (db.priority_levels, db.default_priority_level) == (3, 2)
    queue = db.default_queue_policy
    assert (queue.max_queue_size, queue.default_timeout_microseconds) == (64, 40_000)
    assert queue.allow_timeout_override
    assert queue.timeout_action == queue.REJECT


def test_defaults_of_dynamic_batching():
    version = stand_in({"backend": "onnxruntime", "max_batch_size": 4, "dynamic_batching": {}})
    db = model_config_proto(version).dynamic_batching

    assert (db.max_queue_delay_microseconds, list(db.preferred_batch_size)) == (0, [])
    assert (db.priority_levels, db.default_priority_level) == (1, 1)
    assert db.default_queue_policy.max_queue_size == 1024
    assert db.default_queue_policy.default_timeout_microseconds == 0


def test_no_dynamic_batching_section_without_a_batcher():
    config = model_config_proto(stand_in({"backend": "onnxruntime", "max_batch_size": 0}))
    assert not config.HasField("dynamic_batching")
    assert config.max_batch_size == 0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"latest": 2}, {"latest": {"num_versions": 2}}),
        ("all", {"all": {}}),
        ({"specific": [1, 3]}, {"specific": {"versions": [1, 3]}}),
    ],
)
def test_version_policy(policy: Any, expected: dict):
    version = stand_in({"backend": "python", "version_policy": policy})
    assert triton_json(model_config_proto(version))["version_policy"] == expected


@pytest.mark.parametrize(
    ("device", "kind", "gpus"),
    [
        ("CPU", mc.ModelInstanceGroup.KIND_CPU, []),
        ("AUTO", mc.ModelInstanceGroup.KIND_CPU, []),
        ("GPU", mc.ModelInstanceGroup.KIND_GPU, [0]),
        ("GPU.1", mc.ModelInstanceGroup.KIND_GPU, [1]),
    ],
)
def test_instance_group_kind_follows_the_device(device: str, kind: int, gpus: list[int]):
    version = stand_in({"backend": "openvino", "device": device}, instances=3)
    (group,) = model_config_proto(version).instance_group
    assert (group.kind, list(group.gpus), group.count) == (kind, gpus, 3)


def test_parameters_hold_model_yaml_and_runtime_settings():
    params = model_config_proto(stand_in(FACES)).parameters
    values = {k: v.string_value for k, v in params.items()}
    assert values == {
        "score_threshold": "0.5",
        "nms": "true",
        "device": "CPU",
        "threads": "4",
        "performance_hint": "THROUGHPUT",
    }


@pytest.mark.parametrize(
    ("datatype", "expected"),
    [("FP32", "TYPE_FP32"), ("BYTES", "TYPE_STRING"), ("BF16", "TYPE_BF16"), ("BOOL", "TYPE_BOOL")],
)
def test_data_type_names(datatype: str, expected: str):
    assert mc.DataType.Name(data_type(datatype)) == expected


def test_config_json_is_written_as_triton_does():
    rendered = triton_json(model_config_proto(stand_in(FACES)))

    json.dumps(rendered)  # plain JSON types only
    assert rendered["input"][0]["dims"] == [3, 192, -1]  # numbers, not strings
    assert rendered["input"][0]["data_type"] == "TYPE_FP32"
    assert rendered["dynamic_batching"]["max_queue_delay_microseconds"] == 2500
    assert rendered["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 64
    assert rendered["instance_group"][0]["kind"] == "KIND_CPU"
    assert rendered["parameters"]["threads"] == {"string_value": "4"}
    assert rendered["input"][0]["optional"] is False  # zero values are written too


def test_json_numbers_inside_maps_keyed_by_integers():
    config = mc.ModelConfig(name="m")
    config.dynamic_batching.priority_queue_policy[2].default_timeout_microseconds = 7
    rendered = triton_json(config)["dynamic_batching"]["priority_queue_policy"]
    assert rendered["2"]["default_timeout_microseconds"] == 7


# -- statistics ---------------------------------------------------------------------------------
def busy_stats() -> VersionStats:
    stats = VersionStats("faces", "1", None)
    stats.record_success(total_ns=5_000, queue_ns=1_000)
    stats.record_success(total_ns=7_000, queue_ns=2_000)
    stats.record_failure(total_ns=300, reason="timeout")
    stats.record_batch(items=4, requests=2, input_ns=10, infer_ns=200, output_ns=30)
    stats.record_batch(items=1, requests=1, input_ns=5, infer_ns=90, output_ns=7)
    return stats


def test_statistics_map_to_triton_fields():
    response = client_pb.ModelStatisticsResponse.FromString(
        model_statistics_proto([busy_stats()]).SerializeToString()
    )

    (model,) = response.model_stats
    assert (model.name, model.version) == ("faces", "1")
    assert (model.inference_count, model.execution_count) == (5, 2)
    assert model.last_inference > 0
    infer = model.inference_stats
    assert (infer.success.count, infer.success.ns) == (2, 12_000)
    assert (infer.fail.count, infer.fail.ns) == (1, 300)
    assert (infer.queue.count, infer.queue.ns) == (2, 3_000)
    # as in Triton, each request of a batch carries the batch's whole duration: 2 x 10 + 5, ...
    assert (infer.compute_input.count, infer.compute_input.ns) == (3, 25)
    assert (infer.compute_infer.count, infer.compute_infer.ns) == (3, 490)
    assert (infer.compute_output.count, infer.compute_output.ns) == (3, 67)
    assert infer.HasField("cache_hit") and infer.cache_hit.count == 0
    assert [b.batch_size for b in model.batch_stats] == [1, 4]
    four = model.batch_stats[1]
    assert (four.compute_infer.count, four.compute_infer.ns) == (1, 200)


def test_statistics_of_several_versions_and_of_none():
    idle = VersionStats("faces", "2", None)
    response = model_statistics_proto([busy_stats(), idle])
    assert [(m.name, m.version) for m in response.model_stats] == [("faces", "1"), ("faces", "2")]
    assert len(model_statistics_proto([]).model_stats) == 0


def test_statistics_json_is_written_as_triton_does():
    idle = VersionStats("faces", "2", None)
    (busy, quiet) = triton_json(model_statistics_proto([busy_stats(), idle]))["model_stats"]

    json.dumps(busy)
    assert busy["inference_count"] == 5 and isinstance(busy["last_inference"], int)
    assert busy["inference_stats"]["success"] == {"count": 2, "ns": 12_000}
    assert busy["batch_stats"][0] == {
        "batch_size": 1,
        "compute_input": {"count": 1, "ns": 5},
        "compute_infer": {"count": 1, "ns": 90},
        "compute_output": {"count": 1, "ns": 7},
    }
    # a version that never ran still reports every counter, as zeros
    assert quiet["inference_count"] == 0 and quiet["batch_stats"] == []
    assert quiet["inference_stats"]["fail"] == {"count": 0, "ns": 0}
    assert quiet["inference_stats"]["cache_miss"] == {"count": 0, "ns": 0}
