"""``pipeline.yaml`` and the processing blocks of ``model.yaml``: every error names its file and
field. The valid examples are the zoo's own files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from frameserve.errors import ConfigError
from frameserve.processing.spec import CtcSpec, FaceSsdSpec, TextDetectionSpec
from frameserve.serving.config import load_model_config, parse_model_config
from frameserve.serving.pipeline import PipelineConfig, RotateSpec, load_pipeline_config


def write(tmp_path: Path, content: Any) -> Path:
    """``content`` as ``ocr/pipeline.yaml`` (a string is written as is)."""
    path = tmp_path / "ocr" / "pipeline.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def pipeline_error(tmp_path: Path, content: Any) -> str:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# --------------------------------------------------------------------------- pipeline.yaml


def test_zoo_ocr_pipeline_loads(zoo_repository: Path) -> None:
    config = load_pipeline_config(zoo_repository / "ocr" / "pipeline.yaml")
    assert isinstance(config, PipelineConfig)
    assert config.models == ["text-det", "text-cls", "text-rec"]
    assert config.steps[1].crop == {} and config.steps[1].model is None
    assert config.steps[2].rotate == RotateSpec(label="180", min_score=0.9)
    assert config.output.texts is not None and config.output.texts.min_score == 0.5
    for name in config.models:  # every model it names is in the zoo, with a decoder
        model = load_model_config(zoo_repository / name / "model.yaml")
        assert model.preprocess is not None and model.postprocess is not None


def test_minimal_pipeline_is_one_model_step(tmp_path: Path) -> None:
    config = load_pipeline_config(write(tmp_path, {"steps": [{"model": "faces"}]}))
    assert config.models == ["faces"] and config.output.texts is None


OCR_STEPS: list[dict[str, Any]] = [{"model": "text-det"}, {"crop": {}}, {"model": "text-rec"}]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"steps": OCR_STEPS, "stages": []}, r"stages: Extra inputs are not permitted"),
        (
            {"steps": [{"model": "a", "crop": {}}]},
            r"steps\.0: .*a step is either \{model: NAME\} or \{crop: \{\}\}",
        ),
        ({"steps": [{"model": "a", "batch": 4}]}, r"steps\.0\.batch: Extra inputs"),
        ({"steps": [{"crop": {}}, {"model": "a"}]}, r"steps\[0\] must run a model on the image"),
        (
            {"steps": [*OCR_STEPS[:2], {"crop": {}}, {"model": "b"}]},
            r"at most one crop step, got steps \[1, 2\]",
        ),
        (
            {"steps": [OCR_STEPS[0], OCR_STEPS[2], {"crop": {}}]},
            r"the crop step must come second, got steps\[2\]",
        ),
        (
            {"steps": [OCR_STEPS[0], OCR_STEPS[2]]},
            r"steps after the first run on crops: add a \{crop: \{\}\} step",
        ),
        (
            {"steps": [OCR_STEPS[0], {"crop": {}, "rotate": {"label": "180"}}]},
            r"steps\.1: .*rotate belongs to a model step",
        ),
        (
            {"steps": [OCR_STEPS[0], {"crop": {"pad": 2}}]},
            r"steps\.1: .*crop takes no options yet, got \['pad'\]",
        ),
        (
            {"steps": [{"model": "../text-det"}]},
            r"steps\.0: .*model must match .*, got '\.\./text-det'",
        ),
        ({"steps": [{"model": ""}]}, r"steps\.0: .*model must match"),
        ({"steps": []}, r"steps: List should have at least 1 item"),
        ({"description": "no steps"}, r"steps: Field required"),
        (
            {
                "steps": [
                    OCR_STEPS[0],
                    {"crop": {}},
                    {"model": "c", "rotate": {"label": "180", "min_score": 2}},
                ]
            },
            r"steps\.2\.rotate\.min_score: Input should be less than or equal to 1 \(got 2\)",
        ),
        (
            {"steps": OCR_STEPS, "output": {"texts": {"min_score": -1}}},
            r"output\.texts\.min_score: .*greater than or equal to 0 \(got -1\)",
        ),
    ],
)
def test_pipeline_errors_name_the_field(tmp_path: Path, content: Any, expected: str) -> None:
    message = pipeline_error(tmp_path, content)
    assert re.search(expected, message), message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("- model: text-det\n", "expected a mapping with 'steps', got [{'model': 'text-det'}]"),
        ("", "expected a mapping with 'steps', got None"),
        ("steps: [model: text-det\n", "not valid YAML"),
    ],
)
def test_pipeline_file_that_is_not_a_mapping(tmp_path: Path, content: str, expected: str) -> None:
    assert expected in pipeline_error(tmp_path, content)


def test_missing_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "ocr" / "pipeline.yaml"
    with pytest.raises(ConfigError, match=f"{path}: cannot read"):
        load_pipeline_config(path)


# --------------------------------------------------------------------------- model.yaml blocks


@pytest.mark.parametrize(
    "name", ["faces", "faces-near", "person-mask", "text-det", "text-cls", "text-rec"]
)
def test_zoo_model_configs_load(zoo_repository: Path, name: str) -> None:
    config = load_model_config(zoo_repository / name / "model.yaml")
    assert config.preprocess is not None and config.postprocess is not None


def test_zoo_processing_blocks_are_parsed_into_specs(zoo_repository: Path) -> None:
    faces = load_model_config(zoo_repository / "faces" / "model.yaml")
    assert isinstance(faces.postprocess, FaceSsdSpec)
    assert faces.preprocess is not None and faces.preprocess.resize.sampler == "warp"
    det = load_model_config(zoo_repository / "text-det" / "model.yaml")
    assert isinstance(det.postprocess, TextDetectionSpec)
    assert det.preprocess is not None and det.preprocess.resize.mode == "limit_side"
    rec = load_model_config(zoo_repository / "text-rec" / "model.yaml")
    assert isinstance(rec.postprocess, CtcSpec) and rec.postprocess.dictionary == "dict.txt"
    assert rec.preprocess is not None and rec.preprocess.resize.pad_in == "tensor"


PREPROCESS: dict[str, Any] = {"resize": {"mode": "letterbox", "size": [192, 192]}}
POSTPROCESS: dict[str, Any] = {"task": "segmentation", "output": "mask"}


def model_error(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_model_config(config, "m/model.yaml")
    message = str(info.value)
    assert message.startswith("m/model.yaml: "), message
    return message


def test_postprocess_needs_preprocess() -> None:
    message = model_error({"backend": "openvino", "postprocess": POSTPROCESS})
    assert "postprocess needs a preprocess block" in message
    config = parse_model_config(
        {"backend": "openvino", "preprocess": PREPROCESS, "postprocess": POSTPROCESS}, "m"
    )
    assert config.postprocess is not None


def test_fuse_needs_openvino() -> None:
    message = model_error({"backend": "onnxruntime", "preprocess": {**PREPROCESS, "fuse": True}})
    assert "preprocess.fuse needs backend openvino, got 'onnxruntime'" in message
    parse_model_config({"backend": "openvino", "preprocess": {**PREPROCESS, "fuse": True}}, "m")


def test_fuse_cannot_pad_in_the_tensor() -> None:
    resize = {"mode": "fixed_height", "height": 48, "width": 192, "pad_in": "tensor"}
    message = model_error({"backend": "openvino", "preprocess": {"resize": resize, "fuse": True}})
    assert "m/model.yaml: preprocess: " in message
    assert "fuse cannot pad in the tensor (resize.pad_in: tensor)" in message


def test_warp_needs_a_fixed_size_mode() -> None:
    resize = {"mode": "limit_side", "limit": 736, "sampler": "warp"}
    message = model_error({"backend": "openvino", "preprocess": {"resize": resize}})
    assert "preprocess.resize: " in message
    assert "sampler 'warp' works with stretch, letterbox and pad, not 'limit_side'" in message


@pytest.mark.parametrize(
    ("preprocess", "expected"),
    [
        ({"resize": {"mode": "letterbox"}}, "resize mode 'letterbox' needs ['size']"),
        ({"resize": {"mode": "fixed_height", "height": 48}}, "needs ['width']"),
        (
            {"resize": {"mode": "stretch", "size": [4, 4], "sampler": "warp", "pad_in": "tensor"}},
            "pad_in 'tensor' works with sampler 'resize' only",
        ),
        ({"resize": {"mode": "zoom", "size": [4, 4]}}, "preprocess.resize.mode: Input should be"),
        ({**PREPROCESS, "std": [1, 0, 1]}, "preprocess.std.1: Input should be greater than 0"),
        ({**PREPROCESS, "layout": "CHW"}, "preprocess.layout: Input should be 'NHWC' or 'NCHW'"),
        ({**PREPROCESS, "mean": 0.5}, "preprocess.mean: Input should be a valid tuple"),
    ],
)
def test_preprocess_errors_name_the_field(preprocess: dict[str, Any], expected: str) -> None:
    assert expected in model_error({"backend": "openvino", "preprocess": preprocess})


@pytest.mark.parametrize(
    ("postprocess", "expected"),
    [
        ({"task": "sam", "output": "x"}, "postprocess: Input tag 'sam' found using 'task'"),
        ({"task": "yolo", "output": "x"}, "postprocess.yolo.format: Field required"),
        (
            {"task": "yolo", "format": "v5", "output": "x", "transposed": True},
            "transposed is for format v8, got format v5",
        ),
        ({"task": "detr", "boxes": "b"}, "postprocess.detr.logits: Field required"),
        ({"task": "ctc", "output": "x"}, "postprocess.ctc.dictionary: Field required"),
        ({**POSTPROCESS, "threshold": 1.5}, "postprocess.segmentation.threshold: Input should"),
        (
            {"task": "classes", "output": "x", "labels": ["a"], "top_k": 0},
            "postprocess.classes.top_k: Input should be greater than 0",
        ),
    ],
)
def test_postprocess_errors_name_the_field(postprocess: dict[str, Any], expected: str) -> None:
    config = {"backend": "openvino", "preprocess": PREPROCESS, "postprocess": postprocess}
    assert expected in model_error(config)
