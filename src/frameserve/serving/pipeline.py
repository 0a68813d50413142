"""Model pipelines: models and processing steps chained like a Triton ensemble.

A pipeline lives in ``<repository>/<name>/pipeline.yaml``. The first step runs a model on the
whole image and yields regions (text quadrilaterals or detection boxes); ``crop`` cuts each
region out upright; later model steps run on the crops, batched, and either turn them
(``rotate``) or label them (text, classes). Video pipelines reuse the same steps per frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from frameserve.errors import ConfigError
from frameserve.serving.config import MODEL_NAME_RE, format_validation_error, read_yaml

PIPELINE_FILE = "pipeline.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RotateSpec(_Strict):
    """Turn a crop by 180 degrees when the step's top class is ``label`` with ``min_score``."""

    label: str
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9


class StepSpec(_Strict):
    """One step: ``{model: NAME}`` (optionally with ``rotate``) or ``{crop: {}}``."""

    model: str | None = None
    crop: dict[str, Any] | None = None
    rotate: RotateSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        if (self.model is None) == (self.crop is None):
            raise ValueError("a step is either {model: NAME} or {crop: {}}")
        if self.crop:
            raise ValueError(f"crop takes no options yet, got {sorted(self.crop)}")
        if self.model is not None and not MODEL_NAME_RE.match(self.model):
            raise ValueError(f"model must match {MODEL_NAME_RE.pattern}, got {self.model!r}")
        if self.rotate is not None and self.model is None:
            raise ValueError("rotate belongs to a model step (a classifier)")
        return self


class TextsOutput(_Strict):
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    drop_empty: bool = True


class OutputSpec(_Strict):
    texts: TextsOutput | None = None


class PipelineConfig(_Strict):
    """Everything ``pipeline.yaml`` may say."""

    description: str = ""
    steps: Annotated[list[StepSpec], Field(min_length=1)]
    output: OutputSpec = OutputSpec()

    @model_validator(mode="after")
    def _shape(self) -> PipelineConfig:
        if self.steps[0].model is None:
            raise ValueError("steps[0] must run a model on the image")
        crops = [i for i, s in enumerate(self.steps) if s.crop is not None]
        if len(crops) > 1:
            raise ValueError(f"at most one crop step, got steps {crops}")
        if not crops and len(self.steps) > 1:
            raise ValueError("steps after the first run on crops: add a {crop: {}} step")
        if crops and crops[0] != 1:
            raise ValueError(f"the crop step must come second, got steps[{crops[0]}]")
        return self

    @property
    def models(self) -> list[str]:
        return [s.model for s in self.steps if s.model is not None]


def load_pipeline_config(path: Path) -> PipelineConfig:
    """Read and validate ``<name>/pipeline.yaml``."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'steps', got {data!r}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
