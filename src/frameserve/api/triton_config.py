"""Triton's model-configuration and statistics messages, built from what the server holds.

``perf_analyzer``, ``tritonclient`` and model_analyzer read these (batch size, tensor types,
queue settings), so the fields keep Triton's meaning. Both front ends use the same protos: gRPC
returns them as they are; HTTP renders them with ``triton_json``, which writes 64-bit integers
as JSON numbers the way Triton's own HTTP server does (protobuf's JSON mapping writes them as
strings, which Triton's C++ clients cannot read).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.serving.config import DynamicBatching, TensorConfig, VersionPolicy
from frameserve.serving.stats import Duration, VersionStats
from frameserve.triton_pb import model_config_pb2 as mc

if TYPE_CHECKING:
    from frameserve.serving.model import ModelVersion

_GPU_DEVICE = re.compile(r"^GPU(?:\.(\d+))?$")


def data_type(datatype: str) -> int:
    """Triton's ``DataType`` enum value for a v2 datatype (``FP32`` -> ``TYPE_FP32``)."""
    return mc.DataType.Value("TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}")


def _version_policy(policy: VersionPolicy) -> mc.ModelVersionPolicy:
    if policy.kind == "all":
        return mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All())
    if policy.kind == "specific":
        return mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=list(policy.specific))
        )
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=policy.latest))


def _dynamic_batching(db: DynamicBatching) -> mc.ModelDynamicBatching:
    queue = mc.ModelQueuePolicy(
        timeout_action=mc.ModelQueuePolicy.REJECT,
        default_timeout_microseconds=(db.timeout_ms or 0) * 1000,
        allow_timeout_override=True,  # a request's own ``timeout`` parameter wins
        max_queue_size=db.max_queue_size,
    )
    return mc.ModelDynamicBatching(
        preferred_batch_size=db.preferred_batch_sizes,
        max_queue_delay_microseconds=round(db.max_queue_delay_ms * 1000),
        priority_levels=db.priority_levels,
        default_priority_level=db.default_priority_level or 1,
        default_queue_policy=queue,
    )


def _instance_group(name: str, device: str, count: int) -> mc.ModelInstanceGroup:
    gpu = _GPU_DEVICE.match(device)
    if gpu is None:
        return mc.ModelInstanceGroup(name=name, kind=mc.ModelInstanceGroup.KIND_CPU, count=count)
    return mc.ModelInstanceGroup(
        name=name,
        kind=mc.ModelInstanceGroup.KIND_GPU,
        count=count,
        gpus=[int(gpu.group(1) or 0)],
    )


def _parameters(mv: ModelVersion) -> dict[str, str]:
    """``parameters`` of model.yaml, then the runtime settings Triton has no field for."""
    config = mv.config
    out = {
        k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in config.parameters.items()
    }
    runtime = {
        "device": config.device,
        "threads": config.threads,
        "performance_hint": config.performance_hint,
        "precision": config.precision,
    }
    for key, value in runtime.items():
        if value is not None:
            out.setdefault(key, str(value))
    return out


def _tensor(cls: type[Any], t: TensorConfig) -> Any:
    """One tensor: ``dims`` as clients see them, ``reshape`` as the model file takes them."""
    tensor = cls(name=t.name, data_type=data_type(t.datatype), dims=t.dims)
    if t.reshape is not None:
        tensor.reshape.shape.extend(t.reshape)
        tensor.reshape.SetInParent()  # an empty shape (a scalar) is still a reshape
    if t.label_filename is not None:
        tensor.label_filename = t.label_filename
    if t.format is not None:
        tensor.format = mc.ModelInput.Format.Value(f"FORMAT_{t.format}")
    return tensor


def model_config_proto(mv: ModelVersion) -> mc.ModelConfig:
    """Triton's ``ModelConfig`` for a loaded version (dims exclude the batch dimension)."""
    config = mc.ModelConfig(
        name=mv.name,
        platform=mv.platform,
        backend=mv.backend_name,
        max_batch_size=mv.max_batch_size,
        input=[_tensor(mc.ModelInput, t) for t in mv.inputs],
        output=[_tensor(mc.ModelOutput, t) for t in mv.outputs],
        version_policy=_version_policy(mv.config.version_policy),
        instance_group=[_instance_group(mv.name, mv.config.device, mv.instances)],
    )
    if mv.dynamic_batching is not None:
        config.dynamic_batching.CopyFrom(_dynamic_batching(mv.dynamic_batching))
    for key, value in _parameters(mv).items():
        config.parameters[key].string_value = value
    return config


def _set_duration(target: pb.StatisticDuration, source: Duration) -> None:
    target.count = source.count
    target.ns = source.ns


def _model_statistics(stats: VersionStats) -> pb.ModelStatistics:
    out = pb.ModelStatistics(
        name=stats.model,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    infer = out.inference_stats
    for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        _set_duration(getattr(infer, name), getattr(stats, name))
    infer.cache_hit.SetInParent()  # no response cache: present and zero, as in Triton
    infer.cache_miss.SetInParent()
    for size in sorted(stats.batches):
        batch = stats.batches[size]
        entry = out.batch_stats.add(batch_size=size)
        _set_duration(entry.compute_input, batch.compute_input)
        _set_duration(entry.compute_infer, batch.compute_infer)
        _set_duration(entry.compute_output, batch.compute_output)
    return out


def model_statistics_proto(stats: Iterable[VersionStats]) -> pb.ModelStatisticsResponse:
    """Triton's statistics-extension response for the given versions, in the given order."""
    return pb.ModelStatisticsResponse(model_stats=[_model_statistics(s) for s in stats])


_INT64_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _numbers(message: Message, rendered: dict[str, Any]) -> dict[str, Any]:
    """Turn the 64-bit integers protobuf's JSON mapping wrote as strings back into ints."""
    fd: Any  # protobuf's descriptor stubs differ between the upb and Python implementations
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in rendered:
            continue
        value = rendered[fd.name]
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            # Triton's maps hold strings or messages; none maps to a bare 64-bit integer.
            if fd.message_type.fields_by_name["value"].message_type is not None:
                source_map = getattr(message, fd.name)
                for key in value:
                    _numbers(source_map[_map_key(fd, key)], value[key])
        elif fd.message_type is not None:
            sources = getattr(message, fd.name)
            if fd.is_repeated:
                for src, item in zip(sources, value, strict=True):
                    _numbers(src, item)
            else:
                _numbers(sources, value)
        elif fd.type in _INT64_TYPES:
            rendered[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
    return rendered


def _map_key(fd: Any, key: str) -> Any:
    key_fd = fd.message_type.fields_by_name["key"]
    return key if key_fd.type == FieldDescriptor.TYPE_STRING else int(key)


def triton_json(message: Message) -> dict[str, Any]:
    """A message as Triton's HTTP server writes it: proto field names, every scalar field
    (zeros included), enums by name and 64-bit integers as JSON numbers."""
    rendered = MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return _numbers(message, rendered)
