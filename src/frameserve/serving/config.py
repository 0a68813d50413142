"""``model.yaml``: parsed once into strict pydantic models (``extra="forbid"``).

The minimum is ``backend: openvino|onnxruntime|python``. ``inputs``/``outputs`` may be omitted;
they are then read from the model file. As in Triton, ``dims`` exclude the batch dimension when
``max_batch_size`` > 0, and are what clients send; a tensor's ``reshape`` is the model file's
shape when that differs (``serving/reshape.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from frameserve.datatypes import DATATYPES
from frameserve.errors import ConfigError
from frameserve.processing.spec import PostprocessSpec, PreprocessSpec
from frameserve.serving.reshape import reshape_problem

CONFIG_FILE = "model.yaml"
TRITON_CONFIG_FILE = "config.pbtxt"  # a Triton model folder, read by serving/triton_config.py
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
Backend = Literal["openvino", "onnxruntime", "python"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorConfig(_Strict):
    """One input or output: its name, v2 datatype and dims (``-1`` = any size)."""

    name: Annotated[str, Field(min_length=1)]
    datatype: str
    dims: list[Annotated[int, Field(ge=-1)]]
    reshape: list[Annotated[int, Field(ge=-1)]] | None = Field(
        default=None,
        description="the model file's shape when it differs from dims (Triton's reshape.shape, "
        "batch dim excluded); clients see dims; [] is a scalar",
    )
    format: Literal["NCHW", "NHWC"] | None = Field(
        default=None,
        description="inputs: the image layout clients send (Triton's format; informative, "
        "for clients such as Triton's image_client); needs three dims",
    )
    label_filename: str | None = Field(
        default=None,
        description="outputs: a text file in the model folder, one class label a line, for "
        "classification requests (Triton's label_filename)",
    )

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, v: str) -> str:
        if v not in DATATYPES:
            raise ValueError(f"expected one of {sorted(DATATYPES)}, got {v!r}")
        return v

    @field_validator("label_filename")
    @classmethod
    def _plain_label_file(cls, v: str | None) -> str | None:
        if v is not None and (v in ("", ".", "..") or "/" in v or "\\" in v):
            raise ValueError(f"expected a file name inside the model folder, got {v!r}")
        return v

    @model_validator(mode="after")
    def _reshape_fits(self) -> TensorConfig:
        if self.format is not None and len(self.dims) != 3:
            raise ValueError(
                f"tensor {self.name!r}: format {self.format} needs 3 dims (batch dim "
                f"excluded), got {self.dims}"
            )
        if self.reshape is not None:
            problem = reshape_problem(self.dims, self.reshape)
            if problem is not None:
                raise ValueError(f"tensor {self.name!r}: {problem}")
        return self


class DynamicBatching(_Strict):
    """How the scheduler forms batches (Triton's ``dynamic_batching``)."""

    max_queue_delay_ms: NonNegativeFloat = 0.0
    preferred_batch_sizes: list[PositiveInt] = []
    max_queue_size: PositiveInt = 1024
    timeout_ms: PositiveInt | None = None
    priority_levels: Annotated[int, Field(ge=1, le=16)] = 1
    default_priority_level: PositiveInt | None = None

    @model_validator(mode="after")
    def _priority_in_range(self) -> DynamicBatching:
        level = self.default_priority_level
        if level is not None and level > self.priority_levels:
            raise ValueError(
                f"default_priority_level must be within 1..{self.priority_levels}, got {level}"
            )
        return self


class VersionPolicy(_Strict):
    """Which numbered versions to serve: ``{latest: N}`` | ``all`` | ``{specific: [..]}``."""

    kind: Literal["latest", "all", "specific"] = "latest"
    latest: Annotated[int, Field(strict=True, gt=0)] = 1
    specific: tuple[Annotated[int, Field(strict=True, gt=0)], ...] = ()

    def describe(self) -> str:
        """The policy as model.yaml writes it."""
        if self.kind == "all":
            return "all"
        if self.kind == "specific":
            return f"{{specific: {list(self.specific)}}}"
        return f"{{latest: {self.latest}}}"

    def select(self, available: list[int]) -> list[int]:
        """The versions of ``available`` this policy serves, ascending."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.specific]
        return ordered[-self.latest :]


def _parse_version_policy(raw: Any) -> Any:
    if isinstance(raw, VersionPolicy) or raw is None:
        return raw if raw is not None else VersionPolicy()
    if raw == "all" or raw == {"all": {}} or raw == {"all": None}:
        return {"kind": "all"}
    if isinstance(raw, dict) and len(raw) == 1:
        key, value = next(iter(raw.items()))
        if key == "latest":
            if isinstance(value, dict):  # Triton's spelling: {latest: {num_versions: N}}
                value = value.get("num_versions")
            return {"kind": "latest", "latest": value}
        if key == "specific":
            if isinstance(value, dict):  # Triton's spelling: {specific: {versions: [..]}}
                value = value.get("versions")
            if not isinstance(value, list) or not value:
                raise ValueError(f"specific expects a non-empty list of versions, got {value!r}")
            return {"kind": "specific", "specific": tuple(value)}
    raise ValueError(f"expected {{latest: N}}, 'all' or {{specific: [versions]}}, got {raw!r}")


class WarmupConfig(_Strict):
    """Warm-up inferences run before a version takes traffic."""

    count: NonNegativeInt = 1
    batch_size: PositiveInt = 1
    file: str | None = Field(
        default=None, description="an .npz of sample inputs, relative to the model folder"
    )


class OnnxRuntimeOptions(_Strict):
    providers: list[str] = ["CPUExecutionProvider"]
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    inter_op_threads: PositiveInt | None = None
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"


class OpenVinoOptions(_Strict):
    enable_cpu_pinning: bool | None = None
    properties: dict[str, str] = {}
    frontend_extensions: list[Literal["mediapipe"]] = Field(
        default=[], description="conversions for custom ops the frontends lack"
    )
    rewrite_batch_reshapes: bool = Field(
        default=False,
        description="let graphs whose Reshape nodes hard-code batch 1 batch; checked at load "
        "against batch-1 results",
    )
    static_batch_sizes: list[PositiveInt] = Field(
        default=[],
        description="batch sizes also compiled with static shapes, each its own compiled model "
        "(OpenVINO's CPU plugin runs small models faster on static shapes), in the background "
        "the first time a batch of that size comes; until then, and for other sizes, the "
        "dynamic-shape model runs it. Sizes above max_batch_size never come (the tuner may "
        "lower it), so they cost nothing",
    )

    @field_validator("static_batch_sizes")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"static_batch_sizes: expected distinct sizes, got {v}")
        return sorted(v)


class ModelConfig(_Strict):
    """Everything ``model.yaml`` may say about a model."""

    name: str | None = None
    backend: Backend
    max_batch_size: NonNegativeInt | None = Field(
        default=None, description="0 = the model takes no batch dimension; unset = from the model"
    )
    model_file: str | None = Field(
        default=None,
        description="the model file in each version folder (Triton's default_model_filename); "
        "unset: model.onnx for onnxruntime, the first of model.xml/.onnx/.tflite for openvino",
    )
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    dynamic_batching: DynamicBatching | None = None
    version_policy: VersionPolicy = VersionPolicy()
    device: Annotated[
        str, Field(pattern=r"^(CPU|GPU(\.\d+)?|AUTO(:.+)?|NPU|HETERO:.+|MULTI:.+)$")
    ] = "CPU"
    instances: PositiveInt | None = None
    threads: PositiveInt | None = None
    performance_hint: Literal["LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"] | None = None
    precision: Literal["f32", "bf16", "f16"] | None = None
    cache_dir: str | None = None
    warmup: WarmupConfig = WarmupConfig()
    onnxruntime: OnnxRuntimeOptions = OnnxRuntimeOptions()
    openvino: OpenVinoOptions = OpenVinoOptions()
    parameters: dict[str, str | int | float | bool] = {}
    preprocess: PreprocessSpec | None = None
    postprocess: PostprocessSpec | None = None

    @field_validator("model_file")
    @classmethod
    def _plain_file_name(cls, v: str | None) -> str | None:
        if v is not None and (v in ("", ".", "..") or "/" in v or "\\" in v):
            raise ValueError(f"expected a file name inside the version folder, got {v!r}")
        return v

    @field_validator("version_policy", mode="before")
    @classmethod
    def _version_policy(cls, v: Any) -> Any:
        return _parse_version_policy(v)

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return {"count": v}
        return v if v is not None else {"count": 0}

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.name is not None and not MODEL_NAME_RE.match(self.name):
            raise ValueError(f"name must match {MODEL_NAME_RE.pattern}, got {self.name!r}")
        for field in ("inputs", "outputs"):
            tensors = getattr(self, field) or []
            names = [t.name for t in tensors]
            if len(set(names)) != len(names):
                raise ValueError(f"{field} has duplicate names: {names}")
        labelled = [t.name for t in self.inputs or [] if t.label_filename is not None]
        if labelled:
            raise ValueError(f"label_filename is for outputs only, got it on inputs {labelled}")
        formatted = [t.name for t in self.outputs or [] if t.format is not None]
        if formatted:
            raise ValueError(f"format is for inputs only, got it on outputs {formatted}")
        if self.postprocess is not None and self.preprocess is None:
            raise ValueError("postprocess needs a preprocess block to know the input geometry")
        if self.preprocess is not None and self.preprocess.fuse and self.backend != "openvino":
            raise ValueError(f"preprocess.fuse needs backend openvino, got {self.backend!r}")
        db = self.dynamic_batching
        if db is not None and self.max_batch_size is not None and self.max_batch_size > 0:
            too_big = [b for b in db.preferred_batch_sizes if b > self.max_batch_size]
            if too_big:
                raise ValueError(
                    f"dynamic_batching.preferred_batch_sizes must be <= max_batch_size "
                    f"({self.max_batch_size}), got {too_big}"
                )
        return self

    @property
    def batching_enabled(self) -> bool:
        return bool(self.max_batch_size) and self.dynamic_batching is not None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, dict) else "{...}"
        lines.append(f"{source}: {loc}: {e['msg']} (got {shown})")
    return "; ".join(lines)


def parse_model_config(data: Any, source: str) -> ModelConfig:
    """Validate already-parsed YAML/JSON; ``ConfigError`` names the field on failure."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with at least 'backend', got {data!r}")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or ConfigError naming the file and what was wrong."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def load_model_config(path: Path) -> ModelConfig:
    """Read and validate ``<model>/model.yaml``."""
    config = parse_model_config(read_yaml(path), str(path))
    folder = path.parent.name
    if config.name is not None and config.name != folder:
        raise ConfigError(
            f"{path}: name must equal the folder name {folder!r}, got {config.name!r}"
        )
    return config


def config_file(folder: Path) -> Path:
    """The file a model folder's config comes from: ``model.yaml``, else Triton's
    ``config.pbtxt`` when only that exists (``model.yaml`` when neither does)."""
    ours = folder / CONFIG_FILE
    triton = folder / TRITON_CONFIG_FILE
    return triton if triton.is_file() and not ours.is_file() else ours


def read_folder_config(folder: Path) -> ModelConfig:
    """A model folder's config: ``model.yaml``, or Triton's ``config.pbtxt`` without one."""
    path = config_file(folder)
    if path.name == TRITON_CONFIG_FILE:
        # protobuf comes only with a Triton config: ~40 ms of every start-up otherwise
        from frameserve.serving.triton_config import read_triton_config

        return read_triton_config(path)
    if not path.is_file() and folder.is_dir():
        raise ConfigError(
            f"{folder}: expected {CONFIG_FILE} or {TRITON_CONFIG_FILE}, found neither"
        )
    return load_model_config(path)
