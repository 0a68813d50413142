"""The pipeline names a job or stream may ask for (``GET /v1/pipelines``).

The same three places ``load_named_pipeline`` resolves a name from, in its order: the
built-in pipelines, the repository's pipeline folders (``pipeline.yaml``) and its model folders
that declare how frames become tensors (a ``preprocess`` block, or a Python-script model, which
takes frames itself). A name that is listed twice resolves to the first, so it is listed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from frameserve.errors import ConfigError
from frameserve.serving.config import MODEL_NAME_RE, read_yaml
from frameserve.serving.pipeline import PIPELINE_FILE
from frameserve.video.config import builtin_pipelines, parse_video_pipeline

Source = Literal["built-in", "repository", "model"]


@dataclass(frozen=True, slots=True)
class PipelineName:
    """One name a job or stream may use, where it comes from and the models it runs."""

    name: str
    source: Source
    description: str
    models: tuple[str, ...]
    error: str | None = None  # a repository pipeline that does not parse: why

    def to_json(self, ready: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "models": list(self.models),
            "ready": ready and self.error is None,
            "error": self.error,
        }


def _builtins() -> list[PipelineName]:
    out = []
    for name, text in sorted(builtin_pipelines().items()):
        config = parse_video_pipeline(yaml.safe_load(text), f"built-in {name}")
        out.append(PipelineName(name, "built-in", config.description, tuple(config.models)))
    return out


def _repository_pipeline(folder: Path) -> PipelineName:
    try:
        config = parse_video_pipeline(read_yaml(folder / PIPELINE_FILE), str(folder))
    except ConfigError as err:
        return PipelineName(folder.name, "repository", "", (), error=err.message)
    return PipelineName(folder.name, "repository", config.description, tuple(config.models))


def _model(folder: Path) -> PipelineName | None:
    """A model folder usable as a pipeline, or None (no frame processing declared)."""
    try:
        data = read_yaml(folder / "model.yaml")
    except ConfigError:
        return None  # the repository reports it; it is no pipeline either way
    if not isinstance(data, dict):
        return None
    if "preprocess" not in data and data.get("backend") != "python":
        return None
    description = data.get("description")
    text = description if isinstance(description, str) else ""
    return PipelineName(folder.name, "model", text, (folder.name,))


def named_pipelines(repository: Path) -> list[PipelineName]:
    """Every name ``load_named_pipeline`` accepts from the built-ins and ``repository``."""
    found = _builtins()
    taken = {p.name for p in found}
    folders = sorted(repository.iterdir()) if repository.is_dir() else []
    for folder in folders:
        if folder.name in taken or not folder.is_dir() or not MODEL_NAME_RE.match(folder.name):
            continue
        if (folder / PIPELINE_FILE).is_file():
            found.append(_repository_pipeline(folder))
        elif (folder / "model.yaml").is_file():
            model = _model(folder)
            if model is not None:
                found.append(model)
    return found
