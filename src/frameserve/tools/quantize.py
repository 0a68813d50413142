"""``frameserve quantize``: an INT8 version of a served model, kept only if it agrees enough.

1. The source version is read as the OpenVINO backend reads it and quantized by NNCF with
   calibration frames run through the model's declared pre-processing.
2. The INT8 IR is saved in a hidden folder inside the model folder (``.quantize-*``: the
   repository ignores names that are not version numbers).
3. Both versions are loaded by a ``LocalServer`` over a temporary repository whose model folder
   links the source version and the new one (same model.yaml, ``version_policy`` naming both),
   and the held-out frames go through the served path (``Predictor.run_model``) of each; the
   task's metric (``tools.accuracy``) says how far the INT8 results drift from the source's.
4. Within ``max_drop`` the hidden folder is renamed to the new version number (one atomic
   step); otherwise it is removed and nothing is left behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from frameserve.backends.openvino import find_model_file
from frameserve.backends.openvino_quantize import (
    ModelInput,
    QuantizeSettings,
    quantize_model,
    quantized_ops,
    read_for_quantization,
    save_ir,
)
from frameserve.errors import InvalidInput, ModelLoadError, NotFound, NotSupported
from frameserve.processing.results import Result
from frameserve.processing.tasks import DecodeOptions, ModelProcessing
from frameserve.serving.config import ModelConfig, load_model_config, read_yaml
from frameserve.serving.local import LocalServer
from frameserve.serving.model_metadata import onnx_metadata
from frameserve.serving.pipeline import PIPELINE_FILE
from frameserve.serving.predict import Timings
from frameserve.serving.repository import CONFIG_FILE, check_model_name, version_numbers
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.tools.accuracy import METRICS, agreement
from frameserve.tools.calibration import FrameSource, Split, open_calibration, split_frames

STAGING_PREFIX = ".quantize-"
COMPARE_CHUNK = 16  # held-out frames in flight per version


@dataclass(frozen=True)
class QuantizeOptions:
    """What ``frameserve quantize`` was asked to do; checked on creation."""

    repository: Path
    model: str
    calibration: Path
    version: int | None = None  # None: the newest version the model's policy serves
    subset: int = 300  # calibration frames (NNCF's default)
    max_drop: float = 0.01  # largest drop of the task's metric, 0..1
    out_version: int | None = None  # None: the next free version number
    settings: QuantizeSettings = field(default_factory=QuantizeSettings)

    def __post_init__(self) -> None:
        if self.subset < 1:
            raise InvalidInput(
                f"--subset: expected at least 1 calibration frame, got {self.subset}"
            )
        if not 0.0 <= self.max_drop <= 1.0:
            raise InvalidInput(f"--max-drop: expected a number within 0..1, got {self.max_drop}")
        for flag, v in (("--version", self.version), ("--out-version", self.out_version)):
            if v is not None and v < 1:
                raise InvalidInput(f"{flag}: expected a positive version number, got {v}")


@dataclass(frozen=True)
class QuantizeReport:
    """The outcome: frames used, the metric for both versions, the gate, sizes and times."""

    model: str
    source_version: int
    out_version: int
    calibration: str
    source_frames: int  # frames (or images) the calibration source has
    calibration_frames: int
    held_out_frames: int
    metric: str
    source_score: float  # the source against itself: 1.0 by definition
    int8_score: float
    drop: float
    max_drop: float
    passed: bool
    written: bool
    source_bytes: int
    int8_bytes: int
    quantized_ops: dict[str, int]
    served: bool  # whether the model's version_policy serves the new version
    version_policy: str
    quantize_s: float
    compare_s: float
    total_s: float

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (``--json``)."""
        return asdict(self)

    def describe(self) -> str:
        """The report as lines for a terminal."""
        verdict = "PASS" if self.passed else "FAIL"
        where = f"written as version {self.out_version}" if self.written else "nothing written"
        serve = "serves" if self.served else "does NOT serve"
        if not self.written:
            serve = "would serve" if self.served else "would NOT serve"
        ops = ", ".join(f"{v} {k}" for k, v in self.quantized_ops.items()) or "none"
        return "\n".join(
            [
                f"model {self.model}: version {self.source_version} -> INT8 "
                f"version {self.out_version}",
                f"calibration: {self.calibration_frames} frames, held out: "
                f"{self.held_out_frames} frames, of {self.source_frames} in {self.calibration}",
                f"metric: {self.metric}: source {self.source_score:.4f}, "
                f"INT8 {self.int8_score:.4f}",
                f"drop: {self.drop:.4f}, limit {self.max_drop:.4f}: {verdict}, {where}",
                f"size: {_mb(self.source_bytes)} -> {_mb(self.int8_bytes)} ({ops})",
                f"time: quantize {self.quantize_s:.1f} s, compare {self.compare_s:.1f} s, "
                f"total {self.total_s:.1f} s",
                f"serving: version_policy {self.version_policy} {serve} version {self.out_version}",
            ]
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@dataclass(frozen=True)
class ModelTarget:
    """The model folder, its config and the versions involved."""

    name: str
    folder: Path
    config: ModelConfig
    source_version: int
    out_version: int
    available: tuple[int, ...]


def resolve_target(options: QuantizeOptions) -> ModelTarget:
    """Find the model and the versions; refuse what cannot be quantized, saying why."""
    root = options.repository
    if not root.is_dir():
        raise NotFound(f"--repository {root}: expected a model repository folder, got none")
    name = check_model_name(options.model)
    folder = root / name
    if (folder / PIPELINE_FILE).is_file():
        raise NotSupported(f"--model {name}: is a model pipeline; quantize its models one by one")
    if not (folder / CONFIG_FILE).is_file():
        models = sorted(p.parent.name for p in root.glob(f"*/{CONFIG_FILE}"))
        raise NotFound(f"--model: expected one of {models} in {root}, got {name!r}")
    config = load_model_config(folder / CONFIG_FILE)
    if config.backend != "openvino":
        raise NotSupported(
            f"{folder / CONFIG_FILE}: backend: quantize needs backend openvino, got "
            f"{config.backend}; convert it first with frameserve convert"
        )
    if config.preprocess is None or config.postprocess is None:
        missing = "preprocess" if config.preprocess is None else "postprocess"
        raise NotSupported(
            f"{folder / CONFIG_FILE}: {missing}: quantize needs the declared pre-processing "
            "(to calibrate from images) and postprocess task (to compare results), got none"
        )
    if config.postprocess.task not in METRICS:
        raise NotSupported(
            f"{folder / CONFIG_FILE}: postprocess.task: expected one of {sorted(METRICS)}, "
            f"got {config.postprocess.task}"
        )
    available = version_numbers(folder)
    served = config.version_policy.select(available)
    if options.version is not None:
        if options.version not in available:
            raise NotFound(
                f"--version: expected one of {available} of {name}, got {options.version}"
            )
        source = options.version
    elif served:
        source = served[-1]
    else:
        raise NotFound(f"{folder}: no version folder the version_policy serves (found {available})")
    out = options.out_version or (max(available) + 1)
    if (folder / str(out)).exists():
        raise InvalidInput(f"--out-version: {folder / str(out)} exists; expected a free number")
    return ModelTarget(name, folder, config, source, out, tuple(available))


class CalibrationSamples:
    """Model inputs for NNCF: the calibration frames through the declared pre-processing.

    Re-iterable: each pass decodes the frames again.
    """

    def __init__(
        self,
        source: FrameSource,
        indices: Sequence[int],
        processing: ModelProcessing,
        inp: ModelInput,
    ) -> None:
        self._source = source
        self._indices = indices
        self._processing = processing
        self._input = inp

    def __len__(self) -> int:
        return len(self._indices)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for frame in self._source.frames(self._indices):
            tensor, _ = self._processing.preprocess([frame])
            yield {self._input.name: tensor if self._input.batched else tensor[0]}


def _batch_dim(config: ModelConfig) -> bool | None:
    """Whether the backend gives the model a batch dimension (as ``serving.model`` decides)."""
    return None if config.max_batch_size is None else config.max_batch_size > 0


def quantize(options: QuantizeOptions) -> QuantizeReport:
    """Quantize, compare on held-out frames, and write the new version if the gate passes."""
    started = time.perf_counter()
    target = resolve_target(options)
    source = open_calibration(options.calibration)
    split = split_frames(source.count, options.subset)
    config = target.config
    assert config.preprocess is not None and config.postprocess is not None
    src_folder = target.folder / str(target.source_version)
    processing = ModelProcessing(
        config.preprocess,
        config.postprocess,
        target.folder,
        metadata=lambda: onnx_metadata(src_folder, config.model_file),
    )
    model, inp = read_for_quantization(src_folder, config, _batch_dim(config))
    samples = CalibrationSamples(source, split.calibration, processing, inp)
    quantized = quantize_model(model, samples, len(samples), options.settings)
    quantize_s = time.perf_counter() - started
    checked = _check_and_write(target, quantized, source, split, options.max_drop)
    policy = config.version_policy
    return QuantizeReport(
        model=target.name,
        source_version=target.source_version,
        out_version=target.out_version,
        calibration=str(options.calibration),
        source_frames=source.count,
        calibration_frames=len(split.calibration),
        held_out_frames=len(split.held_out),
        metric=METRICS[config.postprocess.task],
        source_score=1.0,
        int8_score=checked.score,
        drop=checked.drop,
        max_drop=options.max_drop,
        passed=checked.passed,
        written=checked.passed,
        source_bytes=_model_bytes(find_model_file(src_folder)),
        int8_bytes=checked.int8_bytes,
        quantized_ops=checked.ops,
        served=target.out_version in policy.select([*target.available, target.out_version]),
        version_policy=config.version_policy.describe(),
        quantize_s=quantize_s,
        compare_s=checked.compare_s,
        total_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Checked:
    score: float
    drop: float
    passed: bool
    int8_bytes: int
    ops: dict[str, int]
    compare_s: float


def _check_and_write(
    target: ModelTarget, quantized: Any, source: FrameSource, split: Split, max_drop: float
) -> _Checked:
    """Save the INT8 IR in a hidden folder, compare, and rename it into place if it passes."""
    src_folder = target.folder / str(target.source_version)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.folder))
    except OSError as err:
        raise InvalidInput(
            f"--repository: expected a model folder this user can write to, "
            f"got {target.folder} ({err.strerror})"
        ) from None
    try:
        files = save_ir(quantized, staging)
        os.chmod(staging, stat.S_IMODE(src_folder.stat().st_mode))
        started = time.perf_counter()
        score = compare_versions(target, staging, source, split)
        drop = max(0.0, 1.0 - score)
        checked = _Checked(
            score=score,
            drop=drop,
            passed=drop <= max_drop + 1e-12,
            int8_bytes=sum(f.stat().st_size for f in files),
            ops=quantized_ops(files[0]),
            compare_s=time.perf_counter() - started,
        )
        if checked.passed:
            final = target.folder / str(target.out_version)
            if final.exists():
                raise InvalidInput(f"--out-version: {final} appeared meanwhile; nothing written")
            staging.rename(final)
        return checked
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _model_bytes(model_file: Path) -> int:
    size = model_file.stat().st_size
    weights = model_file.with_suffix(".bin")
    if model_file.suffix == ".xml" and weights.is_file():
        size += weights.stat().st_size
    return size


def _comparison_repository(root: Path, target: ModelTarget, staging: Path) -> Path:
    """``root/<model>``: the model's files linked, both versions linked, both served."""
    folder = root / target.name
    folder.mkdir()
    versions = {str(target.source_version), str(target.out_version)}
    for entry in target.folder.iterdir():
        if entry.name in (CONFIG_FILE, *versions) or entry.name.startswith(STAGING_PREFIX):
            continue
        (folder / entry.name).symlink_to(entry.resolve())
    (folder / str(target.source_version)).symlink_to(
        (target.folder / str(target.source_version)).resolve()
    )
    (folder / str(target.out_version)).symlink_to(staging.resolve())
    raw = read_yaml(target.folder / CONFIG_FILE)
    raw["version_policy"] = {"specific": sorted(int(v) for v in versions)}
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return root


def compare_versions(
    target: ModelTarget, staging: Path, source: FrameSource, split: Split
) -> float:
    """Mean agreement of the INT8 version with the source on the held-out frames, served."""
    with tempfile.TemporaryDirectory(prefix="frameserve-quantize-") as tmp:
        settings = ServerSettings(
            repository=_comparison_repository(Path(tmp), target, staging),
            model_control_mode="explicit",
            load_models=(target.name,),
        )
        versions = (target.source_version, target.out_version)
        scores: list[float] = []
        with LocalServer(settings) as local:
            loaded = local.server.repository.versions_of(target.name)
            if loaded != sorted(versions):
                raise ModelLoadError(
                    f"{target.name}: expected versions {list(versions)} to load, got {loaded}"
                )
            frames = source.frames(split.held_out)
            while chunk := list(islice(frames, COMPARE_CHUNK)):
                pairs = local.call(_run_both(local.server, target.name, versions, chunk))
                scores.extend(agreement(a, b) for a, b in pairs)
    if not scores:
        raise InvalidInput(f"--calibration {source.path}: no held-out frame could be read")
    return float(np.mean(scores))


async def _run_both(
    server: InferenceServer, name: str, versions: tuple[int, int], frames: list[np.ndarray]
) -> list[tuple[Result, Result]]:
    """Each frame through both versions' served path, one request a frame, all in flight."""
    mv_source, mv_int8 = (server.repository.get(name, str(v)) for v in versions)
    predictor, options = server.predictor, DecodeOptions()

    async def one(mv: Any, frame: np.ndarray) -> Result:
        return (await predictor.run_model(mv, [frame], options, Timings()))[0]

    results = await asyncio.gather(*(one(mv, f) for mv in (mv_source, mv_int8) for f in frames))
    n = len(frames)
    return list(zip(results[:n], results[n:], strict=True))
