"""Triton's model configuration (``config.pbtxt`` or its JSON form) read into our ``ModelConfig``.

A Triton model repository is served as it is: a model folder with ``config.pbtxt`` and no
``model.yaml`` loads through this mapping (``model.yaml`` wins when both exist). The text is
parsed by protobuf into Triton's own ``ModelConfig`` message (``frameserve.triton_pb``, the
generated module shared with ``api/``, which writes the same message for ``GET .../config``),
so the syntax accepted is exactly Triton's. The message is then mapped field by field.

Nothing is ignored silently: every field set in the message (walked with ``ListFields``, so
proto3 zero values count as unset, as they do for Triton) must be in a supported list, and every
field outside it is refused, all of them named in one error with the file. What cannot be mapped
is refused rather than approximated: Python-backend models (Triton's ``TritonPythonModel`` is
another API than our Python backend), ensembles, sequence batching, GPU instance groups, warm-up
samples we cannot generate. docs/triton-repositories.md lists the mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from frameserve.errors import ConfigError
from frameserve.serving.config import (
    ModelConfig,
    parse_model_config,
)
from frameserve.triton_pb import model_config_pb2 as mc

_PLATFORMS = {"onnxruntime_onnx": "onnxruntime", "openvino": "openvino"}
_BACKENDS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
_TOP_LEVEL = frozenset(
    {
        "name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
        "instance_group", "version_policy", "default_model_filename", "parameters",
        "model_warmup",
    }
)  # fmt: skip
_TENSOR = frozenset({"name", "data_type", "format", "dims", "reshape", "label_filename"})
_FORMATS = {"FORMAT_NCHW": "NCHW", "FORMAT_NHWC": "NHWC"}  # FORMAT_NONE is unset
_BATCHING = frozenset(
    {"preferred_batch_size", "max_queue_delay_microseconds", "priority_levels",
     "default_priority_level", "default_queue_policy"}
)  # fmt: skip
_QUEUE = frozenset(
    {"timeout_action", "default_timeout_microseconds", "allow_timeout_override", "max_queue_size"}
)
_GROUP = frozenset({"name", "kind", "count"})
_WARMUP = frozenset({"name", "batch_size", "inputs", "count"})
_WARMUP_INPUT = frozenset({"data_type", "dims", "zero_data"})
# Triton backend parameters -> (our field, how the string value is read)
_ORT_PARAMETERS = {
    "intra_op_thread_count": "threads",
    "inter_op_thread_count": "onnxruntime.inter_op_threads",
    "execution_mode": "onnxruntime.execution_mode",
}
_OV_PARAMETERS = {
    "PERFORMANCE_HINT": "performance_hint",
    "NUM_STREAMS": "instances (a number) or openvino.properties",
    "INFERENCE_NUM_THREADS": "openvino.properties",
    "COMPILATION_NUM_THREADS": "openvino.properties",
    "HINT_BF16": "precision",
}
# Written by GET /v2/models/{m}/config for settings Triton has no field for (round trip)
_OUR_PARAMETERS = ("device", "threads", "performance_hint", "precision")


class _Problems:
    """Collects every refused field, so one error names them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.items.append(f"{where}: {why}")

    def unsupported(self, message: Message, allowed: Iterable[str], where: str) -> None:
        allowed = set(allowed)
        for fd, _ in message.ListFields():
            if fd.name not in allowed:
                self.add(f"{where}{fd.name}", "not supported by frameserve")


def read_triton_config(path: Path) -> ModelConfig:
    """Read ``<model>/config.pbtxt``; ConfigError names the file, the line or the fields."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    message = mc.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a Triton model configuration: {err}") from None
    config = config_from_triton(message, str(path))
    folder = path.parent.name
    if config.name is not None and config.name != folder:
        raise ConfigError(
            f"{path}: name must equal the folder name {folder!r}, got {config.name!r}"
        )
    return config


def parse_triton_json(data: Any, source: str) -> ModelConfig:
    """Triton's JSON model configuration (``GET .../config`` writes it) as our config."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
    message = mc.ModelConfig()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as err:
        raise ConfigError(f"{source}: not a Triton model configuration: {err}") from None
    return config_from_triton(message, source)


def config_from_triton(message: mc.ModelConfig, source: str) -> ModelConfig:
    """Map Triton's ``ModelConfig`` onto ours, refusing every field we cannot honour."""
    problems = _Problems()
    problems.unsupported(message, _TOP_LEVEL, "")
    data: dict[str, Any] = {"backend": _backend(message, problems)}
    if message.name:
        data["name"] = message.name
    data.update(_tensors(message, problems))
    data["dynamic_batching"] = (
        _dynamic_batching(message.dynamic_batching, problems)
        if message.HasField("dynamic_batching")
        else None  # Triton without dynamic_batching runs each request alone
    )
    if message.HasField("version_policy"):
        data["version_policy"] = _version_policy(message.version_policy)
    if message.default_model_filename:
        data["model_file"] = message.default_model_filename
    gpu = (
        message.parameters["device"].string_value.startswith("GPU")
        if "device" in message.parameters
        else False
    )
    _instance_groups(message.instance_group, gpu, data, problems)
    _parameters(message, data, problems)
    if message.model_warmup:
        data["warmup"] = _warmup(message, problems)
    if problems.items:
        raise ConfigError(f"{source}: " + "; ".join(problems.items))
    return parse_model_config(data, source)


def _backend(message: mc.ModelConfig, problems: _Problems) -> str:
    platform, backend = message.platform, message.backend
    if backend == "python" or platform == "ensemble":
        what = "Python-backend models" if backend == "python" else "ensembles"
        problems.add(
            "backend" if backend == "python" else "platform",
            f"{what} are not supported (frameserve's own Python backend and pipeline.yaml "
            "are other APIs; see docs/triton-repositories.md)",
        )
        return "onnxruntime"  # a placeholder: the problem above fails the mapping
    ours = {m[k] for m, k in ((_PLATFORMS, platform), (_BACKENDS, backend)) if k in m}
    if (platform and platform not in _PLATFORMS) or (backend and backend not in _BACKENDS):
        problems.add(
            "platform/backend",
            f"expected platform {sorted(_PLATFORMS)} or backend {sorted(_BACKENDS)}, "
            f"got platform {platform!r}, backend {backend!r}",
        )
    elif len(ours) != 1:
        problems.add(
            "platform/backend",
            "expected one of platform 'onnxruntime_onnx' or backend 'onnxruntime'/'openvino' "
            f"(Triton's file-name guess is not made), got platform {platform!r}, "
            f"backend {backend!r}",
        )
    return ours.pop() if len(ours) == 1 else "onnxruntime"


def _datatype(value: int) -> str:
    name = mc.DataType.Name(value).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _tensors(message: mc.ModelConfig, problems: _Problems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    declared = bool(message.input or message.output)
    if message.max_batch_size or declared:
        # With tensors declared, Triton reads their dims as full shapes when max_batch_size
        # is 0; with none declared, it completes both from the model file, as we do.
        out["max_batch_size"] = message.max_batch_size
    pairs: tuple[tuple[str, Iterable[Any]], ...] = (
        ("inputs", message.input),
        ("outputs", message.output),
    )
    for field, tensors in pairs:
        rows = []
        for i, t in enumerate(tensors):
            where = f"{field[:-1]}[{i}]."
            problems.unsupported(t, _TENSOR, where)
            row = {"name": t.name, "datatype": _datatype(t.data_type), "dims": list(t.dims)}
            if t.HasField("reshape"):  # present and empty: the model takes a scalar
                row["reshape"] = list(t.reshape.shape)
            if field == "outputs" and t.label_filename:
                row["label_filename"] = t.label_filename
            if field == "inputs" and t.format:
                row["format"] = _FORMATS[mc.ModelInput.Format.Name(t.format)]
            rows.append(row)
        if rows:
            out[field] = rows
    return out


def _dynamic_batching(db: mc.ModelDynamicBatching, problems: _Problems) -> dict[str, Any]:
    problems.unsupported(db, _BATCHING, "dynamic_batching.")
    out: dict[str, Any] = {
        "preferred_batch_sizes": list(db.preferred_batch_size),
        "max_queue_delay_ms": db.max_queue_delay_microseconds / 1000.0,
    }
    if db.priority_levels:
        out["priority_levels"] = db.priority_levels
    if db.default_priority_level:
        out["default_priority_level"] = db.default_priority_level
    queue = db.default_queue_policy
    problems.unsupported(queue, _QUEUE, "dynamic_batching.default_queue_policy.")
    where = "dynamic_batching.default_queue_policy."
    if queue.timeout_action != mc.ModelQueuePolicy.REJECT:
        problems.add(f"{where}timeout_action", "only REJECT is supported (DELAY is not)")
    if queue.max_queue_size:
        out["max_queue_size"] = queue.max_queue_size
    timeout_us = queue.default_timeout_microseconds
    if timeout_us % 1000:
        problems.add(
            f"{where}default_timeout_microseconds",
            f"expected whole milliseconds (a multiple of 1000), got {timeout_us}",
        )
    elif timeout_us:
        out["timeout_ms"] = timeout_us // 1000
    return out


def _version_policy(policy: mc.ModelVersionPolicy) -> Any:
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return "all"
    if which == "specific":
        return {"specific": list(policy.specific.versions)}
    return {"latest": policy.latest.num_versions or 1}


def _instance_groups(
    groups: Iterable[Any], gpu_device: bool, data: dict[str, Any], problems: _Problems
) -> None:
    """CPU (and AUTO, which is CPU here) groups add up to ``instances``; GPU groups are refused
    unless the ``device`` parameter names a GPU (a config we wrote for an OpenVINO GPU model)."""
    count = 0
    kinds = set()
    for i, group in enumerate(groups):
        problems.unsupported(group, _GROUP, f"instance_group[{i}].")
        kinds.add(group.kind)
        count += group.count or 1
    for kind in kinds:
        name = mc.ModelInstanceGroup.Kind.Name(kind)
        if kind == mc.ModelInstanceGroup.KIND_GPU and gpu_device:
            continue
        if kind not in (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO):
            problems.add(
                "instance_group.kind",
                f"expected KIND_CPU or KIND_AUTO, got {name} (frameserve runs ONNX Runtime on "
                "the CPU; an OpenVINO GPU takes model.yaml's device: GPU)",
            )
    if count:
        data["instances"] = count


def _parameters(message: mc.ModelConfig, data: dict[str, Any], problems: _Problems) -> None:
    """Backend parameters onto our settings; unknown keys are refused."""
    params = {k: v.string_value for k, v in message.parameters.items()}
    known = _ORT_PARAMETERS if data["backend"] == "onnxruntime" else _OV_PARAMETERS
    for key, value in sorted(params.items()):
        where = f"parameters[{key!r}]"
        if key in _OUR_PARAMETERS:
            data[key] = value
        elif key not in known:
            problems.add(
                where,
                f"not supported for backend {data['backend']}; expected one of "
                f"{sorted(known) + list(_OUR_PARAMETERS)}",
            )
        elif data["backend"] == "onnxruntime":
            _ort_parameter(key, value, data, problems)
        else:
            _ov_parameter(key, value, data, problems)


def _ort_parameter(key: str, value: str, data: dict[str, Any], problems: _Problems) -> None:
    if key == "execution_mode":
        modes = {"0": "sequential", "1": "parallel"}
        if value not in modes:
            problems.add(f"parameters[{key!r}]", f"expected '0' or '1', got {value!r}")
        else:
            data.setdefault("onnxruntime", {})["execution_mode"] = modes[value]
        return
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        # Triton's 0 means "ONNX Runtime's default": leave the parameter out for that.
        problems.add(f"parameters[{key!r}]", f"expected a positive integer, got {value!r}")
    elif key == "intra_op_thread_count":
        data["threads"] = int(value)
    else:
        data.setdefault("onnxruntime", {})["inter_op_threads"] = int(value)


def _ov_parameter(key: str, value: str, data: dict[str, Any], problems: _Problems) -> None:
    where = f"parameters[{key!r}]"
    properties = data.setdefault("openvino", {}).setdefault("properties", {})
    if key == "PERFORMANCE_HINT":
        data["performance_hint"] = value.upper()
    elif key == "HINT_BF16":
        if value.upper() != "YES":
            problems.add(where, f"expected 'YES', got {value!r}")
        data["precision"] = "bf16"
    elif key == "NUM_STREAMS" and value.isascii() and value.isdigit():
        groups = data.get("instances")
        if groups not in (None, 1, int(value)):
            problems.add(
                where,
                f"frameserve runs one compiled model with NUM_STREAMS streams (= instances); "
                f"expected instance_group count 1 or {value}, got {groups}",
            )
        data["instances"] = int(value)
    else:
        properties[key] = value


def _warmup(message: mc.ModelConfig, problems: _Problems) -> dict[str, Any]:
    """One zero-data sample whose shapes are the ones our warm-up generates (variable dims
    as 1) maps onto ``warmup``; random data, data files and other shapes are refused."""
    samples = message.model_warmup
    if len(samples) != 1:
        problems.add("model_warmup", f"expected one sample, got {len(samples)}")
    sample = samples[0]
    problems.unsupported(sample, _WARMUP, "model_warmup[0].")
    declared = {t.name: t for t in message.input}
    if set(sample.inputs) != set(declared):
        problems.add(
            "model_warmup[0].inputs",
            f"expected the declared inputs {sorted(declared)}, got {sorted(sample.inputs)}",
        )
    for name, given in sorted(sample.inputs.items()):
        where = f"model_warmup[0].inputs[{name!r}]"
        problems.unsupported(given, _WARMUP_INPUT, f"{where}.")
        if not given.zero_data:
            problems.add(where, "only zero_data samples are supported")
        tensor = declared.get(name)
        if tensor is None:
            continue
        expected = [1 if d == -1 else d for d in tensor.dims]
        if given.data_type != tensor.data_type or list(given.dims) != expected:
            problems.add(
                where,
                f"expected data_type {mc.DataType.Name(tensor.data_type)} and dims {expected} "
                "(frameserve warms up with 1 for variable dims), got "
                f"{mc.DataType.Name(given.data_type)} {list(given.dims)}",
            )
    return {"count": sample.count or 1, "batch_size": sample.batch_size or 1}
