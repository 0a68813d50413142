"""Video pipelines: a model pipeline (``steps``) plus what video adds.

A video pipeline is the ``pipeline.yaml`` of a model pipeline with more keys: ``sample`` (which
frames to run), ``decode`` (decoder shortcuts), ``track`` (track ids across frames),
``overlay`` (how ``--video-out`` draws), ``mask_track`` (the polygons of ``--mask-track``),
``video_out`` (encoder settings) and ``summary`` (per-video aggregates). A
transformation pipeline says ``interpolate`` instead of ``steps``: a model makes a new frame
from two neighbours (frame-rate up-conversion). ``filters`` (an FFmpeg filter chain,
``video.filters``) runs on the decoded frames before the steps or the interpolation; a
pipeline with ``filters`` alone is a transformation too (filter, then encode).

``--pipeline`` takes a file, a built-in name (``video/pipelines/*.yaml`` in the package), a
pipeline folder of the repository or a model of the repository with declared processing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from frameserve.errors import ConfigError, InvalidInput
from frameserve.serving.config import MODEL_NAME_RE, format_validation_error, read_yaml
from frameserve.serving.pipeline import PIPELINE_FILE, OutputSpec, PipelineConfig, StepSpec
from frameserve.video.defects import DefectsSpec, check_filters
from frameserve.video.filters import FiltersField
from frameserve.video.frames import check_sample
from frameserve.video.summary_spec import AUTO, SummarySpec

BUILTIN_PACKAGE = "frameserve.video.pipelines"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackSpec(_Strict):
    """ByteTrack settings (``video.track``); times in seconds so sampling doesn't matter."""

    lost_seconds: Annotated[float, Field(gt=0)] = 1.0
    min_iou: Annotated[float, Field(gt=0, lt=1)] = 0.1


class OverlaySpec(_Strict):
    mask: Literal["tint", "blur", "none"] = "tint"
    keypoints: bool = True
    labels: bool = True


class MaskTrackSpec(_Strict):
    """Polygons simplified to ``epsilon`` pixels, blobs under ``min_area`` px² dropped."""

    epsilon: Annotated[float, Field(ge=0)] = 2.0
    min_area: Annotated[float, Field(ge=0)] = 64.0
    max_points: Annotated[int, Field(ge=3)] | None = 256


class VideoOutSpec(_Strict):
    codec: Literal["libx264"] = "libx264"
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = (
        "veryfast"
    )
    crf: Annotated[int, Field(ge=0, le=51)] = 20


class DecodeSpec(_Strict):
    """Decoder shortcuts that trade picture quality a model may not notice, for speed.

    ``skip_loop_filter``: which frames H.264/HEVC decode without the in-loop deblocking filter
    (FFmpeg's discard levels: ``all`` frames, ``nokey`` (all but keyframes), ``nointra``,
    ``bidir`` (B-frames), ``noref`` (frames no other refers to); ``default`` keeps it). The
    picture is blockier, and errors carry until the next keyframe: a pipeline uses it only
    where its results stay within the consistency tolerances."""

    skip_loop_filter: Literal["default", "nonref", "bidir", "nonintra", "nonkey", "all"] = "default"

    def codec_options(self) -> dict[str, str]:
        """The FFmpeg decoder options this block sets (none for the defaults)."""
        if self.skip_loop_filter == "default":
            return {}
        return {"skip_loop_filter": self.skip_loop_filter}


class InterpolateSpec(_Strict):
    """A model with inputs ``previous`` and ``next`` (RGB) and output ``middle``."""

    model: str = "fruc"

    @field_validator("model")
    @classmethod
    def _name(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError(f"model must match {MODEL_NAME_RE.pattern}, got {v!r}")
        return v


class VideoPipelineConfig(_Strict):
    """Everything a video pipeline file may say."""

    description: str = ""
    steps: list[StepSpec] | None = None
    output: OutputSpec = OutputSpec()
    interpolate: InterpolateSpec | None = None
    sample: str = "all"
    decode: DecodeSpec = DecodeSpec()
    track: TrackSpec | None = None
    overlay: OverlaySpec = OverlaySpec()
    mask_track: MaskTrackSpec = MaskTrackSpec()
    video_out: VideoOutSpec = VideoOutSpec()
    # per-video aggregates (video.summary_spec); absent: by result kind; false: none
    summary: SummarySpec | None = None
    defects: DefectsSpec | None = None  # flag black, frozen, blocky, blurry frames
    filters: FiltersField | None = None

    @field_validator("sample")
    @classmethod
    def _sample(cls, v: str) -> str:
        check_sample(v)
        return v

    @model_validator(mode="after")
    def _kind(self) -> VideoPipelineConfig:
        if self.steps is not None and self.interpolate is not None:
            raise ValueError("a video pipeline has either steps (analysis) or interpolate")
        if self.steps is None and self.interpolate is None and self.filters is None:
            raise ValueError("a video pipeline has steps (analysis), interpolate or filters")
        if self.steps is not None:
            self.model_pipeline()  # the steps obey the model-pipeline rules
        if self.transforms and self.sample != "all":
            doing = "interpolate" if self.interpolate is not None else "filters without steps"
            raise ValueError(f"{doing} needs every frame (sample: all), got {self.sample}")
        if self.transforms and self.summary is not None and self.summary.enabled:
            raise ValueError(
                "summary: a transformation pipeline (interpolate, filters) has no summary"
            )
        if self.defects is not None:
            if self.steps is None:
                raise ValueError("defects: analysis pipelines only (steps), not transformations")
            check_filters()
        return self

    def summary_spec(self) -> SummarySpec | None:
        """The aggregators of an analysis pipeline (None: no summary is written)."""
        if self.transforms or (self.summary is not None and not self.summary.enabled):
            return None
        return self.summary or AUTO

    @property
    def transforms(self) -> bool:
        """True for a transformation (video in, video out) rather than analysis."""
        return self.steps is None

    @property
    def interpolates(self) -> bool:
        """True when the pipeline makes new frames (twice the frame rate)."""
        return self.interpolate is not None

    def model_pipeline(self) -> PipelineConfig:
        assert self.steps is not None
        return PipelineConfig(description=self.description, steps=self.steps, output=self.output)

    @property
    def models(self) -> list[str]:
        if self.interpolate is not None:
            return [self.interpolate.model]
        if self.steps is None:
            return []  # filters only
        return self.model_pipeline().models


def builtin_pipelines() -> dict[str, str]:
    """Built-in pipeline name -> YAML text."""
    root = resources.files(BUILTIN_PACKAGE)
    return {
        p.name.removesuffix(".yaml"): p.read_text(encoding="utf-8")
        for p in root.iterdir()
        if p.name.endswith(".yaml")
    }


def parse_video_pipeline(data: object, source: str) -> VideoPipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping with 'steps', 'interpolate' or 'filters', got {data!r}"
        )
    try:
        return VideoPipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_video_pipeline(spec: str, repository: Path) -> tuple[str, VideoPipelineConfig]:
    """Resolve ``--pipeline``: a YAML file, a built-in, a repository pipeline or model."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"--pipeline: no such file {spec}")
        return path.stem, parse_video_pipeline(read_yaml(path), str(path))
    return load_named_pipeline(spec, repository, "--pipeline")


def load_named_pipeline(
    name: str, repository: Path, where: str = "pipeline"
) -> tuple[str, VideoPipelineConfig]:
    """A pipeline by name only (the server's jobs and streams: clients name no files): a
    built-in, a repository pipeline folder or a repository model with declared processing."""
    if not isinstance(name, str):
        raise InvalidInput(f"{where}: expected a pipeline name, got {name!r}")
    spec = name
    builtins = builtin_pipelines()
    if spec in builtins:
        return spec, parse_video_pipeline(yaml.safe_load(builtins[spec]), f"built-in {spec}")
    folder = repository / spec
    if MODEL_NAME_RE.match(spec) and (folder / PIPELINE_FILE).is_file():
        return spec, parse_video_pipeline(read_yaml(folder / PIPELINE_FILE), str(folder))
    if MODEL_NAME_RE.match(spec) and (folder / "model.yaml").is_file():
        return spec, VideoPipelineConfig(steps=[StepSpec(model=spec)])
    known = sorted(builtins)
    files = "a YAML file, " if where == "--pipeline" else ""
    raise InvalidInput(
        f"{where}: expected {files}a built-in pipeline ({', '.join(known)}) or a "
        f"pipeline or model folder in {repository}, got {spec!r}"
    )
